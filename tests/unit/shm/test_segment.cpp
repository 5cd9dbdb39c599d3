#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <span>
#include <vector>

#include "shm/ring.hpp"
#include "shm/segment.hpp"

using namespace bus;
using namespace bus::shm;

TEST_CASE("memfd segments are sealed and shared through their fd", "[segment]") {
  auto s = Segment::create_memfd("test-ring", ring_bytes(4096));
  REQUIRE(s);
  REQUIRE(format_ring(s->bytes(), 4096));
  // The other side cannot shrink it under us.
  CHECK(::ftruncate(s->fd(), 100) != 0);
  // Mode 0600, not a memfd's 0777: reopening it through /proc/<pid>/fd is for its owner only.
  struct stat st {};
  REQUIRE(::fstat(s->fd(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  auto other = Segment::attach_fd(::dup(s->fd()), ring_bytes(4096));
  REQUIRE(other);
  auto p = RingProducer::attach(s->bytes());
  auto c = RingConsumer::attach(other->bytes());
  REQUIRE(p);
  REQUIRE(c);
  const char msg[] = "across mappings";
  REQUIRE(p->try_write(std::as_bytes(std::span(msg))));
  auto r = c->try_peek();
  REQUIRE(r);
  CHECK(std::memcmp(r->data.data(), msg, sizeof msg) == 0);
}

TEST_CASE("attach_fd refuses small or unsealed segments", "[segment]") {
  auto s = Segment::create_memfd("small", 4096);
  REQUIRE(s);
  auto too_small = Segment::attach_fd(::dup(s->fd()), 8192);
  REQUIRE_FALSE(too_small);
  CHECK(too_small.error().code() == Errc::Corrupt);

  const int raw = ::memfd_create("unsealed", MFD_CLOEXEC);
  REQUIRE(raw >= 0);
  REQUIRE(::ftruncate(raw, 4096) == 0);
  auto unsealed = Segment::attach_fd(raw, 4096);
  REQUIRE_FALSE(unsealed);
  CHECK(unsealed.error().code() == Errc::PermissionDenied);
}

TEST_CASE("file segments live under a configurable directory with the given mode",
          "[segment]") {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("busd-seg-test-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path;
  {
    auto s = Segment::create_file(dir.string(), "ring0", ring_bytes(4096), 0640);
    REQUIRE(s);
    path = s->path();
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
    CHECK(static_cast<size_t>(st.st_size) == ring_bytes(4096));
    // O_EXCL: a second creator fails instead of sharing by accident.
    auto dup = Segment::create_file(dir.string(), "ring0", 4096);
    REQUIRE_FALSE(dup);
    CHECK(dup.error().code() == Errc::AlreadyExists);
    auto opened = Segment::attach_path(path, ring_bytes(4096));
    REQUIRE(opened);
    CHECK(opened->size() == ring_bytes(4096));
  }
  CHECK_FALSE(std::filesystem::exists(path));  // the creator unlinks on destruction
  CHECK(Segment::create_file(dir.string(), "../escape", 4096).error().code() ==
        Errc::InvalidArgument);
  std::filesystem::remove_all(dir);
}

// Resident pages of a mapping (mincore counts shmem pages that exist, whoever touched them).
static size_t resident_pages(std::span<std::byte> bytes) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((bytes.size() + page - 1) / page);
  REQUIRE(::mincore(bytes.data(), bytes.size(), v.data()) == 0);
  size_t n = 0;
  for (unsigned char b : v) n += b & 1;
  return n;
}

TEST_CASE("a ring formatted on a new memfd (Zeroed::yes) touches only its descriptor pages", "[segment]") {
  constexpr uint64_t kCap = 4ull << 20;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  auto lazy = Segment::create_memfd("lazy", ring_bytes(kCap), false);
  auto eager = Segment::create_memfd("eager", ring_bytes(kCap), false);
  REQUIRE(lazy);
  REQUIRE(eager);
  REQUIRE(format_ring(lazy->bytes(), kCap, 0, Zeroed::yes));
  REQUIRE(format_ring(eager->bytes(), kCap, 0, Zeroed::no));
  CHECK(resident_pages(lazy->bytes()) * page <= 64 * 1024);    // busd: 1000 agents cost little
  CHECK(resident_pages(eager->bytes()) * page >= kCap);         // zeroing touches every page
  // And the lazily formatted ring works: records written, wrapped and read back.
  auto p = RingProducer::attach(lazy->bytes());
  auto c = RingConsumer::attach(lazy->bytes());
  REQUIRE(p);
  REQUIRE(c);
  std::vector<std::byte> rec(64 * 1024, std::byte{7});
  for (int i = 0; i < 200; ++i) {  // 12.8 MiB through a 4 MiB ring
    rec[0] = static_cast<std::byte>(i);
    REQUIRE(p->try_write(rec));
    auto r = c->try_peek();
    REQUIRE(r);
    CHECK(r->data.size() == rec.size());
    CHECK(r->data[0] == static_cast<std::byte>(i));
    c->advance();
    c->release();
  }
}
