// Length-framed messages on a stream socket: a 4-byte little-endian length, then the message.
// The control channel between busd and its agents uses it over a Unix-domain socket, with file
// descriptors (ring segments, eventfds) passed alongside a frame as SCM_RIGHTS.
//
// FrameReader is the decoder for bytes from another process: it never trusts a length beyond
// the configured maximum, never grows its buffer past it, and reports a closed or broken stream
// as an error instead of a partial frame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "bus/error.hpp"

namespace bus::sock {

inline constexpr size_t kFrameHeader = 4;
inline constexpr size_t kMaxFds = 8;

/// Incremental decoder of length-framed messages.
class FrameReader {
 public:
  explicit FrameReader(uint32_t max_frame) : max_frame_(max_frame) {}

  /// Appends bytes received from the stream; returns how many it took (fewer than offered when
  /// the buffer already holds a maximal frame: take frames with next() and feed the rest).
  /// Or read straight into room() and commit() what was read.
  size_t feed(std::span<const std::byte> bytes);
  [[nodiscard]] std::span<std::byte> room(size_t at_least = 4096);
  void commit(size_t n) noexcept { end_ += n; }

  /// The next complete frame, or WouldBlock when more bytes are needed, or TooLarge when the
  /// peer announced a frame above the maximum (the stream is then unusable: close it).
  /// The span stays valid until the next feed() or room(): next() never moves data, so a
  /// caller may collect a batch of frames before using them (the link layer does).
  [[nodiscard]] Result<std::span<const std::byte>> next() noexcept;

  /// Bytes buffered but not yet returned as frames (a peer that closes mid-frame leaves some).
  [[nodiscard]] size_t pending() const noexcept { return end_ - begin_; }

 private:
  void compact();
  uint32_t max_frame_;
  std::vector<std::byte> buf_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

/// Appends the 4-byte length of `payload` and the payload to `out`.
void append_frame(std::vector<std::byte>& out, std::span<const std::byte> payload);

/// Sends one whole frame (blocking until written; the socket may be non-blocking: it polls),
/// with up to kMaxFds descriptors attached to its first byte. Errors: Closed, System.
[[nodiscard]] Expected<void> send_frame(int fd, std::span<const std::byte> payload,
                                        std::span<const int> fds = {});

/// Reads what is available from a non-blocking socket into `reader`, collecting descriptors
/// passed with it into `fds` (up to kMaxFds; extra ones are closed). Returns bytes read:
/// 0 with Closed when the peer hung up. WouldBlock when nothing is there.
[[nodiscard]] Result<size_t> receive(int fd, FrameReader& reader, std::vector<int>* fds = nullptr);

/// After a write of `out` up to `sent`: drops what went out, all of it (cleared) or, once more
/// than `compact_after` bytes went, the prefix (a sender that keeps appending does not move the
/// rest on every write).
void drop_sent(std::vector<std::byte>& out, size_t& sent, size_t compact_after) noexcept;

}  // namespace bus::sock
