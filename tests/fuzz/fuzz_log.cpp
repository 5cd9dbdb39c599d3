// Fuzz target: the broadcast log (bus::shm::log, what busd sets up for a fan-out) as both ends
// see it when the other processes are hostile. An honest log is formatted and written, then the
// input rewrites bytes of it (header, shared line, reader lines, ring) between operations of
// readers and the writer.
// Properties: check_log never accepts a geometry outside the region; every record a reader
// returns lies inside the region; the writer never writes outside it and never blocks for ever
// on readers that lie about their positions (it cuts them out); nothing crashes.
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>

#include "fuzz_check.hpp"
#include "shm/log.hpp"

using namespace bus;
using namespace bus::shm;
using namespace bus::shm::log;

namespace {

constexpr std::align_val_t kAlign{kFalseSharingRange};

struct Input {
  const uint8_t* p;
  size_t n;
  size_t at = 0;
  uint8_t byte() { return at < n ? p[at++] : 0; }
  uint16_t u16() { return static_cast<uint16_t>(byte() | byte() << 8); }
  [[nodiscard]] bool more() const { return at < n; }
};

void inside(std::span<const std::byte> region, std::span<const std::byte> rec) {
  FUZZ_CHECK(rec.data() >= region.data() && rec.data() + rec.size() <= region.data() + region.size());
  bus::fuzz::touch(rec);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Input in{data, size};
  const uint32_t readers = 1 + in.byte() % 4;
  const uint64_t capacity = uint64_t{4096} << (in.byte() % 3);
  const size_t bytes = log_bytes(readers, capacity);
  auto* base = static_cast<std::byte*>(::operator new(bytes, kAlign));
  std::memset(base, 0, bytes);
  std::span<std::byte> region(base, bytes);
  std::vector<uint32_t> ids(readers);
  for (uint32_t i = 0; i < readers; ++i) ids[i] = 2 + i;
  FUZZ_CHECK(format_log(region, 1, 1, ids, capacity, Zeroed::yes).has_value());
  auto w = LogWriter::attach(region, std::vector<int>(readers, -1), -1);
  FUZZ_CHECK(w.has_value());
  std::vector<LogReader> rs;
  for (uint32_t i = 0; i < readers; ++i) {
    auto r = LogReader::attach(region, i, -1, -1);
    FUZZ_CHECK(r.has_value());
    rs.push_back(std::move(*r));
  }
  while (in.more()) {
    switch (in.byte() % 5) {
      case 0: {  // the writer writes a few records
        const int k = 1 + in.byte() % 8;
        for (int i = 0; i < k; ++i) {
          const uint32_t len = in.u16() % 600;
          auto c = w->try_claim(len, in.byte());
          if (!c) break;
          FUZZ_CHECK(c->data() >= region.data() && c->data() + c->size() <= region.data() + region.size());
          std::memset(c->data(), 0xAB, c->size());
          w->commit(len);
        }
        w->publish();
        break;
      }
      case 1: {  // a reader reads what it can
        LogReader& r = rs[in.byte() % readers];
        for (int i = 0; i < 64; ++i) {
          auto rec = r.try_peek();
          if (!rec) break;
          inside(region, rec->data);
          r.advance();
        }
        r.release();
        break;
      }
      case 2: {  // a hostile process rewrites up to 8 bytes anywhere
        const size_t at = (size_t{in.u16()} << 4 | in.byte() % 16) % bytes;
        const int k = 1 + in.byte() % 8;
        for (int i = 0; i < k && at + static_cast<size_t>(i) < bytes; ++i) base[at + static_cast<size_t>(i)] = std::byte{in.byte()};
        break;
      }
      case 3: {  // a reader stores a position of its choice
        auto parts = check_log(region);
        if (parts) {
          uint64_t h = 0;
          for (int i = 0; i < 8; ++i) h = h << 8 | in.byte();
          parts->lines[in.byte() % parts->lines.size()].head.store(h, std::memory_order_relaxed);
        }
        break;
      }
      default: {  // a second look at the layout, as a late attacher would
        auto parts = check_log(region);
        if (parts) {
          FUZZ_CHECK(parts->ring.data() >= region.data() && parts->ring.data() + parts->ring.size() <= region.data() + bytes);
          FUZZ_CHECK(!parts->lines.empty() && parts->lines.size() <= kMaxReaders);
          auto r = LogReader::attach(region, in.byte() % static_cast<uint32_t>(parts->lines.size()), -1, -1);
          if (r) {
            for (int i = 0; i < 16; ++i) {
              auto rec = r->try_peek();
              if (!rec) break;
              inside(region, rec->data);
              r->advance();
            }
          }
        }
        break;
      }
    }
  }
  rs.clear();
  *w = LogWriter{};
  ::operator delete(base, kAlign);
  return 0;
}
