// A hostile local agent for test_hostile_shm.cpp: an ordinary libbus agent (so that busd gives it
// rings, lanes and broadcast logs the ordinary way) plus a second thread that rewrites, at
// random, every word of shared memory this process can reach: its own segment (the ring to busd,
// the ring from busd, its AgentLines) and every lane and log segment busd handed it.
//
//   hostile_agent --seed S --seconds T [--name N] [--uid U --gid G] [--rate R]
//
// The chaos thread finds the segments the way any process could: the memfds named "busd:..." in
// its own descriptor table (/proc/self/fd). It maps each one itself (a dup, so that a descriptor
// number reused meanwhile cannot make it map something else) and keeps the mapping until libbus
// closes the descriptor. The layout of each segment is read once when it is mapped, before it is
// rewritten; a mutation then picks a target:
//   ring indices (head, tail), sleep flags, record headers (length, tag, commit) at and around
//   the live positions, forged records at the consumer's head with random bytes, payload bytes of
//   committed records, ring descriptors, lane headers (closed flag, agent ids, offsets,
//   counters), log headers, reader lines and sleeper counts, the route epoch, any word at all;
// and sometimes writes an eventfd of this process, so that busd or the lane's other end looks at
// the damage now. Between bursts it pauses (random 0-3 ms), and every second it leaves the
// memory alone for 150 ms, so that busd re-admits it and lanes are set up again.
//
// The libbus thread publishes, requests, answers and reads as an agent does (subjects agreed
// with the test: peer.in, peer.svc, hostile.in, hostile.svc, fan.x, hfan.x) and reconnects
// after busd drops it. At the end it prints one line of counts and exits 0.
#include <fcntl.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "bus/client.hpp"
#include "shm/lane.hpp"
#include "shm/layout.hpp"
#include "shm/log.hpp"
#include "shm/wait.hpp"

namespace {

using namespace std::chrono_literals;
namespace shm = bus::shm;

std::atomic<bool> g_stop{false};

enum Kind : int {
  kTail, kHead, kSleep, kLength, kTag, kCommit, kForge, kPayload, kDescriptor, kWord,
  kLaneHeader, kLogParts, kEpoch, kWake, kStorm, kKinds
};
constexpr const char* kKindNames[kKinds] = {"tail", "head", "sleep", "length", "tag", "commit", "forge",
                                            "payload", "descriptor", "word", "lane_header", "log", "epoch", "wake", "storm"};

struct Ring {
  std::byte* base = nullptr;  // RingShared
  uint64_t capacity = 0;
  uint32_t max_record = 0;
  // The ring busd writes to this agent: its own libbus reads records there in place, after
  // verifying them (no copy: busd's writes are trusted). Rewriting their bytes would only make
  // this process read out of bounds in itself, so that ring's record bytes are left alone.
  bool own_inbound = false;
};

struct Mapped {
  std::byte* base = nullptr;
  size_t size = 0;
  std::string name;  // busd:agent-N, busd:lane-N, busd:log-N
  std::vector<Ring> rings;
  bool lane = false, log = false, agent = false;
  uint32_t log_readers = 0;
  uint64_t lines_at = 0;  // agent: AgentLines offset
  bool seen = false;      // still in the descriptor table at the last scan
};

// A ring whose descriptor reads right, at `at` in a segment of `size` bytes.
bool ring_at(std::byte* base, size_t size, uint64_t at, Ring& out) {
  if (at % shm::kFalseSharingRange != 0 || at + shm::kDataOffset > size) return false;
  shm::RingDescriptor d;
  std::memcpy(&d, base + at, sizeof d);
  if (d.magic != shm::kRingMagic || d.capacity < shm::kMinCapacity || (d.capacity & (d.capacity - 1)) != 0 ||
      at + shm::ring_bytes(d.capacity) > size) {
    return false;
  }
  out = Ring{base + at, d.capacity, d.max_record};
  return true;
}

class Chaos {
 public:
  Chaos(uint64_t seed, double rate, int storm_ms, bool self_harm)
      : rng_(seed), rate_(rate), storm_ms_(storm_ms), self_harm_(self_harm) {}
  ~Chaos() {
    for (auto& [ino, m] : maps_) ::munmap(m.base, m.size);
  }

  void run(std::chrono::steady_clock::time_point end) {
    auto last_scan = std::chrono::steady_clock::time_point{};
    const auto start = std::chrono::steady_clock::now();
    while (!g_stop.load() && std::chrono::steady_clock::now() < end) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last_scan >= 10ms) {
        scan();
        last_scan = now;
      }
      // Calm for 150 ms of every second: busd re-admits us, lanes are set up again.
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count();
      if (ms % 1000 >= 850 || maps_.empty()) {
        std::this_thread::sleep_for(2ms);
        continue;
      }
      if (std::uniform_real_distribution<double>(0, 1)(rng_) < rate_) {
        const int burst = 1 + static_cast<int>(rng_() % 4);
        for (int i = 0; i < burst; ++i) mutate();
      }
      std::this_thread::sleep_for(std::chrono::microseconds(rng_() % 3000));
    }
  }

  void print() const {
    uint64_t total = 0;
    std::string line;
    for (int k = 0; k < kKinds; ++k) {
      total += counts_[k];
      line += std::string(" ") + kKindNames[k] + "=" + std::to_string(counts_[k]);
    }
    std::printf("hostile: mutations=%" PRIu64 " segments_mapped=%" PRIu64 " lanes_mapped=%" PRIu64 " logs_mapped=%" PRIu64 "%s\n",
                total, segments_, lanes_, logs_, line.c_str());
  }

 private:
  // The busd memfds in our descriptor table: map the new ones, unmap those libbus closed.
  void scan() {
    for (auto& [ino, m] : maps_) m.seen = false;
    eventfds_.clear();
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", ec)) {
      const std::string fdname = e.path().filename().string();
      char* end = nullptr;
      const long fd = std::strtol(fdname.c_str(), &end, 10);
      if (*end != '\0') continue;
      const int dup = ::fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
      if (dup < 0) continue;
      char link[256] = {};
      const std::string self = "/proc/self/fd/" + std::to_string(dup);
      const ssize_t n = ::readlink(self.c_str(), link, sizeof link - 1);
      const std::string target = n > 0 ? std::string(link, static_cast<size_t>(n)) : std::string();
      struct stat st {};
      if (target == "anon_inode:[eventfd]") {
        eventfds_.push_back(static_cast<int>(fd));  // only written, never mapped: a stale number is harmless
      } else if (target.rfind("/memfd:busd:", 0) == 0 && ::fstat(dup, &st) == 0) {
        auto it = maps_.find(st.st_ino);
        if (it != maps_.end()) {
          it->second.seen = true;
        } else if (st.st_size > 0) {
          map(dup, static_cast<size_t>(st.st_size), target.substr(7), st.st_ino);
        }
      }
      ::close(dup);
    }
    for (auto it = maps_.begin(); it != maps_.end();) {
      if (!it->second.seen) {
        ::munmap(it->second.base, it->second.size);
        it = maps_.erase(it);
      } else {
        ++it;
      }
    }
  }

  void map(int fd, size_t size, std::string name, ino_t ino) {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return;
    Mapped m;
    m.base = static_cast<std::byte*>(p);
    m.size = size;
    m.name = std::move(name);
    m.seen = true;
    // The layout, read once now (before we rewrite it).
    uint64_t magic = 0;
    std::memcpy(&magic, m.base, sizeof magic);
    Ring r;
    if (magic == shm::lane::kLaneMagic && size >= sizeof(shm::lane::LaneHeader)) {
      const auto* h = reinterpret_cast<const shm::lane::LaneHeader*>(m.base);
      m.lane = true;
      for (uint64_t off : h->ring_offset) {
        if (ring_at(m.base, size, off, r)) m.rings.push_back(r);
      }
      ++lanes_;
    } else if (magic == shm::log::kLogMagic && size >= sizeof(shm::log::LogHeader)) {
      const auto* h = reinterpret_cast<const shm::log::LogHeader*>(m.base);
      m.log = true;
      m.log_readers = std::min(h->readers, shm::log::kMaxReaders);
      if (ring_at(m.base, size, h->ring_offset, r)) m.rings.push_back(r);
      ++logs_;
    } else if (ring_at(m.base, size, 0, r)) {
      m.agent = true;
      m.rings.push_back(r);
      const uint64_t second = shm::ring_bytes(r.capacity);
      if (ring_at(m.base, size, second, r)) {
        r.own_inbound = !self_harm_;
        m.rings.push_back(r);
      }
      m.lines_at = 2 * second;
    }
    ++segments_;
    maps_.emplace(ino, std::move(m));
  }

  uint64_t pick(uint64_t n) { return n == 0 ? 0 : rng_() % n; }

  template <class T>
  void put(std::byte* at, T v) {
    std::atomic_ref<T>(*reinterpret_cast<T*>(at)).store(v, std::memory_order_release);
  }

  // A plausible, slightly wrong or wild index near `live`.
  uint64_t index_near(uint64_t live, uint64_t cap) {
    switch (pick(8)) {
      case 0: return rng_();
      case 1: return live + 16 * (1 + pick(8));
      case 2: return live + 8;
      case 3: return live - 16;
      case 4: return live + cap + 16;
      case 5: return 0;
      case 6: return live - cap;
      default: return live + 16 * pick(4096);
    }
  }

  void mutate() {
    // Pick a segment: lanes and logs as often as our own.
    auto it = maps_.begin();
    std::advance(it, static_cast<long>(pick(maps_.size())));
    Mapped& m = it->second;
    const uint64_t k = pick(100);
    if (k < 4) return wake();
    if (k < 8) return word(m);
    if (k < 14 && m.lane) return lane_header(m);
    if (k < 14 && m.log) return log_parts(m);
    if (k < 16 && m.agent && m.lines_at + sizeof(shm::lane::AgentLines) <= m.size) {
      ++counts_[kEpoch];
      return put<uint64_t>(m.base + m.lines_at, rng_());
    }
    if (m.rings.empty()) return word(m);
    const Ring& r = m.rings[pick(m.rings.size())];
    if (k < 17 && !r.own_inbound) return storm(r);
    ring(r);
  }

  // For 20 ms, random bytes over the whole of a ring's records, as fast as this thread goes:
  // whatever a reader is looking at changes under it.
  void storm(const Ring& r) {
    ++counts_[kStorm];
    std::byte* data = r.base + shm::kDataOffset;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(storm_ms_);
    while (std::chrono::steady_clock::now() < until) {
      for (int i = 0; i < 4096; ++i) {
        const uint64_t v = rng_();
        std::memcpy(data + (v % (r.capacity / 8)) * 8, &v, 8);
      }
    }
  }

  void ring(const Ring& r) {
    auto* s = reinterpret_cast<shm::RingShared*>(r.base);
    std::byte* data = r.base + shm::kDataOffset;
    const uint64_t cap = r.capacity, mask = cap - 1;
    const uint64_t tail = s->prod.tail.load(std::memory_order_acquire);
    const uint64_t head = s->cons.head.load(std::memory_order_acquire);
    // A live position: around the consumer's head or the producer's tail.
    const uint64_t pos = ((pick(2) == 0 ? head : tail) + 16 * pick(8)) & mask & ~uint64_t{15};
    auto* h = reinterpret_cast<shm::RecordHeader*>(data + pos);
    uint64_t what = pick(10);
    if (r.own_inbound && (what == 6 || what == 7 || what == 9)) what = 3 + pick(3);  // see Ring::own_inbound
    switch (what) {
      case 0:
        ++counts_[kTail];
        put<uint64_t>(reinterpret_cast<std::byte*>(&s->prod.tail), index_near(tail, cap));
        break;
      case 1:
        ++counts_[kHead];
        put<uint64_t>(reinterpret_cast<std::byte*>(&s->cons.head), index_near(head, cap));
        break;
      case 2: {
        ++counts_[kSleep];
        const uint32_t v = pick(3) == 0 ? static_cast<uint32_t>(rng_()) : static_cast<uint32_t>(pick(2));
        put<uint32_t>(reinterpret_cast<std::byte*>(pick(2) == 0 ? &s->sleep.consumer_sleeping : &s->sleep.producer_sleeping), v);
        break;
      }
      case 3: {
        ++counts_[kLength];
        const uint32_t lens[] = {static_cast<uint32_t>(rng_()), r.max_record + 1, static_cast<uint32_t>(cap), 0,
                                 static_cast<uint32_t>(pick(64)), 0xFFFF'FFF0u, r.max_record,
                                 static_cast<uint32_t>(cap - pos - shm::kRecordHeaderSize)};
        put<uint32_t>(reinterpret_cast<std::byte*>(&h->length), lens[pick(std::size(lens))]);
        break;
      }
      case 4: {
        ++counts_[kTag];
        const uint32_t tags[] = {static_cast<uint32_t>(rng_()), shm::kPadTag, shm::lane::kMarkTag, shm::lane::kGateTag,
                                 shm::lane::kEndTag, 0, 1, 2};
        put<uint32_t>(reinterpret_cast<std::byte*>(&h->tag), tags[pick(std::size(tags))]);
        break;
      }
      case 5: {
        ++counts_[kCommit];
        const uint64_t at = (head & ~mask) + pos;  // this lap's position of the slot
        const uint64_t commits[] = {at + 1, rng_(), 0, at + 1 + cap, head + 1};
        put<uint64_t>(reinterpret_cast<std::byte*>(&h->commit), commits[pick(std::size(commits))]);
        break;
      }
      case 6: {
        // A whole record at the consumer's head, as an honest producer would frame it (or not).
        ++counts_[kForge];
        const uint64_t at = head & mask & ~uint64_t{15};  // (the head may be one we rewrote)
        auto* f = reinterpret_cast<shm::RecordHeader*>(data + at);
        const uint64_t room = cap - at - shm::kRecordHeaderSize;
        uint32_t len = pick(4) == 0 ? static_cast<uint32_t>(rng_()) : static_cast<uint32_t>(pick(std::min<uint64_t>(room, 600) + 1));
        const uint32_t tags[] = {1, 0, shm::lane::kMarkTag, shm::lane::kGateTag, shm::lane::kEndTag, shm::kPadTag,
                                 static_cast<uint32_t>(rng_())};
        const uint64_t fill = std::min<uint64_t>(len, room);
        for (uint64_t i = 0; i < fill; ++i) data[at + shm::kRecordHeaderSize + i] = static_cast<std::byte>(rng_());
        f->length = len;
        f->tag = tags[pick(std::size(tags))];
        put<uint64_t>(reinterpret_cast<std::byte*>(&f->commit), head + 1);
        break;
      }
      case 7: {
        // Bytes of records just committed (behind the tail): a reader may be verifying them now.
        ++counts_[kPayload];
        const uint64_t base = (tail - pick(2048)) & mask;
        for (uint64_t i = 0, n = 1 + pick(16); i < n; ++i) data[(base + pick(256)) & mask] = static_cast<std::byte>(rng_());
        break;
      }
      case 8: {
        ++counts_[kDescriptor];
        auto* d = reinterpret_cast<shm::RingDescriptor*>(r.base);
        switch (pick(4)) {
          case 0: put<uint64_t>(reinterpret_cast<std::byte*>(&d->capacity), pick(2) == 0 ? rng_() : cap * 2); break;
          case 1: put<uint32_t>(reinterpret_cast<std::byte*>(&d->max_record), static_cast<uint32_t>(rng_())); break;
          case 2: put<uint32_t>(reinterpret_cast<std::byte*>(&d->data_offset), static_cast<uint32_t>(pick(4096))); break;
          default: put<uint64_t>(reinterpret_cast<std::byte*>(&d->magic), rng_()); break;
        }
        break;
      }
      default: {
        ++counts_[kWord];
        const uint64_t off = pick((shm::kDataOffset + cap) / 8) * 8;
        put<uint64_t>(r.base + off, rng_());
        break;
      }
    }
  }

  void word(Mapped& m) {
    uint64_t off = pick(m.size / 8) * 8;
    for (const Ring& r : m.rings) {
      const auto data = static_cast<uint64_t>(r.base - m.base) + shm::kDataOffset;
      if (r.own_inbound && off >= data && off < data + r.capacity) return;  // see Ring::own_inbound
    }
    ++counts_[kWord];
    put<uint64_t>(m.base + off, rng_());
  }

  void lane_header(Mapped& m) {
    ++counts_[kLaneHeader];
    auto* h = reinterpret_cast<shm::lane::LaneHeader*>(m.base);
    switch (pick(6)) {
      case 0: put<uint32_t>(reinterpret_cast<std::byte*>(&h->closed), static_cast<uint32_t>(pick(2))); break;
      case 1: put<uint32_t>(reinterpret_cast<std::byte*>(&h->agent[pick(2)]), static_cast<uint32_t>(rng_() % 64)); break;
      case 2: put<uint64_t>(reinterpret_cast<std::byte*>(&h->ring_offset[pick(2)]), rng_()); break;
      case 3: put<uint32_t>(reinterpret_cast<std::byte*>(&h->lane_id), static_cast<uint32_t>(rng_())); break;
      case 4: put<uint64_t>(reinterpret_cast<std::byte*>(&h->side[pick(2)].messages), rng_()); break;
      default: put<uint64_t>(reinterpret_cast<std::byte*>(&h->magic), rng_()); break;
    }
  }

  void log_parts(Mapped& m) {
    ++counts_[kLogParts];
    auto* h = reinterpret_cast<shm::log::LogHeader*>(m.base);
    auto* s = reinterpret_cast<shm::log::LogShared*>(m.base + sizeof(shm::log::LogHeader));
    const uint32_t n = m.log_readers;
    auto* line = n == 0 ? nullptr
                        : reinterpret_cast<shm::log::ReaderLine*>(m.base + sizeof(shm::log::LogHeader) + sizeof(shm::log::LogShared) +
                                                                  pick(n) * sizeof(shm::log::ReaderLine));
    if (line != nullptr && reinterpret_cast<std::byte*>(line + 1) > m.base + m.size) line = nullptr;
    switch (pick(7)) {
      case 0:
        if (line != nullptr) {
          const uint64_t at = line->head.load();
          put<uint64_t>(reinterpret_cast<std::byte*>(&line->head), index_near(at, m.rings.empty() ? 4096 : m.rings[0].capacity));
        }
        break;
      case 1:
        if (line != nullptr) put<uint32_t>(reinterpret_cast<std::byte*>(&line->sleeping), static_cast<uint32_t>(pick(2)));
        break;
      case 2: put<uint32_t>(reinterpret_cast<std::byte*>(&s->sleepers), static_cast<uint32_t>(pick(3) == 0 ? rng_() : pick(4))); break;
      case 3: put<uint32_t>(reinterpret_cast<std::byte*>(&s->writer_sleeping), static_cast<uint32_t>(pick(2))); break;
      case 4: put<uint32_t>(reinterpret_cast<std::byte*>(&h->readers), static_cast<uint32_t>(rng_())); break;
      case 5: put<uint64_t>(reinterpret_cast<std::byte*>(&h->ring_offset), rng_()); break;
      default:
        if (line != nullptr) put<uint32_t>(reinterpret_cast<std::byte*>(&line->agent), static_cast<uint32_t>(rng_() % 64));
        break;
    }
  }

  void wake() {
    if (eventfds_.empty()) return;
    ++counts_[kWake];
    const uint64_t one = 1;
    (void)!::write(eventfds_[pick(eventfds_.size())], &one, sizeof one);
  }

  std::mt19937_64 rng_;
  double rate_;
  int storm_ms_;
  bool self_harm_;
  std::map<ino_t, Mapped> maps_;
  std::vector<int> eventfds_;
  uint64_t counts_[kKinds] = {};
  uint64_t segments_ = 0, lanes_ = 0, logs_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hostile shared-memory agent"};
  uint64_t seed = 1;
  double seconds = 20, rate = 0.5;
  std::string name = "hostile";
  int uid = -1, gid = -1, storm_ms = 20;
  bool self_harm = false;
  app.add_option("--seed", seed);
  app.add_option("--seconds", seconds);
  app.add_option("--rate", rate, "chance of a burst of 1-4 mutations per pause");
  app.add_option("--name", name);
  app.add_option("--uid", uid);
  app.add_option("--gid", gid);
  app.add_option("--storm-ms", storm_ms, "how long one storm rewrites a whole ring (default 20)");
  app.add_flag("--self-harm", self_harm, "rewrite records in the ring busd writes to us too (this process may crash)");
  CLI11_PARSE(app, argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  if (uid >= 0) {
    if (::setgroups(0, nullptr) != 0 || ::setgid(static_cast<gid_t>(gid >= 0 ? gid : uid)) != 0 ||
        ::setuid(static_cast<uid_t>(uid)) != 0) {
      std::printf("hostile: dropping to uid %d: %s\n", uid, std::strerror(errno));
      return 2;
    }
  }
  std::signal(SIGTERM, [](int) { g_stop.store(true); });

  bus::ClientOptions o;
  o.name = name;
  o.publish_timeout = 50ms;
  o.control_timeout = 500ms;
  auto c = bus::Client::connect(o);
  if (!c) {
    std::printf("hostile: connect failed: %s\n", c.error().message().c_str());
    return 3;
  }
  bus::Client& cl = **c;
  uint64_t got = 0, answered = 0, sent = 0, send_errors = 0, requests_ok = 0, request_errors = 0;
  for (const char* s : {"hostile.in", "hostile.svc", "fan.x"}) {
    auto sub = cl.subscribe(s, [&](const bus::Message& m) {
      ++got;
      if (m.subject() == "hostile.svc" && cl.reply(m, m.payload())) ++answered;
    });
    if (!sub) {
      std::printf("hostile: subscribing to %s: %s\n", s, sub.error().message().c_str());
      return 4;
    }
  }
  std::printf("hostile: seed %" PRIu64 ", %.0f s, uid %u\n", seed, seconds, ::getuid());

  const auto end = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                                           std::chrono::duration<double>(seconds));
  Chaos chaos(seed, rate, storm_ms, self_harm);
  std::thread chaos_thread([&] { chaos.run(end); });
  uint64_t i = 0;
  while (!g_stop.load() && std::chrono::steady_clock::now() < end) {
    ++i;
    (void)cl.poll(1ms);
    const uint64_t v = i;
    const auto payload = std::as_bytes(std::span(&v, 1));
    for (const char* s : {"peer.in", "hfan.x"}) {
      if (cl.publish(s, payload)) {
        ++sent;
      } else {
        ++send_errors;
      }
    }
    if (i % 8 == 0) {
      if (auto r = cl.request("peer.svc", payload, 50ms)) {
        ++requests_ok;
      } else {
        ++request_errors;
      }
    }
  }
  g_stop.store(true);
  chaos_thread.join();
  const auto& st = cl.stats();
  std::printf("hostile: sent=%" PRIu64 " send_errors=%" PRIu64 " got=%" PRIu64 " answered=%" PRIu64 " requests_ok=%" PRIu64
              " request_errors=%" PRIu64 " reconnects=%" PRIu64 " verify_failures=%" PRIu64 " lanes_opened=%" PRIu64 "\n",
              sent, send_errors, got, answered, requests_ok, request_errors, st.reconnects, st.verify_failures, st.lanes_opened);
  chaos.print();
  cl.close();
  return 0;
}
