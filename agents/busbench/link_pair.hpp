// Two private busd linked over TCP, for `busbench --transport tcp`: busd A listens, busd B dials
// it (the [[links]] table is on B's side only). On loopback (127.0.0.1, a port each) or, with
// --netns, each in a network namespace of its own (NetnsPair), A listening on its veth address.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "baselines.hpp"
#include "netns.hpp"
#include "scenarios.hpp"
#include "target.hpp"

namespace bus::bench {

enum Side : int { kSideA = 0, kSideB = 1 };

class LinkedPair {
 public:
  /// Starts busd A, then busd B, and waits until both count the link up. Throws
  /// std::runtime_error with the reason (and the busd logs); removes what it made.
  explicit LinkedPair(const BusOptions& o);
  ~LinkedPair();
  LinkedPair(const LinkedPair&) = delete;
  LinkedPair& operator=(const LinkedPair&) = delete;

  [[nodiscard]] BusTarget& busd(Side s) noexcept { return *busd_[s]; }
  /// Moves the calling thread into side s's network namespace (nothing on loopback): a forked
  /// child before it runs an agent on that side, or busbench itself.
  void enter(Side s) const;
  /// The raw TCP baselines' path: the listening socket on `listener`'s side (its link address,
  /// its namespace), the connecting one on the other side.
  [[nodiscard]] TcpPath tcp_path(Side listener) const;
  [[nodiscard]] const std::string& ip(Side s) const noexcept { return ip_[s]; }
  /// One line: where the link runs ("loopback: busd B dials busd A at 127.0.0.1:40123").
  [[nodiscard]] std::string where() const;
  /// Throws unless both busd are alive and the link is up (after a run: it must not have
  /// broken under it).
  void check(const std::string& when);

 private:
  std::unique_ptr<NetnsPair> ns_;
  std::unique_ptr<BusTarget> busd_[2];
  std::string ip_[2];
  uint16_t port_[2] = {0, 0};
};

}  // namespace bus::bench
