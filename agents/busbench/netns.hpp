// Network namespaces for `busbench --transport tcp|dpdk --netns`: two namespaces joined by a veth
// pair, so that a link between two busd (and the raw TCP baseline beside it) crosses a network
// device and two network stacks instead of loopback inside one.
#pragma once

#include <string>
#include <vector>

namespace bus::bench {

/// Runs a program (looked up in $PATH, then /usr/sbin and /sbin) and waits for it (up to 10 s);
/// its exit status (-1: could not run or timed out) and its stdout and stderr together. Fork only
/// while the process has one thread.
struct CommandResult {
  int status = -1;
  std::string output;
};
CommandResult run_command(const std::vector<std::string>& argv);

/// A socket made in the network namespace `netns_fd` (an open /var/run/netns/NAME; -1: the
/// calling thread's own). The calling thread is back in its own namespace on return. Throws
/// std::runtime_error naming `who` when it fails.
int socket_in_netns(int netns_fd, int domain, int type, int protocol, const char* who);

/// Two network namespaces, busbench-<pid>-a and busbench-<pid>-b, joined by a veth pair with
/// 10.x.y.1/24 in a and 10.x.y.2/24 in b (x.y from busbench's pid), loopback up in both.
/// Destroying it moves the calling thread back to the namespace it had and deletes both
/// namespaces (and with them the veth pair). SIGINT, SIGTERM, SIGHUP and SIGQUIT delete them too
/// before busbench dies of the signal; SIGKILL cannot (`ip netns del busbench-<pid>-a` then).
class NetnsPair {
 public:
  /// Creates everything; throws std::runtime_error with the reason (not root, `ip netns add`
  /// refused, ...) after removing whatever it had made. Call while the process has one thread.
  NetnsPair();
  ~NetnsPair();
  NetnsPair(const NetnsPair&) = delete;
  NetnsPair& operator=(const NetnsPair&) = delete;

  /// side 0 = a, 1 = b.
  [[nodiscard]] const std::string& name(int side) const noexcept { return name_[side]; }
  [[nodiscard]] const std::string& address(int side) const noexcept { return addr_[side]; }
  /// The side's end of the veth pair ("bb1234a").
  [[nodiscard]] const std::string& veth(int side) const noexcept { return veth_[side]; }
  /// An address for the side on a /24 neither namespace's kernel has (10.x.y^128.1 and .2): a
  /// DPDK link's own, so that the kernels, which see its frames on the veth too, ignore them.
  [[nodiscard]] const std::string& foreign_address(int side) const noexcept { return foreign_[side]; }
  /// An open descriptor of the side's namespace (for setns and socket_in_netns).
  [[nodiscard]] int fd(int side) const noexcept { return fd_[side]; }
  /// Moves the calling thread into the side's namespace (in a forked child before it execs or
  /// runs an agent, or busbench itself). Throws std::runtime_error.
  void enter(int side) const;
  /// "namespaces busbench-1234-a (10.4.210.1) and busbench-1234-b (10.4.210.2), veth bb1234a/bb1234b"
  [[nodiscard]] std::string describe() const;

 private:
  void remove() noexcept;

  std::string name_[2];
  std::string veth_[2];
  std::string addr_[2];
  std::string foreign_[2];
  int fd_[2] = {-1, -1};
  int home_ = -1;  // the namespace busbench started in
  bool made_[2] = {false, false};
};

}  // namespace bus::bench
