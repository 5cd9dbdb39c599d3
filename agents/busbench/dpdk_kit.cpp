#include "dpdk_kit.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "bus/clock.hpp"
#include "netns.hpp"  // run_command
#include "proc.hpp"

namespace bus::bench {
namespace fs = std::filesystem;
namespace {

// The number after "key": in a one-line JSON object of numbers (dpdk_pingpong's); false if absent.
bool json_number(const std::string& line, const char* key, double& out) {
  const std::string k = std::string("\"").append(key).append("\":");
  const size_t at = line.find(k);
  if (at == std::string::npos) return false;
  const char* p = line.c_str() + at + k.size();
  char* end = nullptr;
  out = std::strtod(p, &end);
  return end != p;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

}  // namespace

std::string eal_runtime_dir(const std::string& prefix) {
  std::string base = "/var/run";
  if (::getuid() != 0) {
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    base = xdg != nullptr && *xdg != '\0' ? xdg : "/tmp";
  }
  return base.append("/dpdk/").append(prefix);
}

void remove_eal_runtime_dir(const std::string& prefix) noexcept {
  if (prefix.rfind("busbench-", 0) != 0) return;
  try {
    std::error_code ec;
    fs::remove_all(eal_runtime_dir(prefix), ec);
  } catch (...) {  // (a path that cannot be built: nothing to remove)
  }
}

std::string dpdk_pingpong_tool(std::string& why_not) {
#ifdef BUSBENCH_DPDK_PINGPONG
  const std::string path = BUSBENCH_DPDK_PINGPONG;
  if (::access(path.c_str(), X_OK) == 0) return path;
  why_not = "dpdk_pingpong is not at " + path + " (build it: ninja -C <build> transports/dpdk/dpdk_pingpong)";
  return {};
#else
  why_not = "this busbench was built without DPDK (no dpdk_pingpong)";
  return {};
#endif
}

MemifRtt rtt_memif(const std::string& tool, const MemifParams& p) {
  char tmpl[] = "/tmp/busbench-memif-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error(std::string("mkdtemp: ").append(std::strerror(errno)));
  const std::string dir = tmpl;
  const std::string socket = dir + "/memif.sock";
  const std::string server_log = dir + "/server.log";
  const std::string prefix = "busbench-" + std::to_string(::getpid()) + "-memif-";
  auto cleanup = [&] {
    std::error_code ec;
    fs::remove_all(dir, ec);
    remove_eal_runtime_dir(prefix + "server");
    remove_eal_runtime_dir(prefix + "client");
  };
  // The server first, and the client only once the server's socket is there: a memif client
  // connects when its port starts and not again (its start succeeds without a server, and its
  // link then never comes up).
  const std::vector<std::string> server_argv = {tool, "--role", "server", "--socket", socket, "--lcore",
                                                std::to_string(p.server_lcore), "--file-prefix", prefix + "server"};
  Child server = Child::fork([&]() -> int {
    const int fd = ::open(server_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    std::vector<char*> args;
    for (const auto& a : server_argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", tool.c_str(), std::strerror(errno));
    return 127;
  });
  const uint64_t end = clock::mono_ns() + 10'000'000'000ull;
  while (::access(socket.c_str(), F_OK) != 0) {
    if (!server.alive() || clock::mono_ns() > end) {
      std::string why = "raw memif ping-pong (" + tool + "): the server ";
      why.append(server.alive() ? "made no memif socket within 10 s" : "exited").append(":\n").append(read_text(server_log));
      cleanup();
      throw std::runtime_error(why);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const CommandResult client =
      run_command({tool, "--role", "client", "--socket", socket, "--count", std::to_string(p.rounds), "--warmup",
                   std::to_string(p.warmup), "--size", std::to_string(p.frame_bytes), "--lcore",
                   std::to_string(p.client_lcore), "--file-prefix", prefix + "client", "--json"});
  // The server exits after the client's final frame (or 10 s without one: not waited for).
  const int server_status = server.wait(client.status == 0 ? 3000 : 0);
  if (server_status < 0) server.kill();
  MemifRtt r;
  const size_t at = client.output.find("{\"tool\":\"dpdk_pingpong\"");  // EAL logs to the same output
  const std::string line = at == std::string::npos ? "" : client.output.substr(at, client.output.find('\n', at) - at);
  double count = 0;
  const bool parsed = !line.empty() && json_number(line, "p50_ns", r.p50) && json_number(line, "p90_ns", r.p90) &&
                      json_number(line, "p99_ns", r.p99) && json_number(line, "p999_ns", r.p999) &&
                      json_number(line, "max_ns", r.max) &&
                      json_number(line, "round_trips_per_s", r.round_trips_per_s) && json_number(line, "count", count);
  if (client.status != 0 || !parsed) {
    std::string why = "raw memif ping-pong (" + tool + "): the client ";
    why.append(client.status != 0 ? "failed (status " + std::to_string(client.status) + ")" : "printed no JSON line")
        .append(":\n")
        .append(client.output)
        .append("--- the server's output:\n")
        .append(read_text(server_log));
    cleanup();
    throw std::runtime_error(why);
  }
  r.count = static_cast<uint64_t>(count);
  cleanup();
  return r;
}

}  // namespace bus::bench
