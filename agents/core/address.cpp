#include "bus/address.hpp"

#include <cstdlib>

namespace bus {

std::vector<std::string> socket_candidates(const char* bus_socket, const char* xdg_runtime_dir) {
  if (bus_socket != nullptr && *bus_socket != '\0') return {std::string(bus_socket)};
  std::vector<std::string> out;
  if (xdg_runtime_dir != nullptr && xdg_runtime_dir[0] == '/') {
    std::string p(xdg_runtime_dir);
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    if (p != "/") p += '/';
    p += kSocketFileName;
    out.push_back(std::move(p));
  }
  out.emplace_back(kSystemSocketPath);
  return out;
}

std::vector<std::string> default_socket_candidates() {
  const std::string env(kSocketEnv);
  return socket_candidates(std::getenv(env.c_str()), std::getenv("XDG_RUNTIME_DIR"));
}

std::string counters_path_for_socket(std::string_view socket_path) {
  constexpr std::string_view kSock = ".sock";
  if (socket_path.size() > kSock.size() && socket_path.ends_with(kSock)) {
    socket_path.remove_suffix(kSock.size());
  }
  std::string out(socket_path);
  out += kCountersSuffix;
  return out;
}

}  // namespace bus
