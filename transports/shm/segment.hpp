// A shared-memory object mapped into this process: the backing store of rings.
//
// Two kinds:
//  * memfd (default): anonymous, passed to the other process as an fd over SCM_RIGHTS; sealed
//    against shrinking and growing, so the other side cannot truncate it under us (which would
//    turn our next access into SIGBUS). Nothing to clean up: it dies with its last fd/mapping.
//    Mode 0600 (owner: the creator): the descriptor passed is the permission, nothing else.
//  * file under a directory (default /dev/shm, configurable): for tools that open a segment by
//    path. Created O_EXCL with the configured mode; unlinked by its creator on destruction.
//    Files cannot be sealed, so attach_path() is for trusted peers only.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "bus/error.hpp"

namespace bus::shm {

class Segment {
 public:
  Segment() = default;
  Segment(Segment&& o) noexcept;
  Segment& operator=(Segment&& o) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  /// A new sealed memfd of `size` bytes; `prefault` touches every page now so that the data
  /// path never takes a page fault. Its mode is `mode` (a memfd starts at 0777): it has no
  /// path, but /proc/<pid>/fd/<n> reopens it for whoever may look into a process that holds it.
  [[nodiscard]] static Expected<Segment> create_memfd(std::string_view name, size_t size,
                                                      bool prefault = true, mode_t mode = 0600);

  /// A new file `dir/name` of `size` bytes with permissions `mode`; unlinked on destruction.
  [[nodiscard]] static Expected<Segment> create_file(std::string_view dir, std::string_view name,
                                                     size_t size, mode_t mode = 0600,
                                                     bool prefault = true);

  /// Maps a segment received as an fd (takes ownership of `fd`). Checks that it is at least
  /// `min_size` bytes and, with require_sealed, that it is sealed against shrinking.
  [[nodiscard]] static Expected<Segment> attach_fd(int fd, size_t min_size,
                                                   bool require_sealed = true);

  /// Maps an existing file created by create_file (does not unlink it).
  [[nodiscard]] static Expected<Segment> attach_path(const std::string& path, size_t min_size);

  [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {base_, size_}; }
  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] size_t size() const noexcept { return size_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] bool valid() const noexcept { return base_ != nullptr; }

 private:
  static Expected<Segment> map(int fd, size_t size, bool prefault);
  void reset() noexcept;

  std::byte* base_ = nullptr;
  size_t size_ = 0;
  int fd_ = -1;
  std::string path_;  // set when this object created a file and must unlink it
};

}  // namespace bus::shm
