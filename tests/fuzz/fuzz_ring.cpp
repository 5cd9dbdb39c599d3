// Fuzz target: the shared-memory ring reader (bus::shm::RingConsumer) over a ring image that a
// hostile producer wrote. Input format: ring_input.hpp. The ring lives in an exactly-sized heap
// block (ASan sees any access outside it); indices, records with their commit words and
// (sometimes) the descriptor come from the input, then a sequence of consumer operations runs,
// with hostile rewrites of the tail, record headers and commit words in between, and optionally
// an honest RingProducer on the same region.
// Properties: attach fails cleanly on a broken descriptor and never accepts a geometry larger
// than the region; every record returned lies inside the data area (abort() otherwise); Corrupt
// is sticky and explained.
#include <algorithm>
#include <cstdint>
#include <new>
#include <optional>
#include <vector>

#include "fuzz_check.hpp"
#include "ring_input.hpp"
#include "shm/layout.hpp"
#include "shm/ring.hpp"

using namespace bus;
using namespace bus::shm;
using bus::fuzz::RingInput;
using bus::fuzz::touch;

namespace {

constexpr std::align_val_t kAlign{kFalseSharingRange};

// A heap block of exactly `size` bytes starting `misalign` bytes after a 128-byte boundary.
class Block {
 public:
  Block(size_t size, size_t misalign)
      : base_(static_cast<std::byte*>(::operator new(size + misalign, kAlign))),
        region_(base_ + misalign, size) {}
  ~Block() { ::operator delete(base_, kAlign); }
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  [[nodiscard]] std::span<std::byte> region() const noexcept { return region_; }

 private:
  std::byte* base_;
  std::span<std::byte> region_;
};

// Corruptions (RingInput::corrupt & 0x0F when corrupt >= 0xF0).
enum Corruption : unsigned {
  XorMagic, Version, DataOffset, Capacity32, Capacity64, MaxRecord, Reserved, Truncated,
  CapacityDoubled, CapacityHalved, Larger, Misaligned,  // 12..15: flip a descriptor byte
};

void write_desc(std::byte* ring, size_t offset, const void* v, size_t n) {
  std::memcpy(ring + offset, v, n);
}

struct Bounds {
  std::span<const std::byte> area;  // the data area as attached
  uint32_t max_record;

  // The record and its header lie in the data area.
  [[nodiscard]] bool holds(const std::byte* p, size_t len) const noexcept {
    return p != nullptr &&
           bus::fuzz::inside(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) -
                                                           kRecordHeaderSize),
                             len + kRecordHeaderSize, area);
  }
  void check(const Record& r) const {
    FUZZ_CHECK(holds(r.data.data(), r.data.size()));
    FUZZ_CHECK(r.data.size() <= max_record);
    FUZZ_CHECK(r.tag != kPadTag);
    touch(r.data);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const RingInput in = RingInput::parse(data, size);
  const uint64_t cap = in.capacity();
  const size_t full = ring_bytes(cap);
  const bool corrupting = in.corrupt >= 0xF0;
  const unsigned kind = in.corrupt & 0x0F;
  const uint32_t value = in.corrupt_value;

  // The image, built in a full-size scratch ring (format_ring needs one), then copied into the
  // region the consumer gets, which a corruption may make smaller, larger or misaligned.
  Block scratch(full, 0);
  uint32_t max_record = in.max_record;
  if (max_record > max_record_for(cap)) max_record = 0;
  FUZZ_CHECK(format_ring(scratch.region(), cap, max_record).has_value());
  std::byte* img = scratch.region().data();
  auto* shared = reinterpret_cast<RingShared*>(img);
  shared->cons.head.store(in.head, std::memory_order_relaxed);
  shared->prod.tail.store(in.tail, std::memory_order_relaxed);
  std::byte* area = img + kDataOffset;
  for (size_t i = 0; i < in.blob.size() && i < cap; ++i) {
    area[(in.head + i) & (cap - 1)] = static_cast<std::byte>(in.blob[i]);
  }

  size_t region_size = full;
  size_t misalign = 0;
  bool must_fail = false;
  if (corrupting) {
    const uint64_t v64 = (uint64_t{value} << 32) | value;
    switch (kind) {
      case XorMagic: {
        const uint64_t m = kRingMagic ^ (uint64_t{value} | 1);
        write_desc(img, offsetof(RingDescriptor, magic), &m, sizeof m);
        must_fail = true;
        break;
      }
      case Version: write_desc(img, offsetof(RingDescriptor, layout_version), &value, 4); break;
      case DataOffset: write_desc(img, offsetof(RingDescriptor, data_offset), &value, 4); break;
      case Capacity32: {
        const uint64_t c = value;
        write_desc(img, offsetof(RingDescriptor, capacity), &c, 8);
        break;
      }
      case Capacity64: write_desc(img, offsetof(RingDescriptor, capacity), &v64, 8); break;
      case MaxRecord: write_desc(img, offsetof(RingDescriptor, max_record), &value, 4); break;
      case Reserved: write_desc(img, offsetof(RingDescriptor, reserved), &value, 4); break;
      case Truncated:
        region_size = full - 1 - value % full;
        must_fail = true;
        break;
      case CapacityDoubled: {
        const uint64_t c = cap * 2;
        write_desc(img, offsetof(RingDescriptor, capacity), &c, 8);
        must_fail = true;
        break;
      }
      case CapacityHalved: {
        const uint64_t c = cap / 2;
        write_desc(img, offsetof(RingDescriptor, capacity), &c, 8);
        break;
      }
      case Larger: region_size = full + value % 4096; break;
      case Misaligned:
        misalign = 64;
        must_fail = true;
        break;
      default:
        img[value % 32] ^= static_cast<std::byte>((value >> 8) | 1);
        break;
    }
  }
  Block block(region_size, misalign);
  const auto region = block.region();
  std::memset(region.data(), 0, region.size());
  std::memcpy(region.data(), img, std::min(full, region.size()));

  // Attach: fails exactly when the descriptor check fails (or the head is misaligned).
  auto geometry = check_ring(region);
  auto consumer = RingConsumer::attach(region);
  if (!geometry) {
    FUZZ_CHECK(!consumer);
    FUZZ_CHECK(consumer.error().code() == geometry.error().code());
    const Errc code = geometry.error().code();
    FUZZ_CHECK(code == Errc::Corrupt || code == Errc::VersionMismatch ||
               code == Errc::InvalidArgument);
    FUZZ_CHECK(!consumer.error().message().empty());
    return 0;
  }
  FUZZ_CHECK(!must_fail);
  const uint64_t c_cap = geometry->capacity;
  FUZZ_CHECK(c_cap >= kMinCapacity && (c_cap & (c_cap - 1)) == 0);
  FUZZ_CHECK(ring_bytes(c_cap) <= region.size());
  FUZZ_CHECK(geometry->max_record > 0 && geometry->max_record <= max_record_for(c_cap));
  if (!consumer) {
    FUZZ_CHECK(consumer.error().code() == Errc::Corrupt && in.head % kRecordAlign != 0);
    return 0;
  }
  RingConsumer& c = *consumer;
  FUZZ_CHECK(c.capacity() == c_cap && c.max_record() == geometry->max_record);

  std::optional<RingProducer> producer;
  if ((in.flags & RingInput::kWithProducer) != 0) {
    if (auto p = RingProducer::attach(region)) producer.emplace(std::move(*p));
  }

  std::byte* const begin = region.data() + kDataOffset;
  const Bounds bounds{{begin, c_cap}, c.max_record()};
  auto* s = reinterpret_cast<RingShared*>(region.data());
  const uint64_t mask = c_cap - 1;
  bool corrupt_seen = false;
  auto note = [&](Errc e) {
    FUZZ_CHECK(e == Errc::WouldBlock || e == Errc::Corrupt || e == Errc::TooLarge);
    if (e == Errc::Corrupt) {
      corrupt_seen = true;
      FUZZ_CHECK(!c.corruption().empty());
    }
  };
  auto on_record = [&](const Record& r) { bounds.check(r); };
  // Where the consumer last said it is (aligned: attach refuses a misaligned head).
  auto released_head = [&] {
    return s->cons.head.load(std::memory_order_relaxed) & ~uint64_t{kRecordAlign - 1};
  };

  for (const auto& [op_byte, arg] : in.ops) {
    switch (op_byte % RingInput::kNumOps) {
      case RingInput::Peek: {
        auto r = c.try_peek();
        if (r) {
          bounds.check(*r);
        } else {
          note(r.error());
        }
        break;
      }
      case RingInput::Advance: c.advance(); break;
      case RingInput::Release: c.release(); break;
      case RingInput::ReadCopy: {
        std::vector<std::byte> out(size_t{arg} * 16);
        uint32_t tag = 0;
        auto n = c.try_read_copy(out, &tag);
        if (n) {
          FUZZ_CHECK(*n <= out.size() && *n <= c.max_record() && tag != kPadTag);
        } else {
          note(n.error());
        }
        break;
      }
      case RingInput::Poll: {
        auto n = c.poll(on_record, arg % 8 + 1);
        if (n) {
          FUZZ_CHECK(*n <= static_cast<size_t>(arg % 8 + 1));
        } else {
          note(n.error());
        }
        break;
      }
      case RingInput::Readable: bus::fuzz::touch_value(c.readable()); break;
      case RingInput::MoveTail: {
        const uint64_t delta = static_cast<uint64_t>((int64_t{arg} - 128) * 16 + (arg & 1) * 8);
        s->prod.tail.store(s->prod.tail.load(std::memory_order_relaxed) + delta,
                           std::memory_order_release);
        break;
      }
      case RingInput::RewriteHeader: {
        const uint32_t len = uint32_t{arg} * 16u + arg % 16u;
        const uint32_t tag = arg == 255 ? kPadTag : uint32_t{arg};
        std::byte* h = begin + (released_head() & mask);
        std::memcpy(h + offsetof(RecordHeader, length), &len, sizeof len);
        std::memcpy(h + offsetof(RecordHeader, tag), &tag, sizeof tag);
        break;
      }
      case RingInput::ForgeCommit: {
        const uint64_t pos = released_head() + (arg % 8u) * kRecordAlign;
        const RecordHeader h{arg % 4u * 40u, arg, pos + 1};
        std::memcpy(begin + (pos & mask), &h, sizeof h);
        break;
      }
      case RingInput::WaitPeek: {
        auto r = c.wait_peek(WaitStrategy::spin(), Deadline::at(0));
        if (r) {
          bounds.check(*r);
        } else {
          FUZZ_CHECK(r.error() == Errc::Timeout || r.error() == Errc::Corrupt);
          if (r.error() == Errc::Corrupt) note(r.error());
        }
        break;
      }
      case RingInput::ProducerWrite: {
        if (!producer) break;
        const uint32_t len = uint32_t{arg} * 3u;
        auto claim = producer->try_claim(len, arg);
        if (claim) {
          FUZZ_CHECK(claim->size() == len && bounds.holds(claim->data(), len));
          std::memset(claim->data(), arg, len);
          producer->commit(len);
          producer->publish();
        } else {
          FUZZ_CHECK(claim.error() != Errc::Corrupt || !producer->corruption().empty());
        }
        break;
      }
      case RingInput::ArmSleep:
        if (c.arm_sleep()) c.disarm();
        break;
      default: break;
    }
  }

  // Drain what is left; a ring never yields more records than fit in it.
  for (int i = 0; i < 4; ++i) {
    auto n = c.poll(on_record);
    if (!n) {
      note(n.error());
      break;
    }
    FUZZ_CHECK(*n <= c_cap / kRecordHeaderSize);
    if (*n == 0) break;
  }
  if (corrupt_seen) {
    auto again = c.try_peek();
    FUZZ_CHECK(!again && again.error() == Errc::Corrupt);  // sticky
    FUZZ_CHECK(c.readable());
  }
  return 0;
}
