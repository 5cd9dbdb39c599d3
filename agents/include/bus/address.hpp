// Where busd is found on this host. Clients (the SDK), busctl and busd itself use these, so that
// all of them agree on the control socket and on the counters page next to it.
//
//   1. $BUS_SOCKET, when set and not empty: the only candidate (an explicit choice never falls
//      back to another bus);
//   2. otherwise $XDG_RUNTIME_DIR/busd.sock (a per-user busd; only when the variable is an
//      absolute path, as the XDG spec asks), then /run/busd/busd.sock (the system busd).
//
// The counters page sits beside the socket: /run/busd/busd.sock -> /run/busd/busd.counters.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace bus {

inline constexpr std::string_view kSocketEnv = "BUS_SOCKET";
inline constexpr std::string_view kSocketFileName = "busd.sock";
inline constexpr std::string_view kSystemSocketPath = "/run/busd/busd.sock";
inline constexpr std::string_view kCountersSuffix = ".counters";

/// Socket paths to try, in order, from these environment values (nullptr: unset).
[[nodiscard]] std::vector<std::string> socket_candidates(const char* bus_socket,
                                                         const char* xdg_runtime_dir);

/// socket_candidates() from this process's environment ($BUS_SOCKET, $XDG_RUNTIME_DIR).
[[nodiscard]] std::vector<std::string> default_socket_candidates();

/// The counters page of the busd listening on `socket_path`: its ".sock" suffix replaced by
/// ".counters", or ".counters" appended when it has no such suffix.
[[nodiscard]] std::string counters_path_for_socket(std::string_view socket_path);

}  // namespace bus
