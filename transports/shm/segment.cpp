#include "shm/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

namespace bus::shm {
namespace {

constexpr unsigned kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > 200) return false;
  for (char ch : n) {
    if (ch == '/' || ch == '\0') return false;
  }
  return n != "." && n != "..";
}

}  // namespace

Segment::Segment(Segment&& o) noexcept
    : base_(std::exchange(o.base_, nullptr)),
      size_(std::exchange(o.size_, 0)),
      fd_(std::exchange(o.fd_, -1)),
      path_(std::move(o.path_)) {
  o.path_.clear();
}

Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    reset();
    base_ = std::exchange(o.base_, nullptr);
    size_ = std::exchange(o.size_, 0);
    fd_ = std::exchange(o.fd_, -1);
    path_ = std::move(o.path_);
    o.path_.clear();
  }
  return *this;
}

Segment::~Segment() { reset(); }

void Segment::reset() noexcept {
  if (base_ != nullptr) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
  if (!path_.empty()) ::unlink(path_.c_str());
  base_ = nullptr;
  size_ = 0;
  fd_ = -1;
  path_.clear();
}

Expected<Segment> Segment::map(int fd, size_t size, bool prefault) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | (prefault ? MAP_POPULATE : 0), fd, 0);
  if (p == MAP_FAILED) {
    const int e = errno;
    ::close(fd);
    return tl::unexpected(system_error("mmap of " + std::to_string(size) + " bytes", e));
  }
  Segment s;
  s.base_ = static_cast<std::byte*>(p);
  s.size_ = size;
  s.fd_ = fd;
  return s;
}

Expected<Segment> Segment::create_memfd(std::string_view name, size_t size, bool prefault, mode_t mode) {
  if (!valid_name(name)) return fail(Errc::InvalidArgument, "segment name '" + std::string(name) + "'");
  const std::string n = "busd:" + std::string(name);
  const int fd = ::memfd_create(n.c_str(), MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return tl::unexpected(system_error("memfd_create " + n, errno));
  if (::fchmod(fd, mode) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0 ||
      ::fcntl(fd, F_ADD_SEALS, kSeals) != 0) {
    const int e = errno;
    ::close(fd);
    return tl::unexpected(system_error("sizing memfd " + n, e));
  }
  return map(fd, size, prefault);
}

Expected<Segment> Segment::create_file(std::string_view dir, std::string_view name, size_t size,
                                       mode_t mode, bool prefault) {
  if (!valid_name(name)) return fail(Errc::InvalidArgument, "segment name '" + std::string(name) + "'");
  std::string path(dir);
  if (path.empty()) path = "/dev/shm";
  path += '/';
  path += name;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return tl::unexpected(system_error("creating segment " + path, errno));
  // open() applies the umask; the configured mode is what operators asked for.
  if (::fchmod(fd, mode) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    return tl::unexpected(system_error("sizing segment " + path, e));
  }
  auto s = map(fd, size, prefault);
  if (!s) {
    ::unlink(path.c_str());
    return s;
  }
  s->path_ = std::move(path);
  return s;
}

Expected<Segment> Segment::attach_fd(int fd, size_t min_size, bool require_sealed) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    return tl::unexpected(system_error("fstat of segment fd", e));
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (size < min_size) {
    ::close(fd);
    return fail(Errc::Corrupt, "segment has " + std::to_string(size) + " bytes, expected at least " +
                                   std::to_string(min_size));
  }
  if (require_sealed) {
    const int seals = ::fcntl(fd, F_GET_SEALS);
    if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
      ::close(fd);
      return fail(Errc::PermissionDenied, "segment fd is not sealed against shrinking");
    }
  }
  return map(fd, size, true);
}

Expected<Segment> Segment::attach_path(const std::string& path, size_t min_size) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return tl::unexpected(system_error("opening segment " + path, errno));
  return attach_fd(fd, min_size, false);
}

}  // namespace bus::shm
