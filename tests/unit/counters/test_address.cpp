// Where busd is found (bus/address.hpp): the same lookup for the SDK, busd and busctl.
#include <catch2/catch.hpp>

#include <cstdlib>

#include "bus/address.hpp"

using namespace bus;
using V = std::vector<std::string>;

TEST_CASE("socket candidates follow BUS_SOCKET, XDG_RUNTIME_DIR, /run/busd", "[counters][address]") {
  CHECK(socket_candidates(nullptr, nullptr) == V{"/run/busd/busd.sock"});
  CHECK(socket_candidates("", "") == V{"/run/busd/busd.sock"});
  CHECK(socket_candidates(nullptr, "/run/user/1000") == V{"/run/user/1000/busd.sock", "/run/busd/busd.sock"});
  CHECK(socket_candidates(nullptr, "/run/user/1000//") == V{"/run/user/1000/busd.sock", "/run/busd/busd.sock"});
  CHECK(socket_candidates(nullptr, "relative/dir") == V{"/run/busd/busd.sock"});  // XDG: ignored
  CHECK(socket_candidates(nullptr, "/") == V{"/busd.sock", "/run/busd/busd.sock"});
  // An explicit socket is the only candidate: never fall back to another bus.
  CHECK(socket_candidates("/tmp/test.sock", "/run/user/1000") == V{"/tmp/test.sock"});
}

TEST_CASE("default_socket_candidates reads the environment", "[counters][address]") {
  ::setenv("BUS_SOCKET", "/x/y.sock", 1);
  CHECK(default_socket_candidates() == V{"/x/y.sock"});
  ::unsetenv("BUS_SOCKET");
  ::setenv("XDG_RUNTIME_DIR", "/run/user/42", 1);
  CHECK(default_socket_candidates() == V{"/run/user/42/busd.sock", "/run/busd/busd.sock"});
  ::unsetenv("XDG_RUNTIME_DIR");
  CHECK(default_socket_candidates() == V{"/run/busd/busd.sock"});
}

TEST_CASE("the counters page sits beside the socket", "[counters][address]") {
  CHECK(counters_path_for_socket("/run/busd/busd.sock") == "/run/busd/busd.counters");
  CHECK(counters_path_for_socket("/tmp/a.b.sock") == "/tmp/a.b.counters");
  CHECK(counters_path_for_socket("/tmp/socket") == "/tmp/socket.counters");
  CHECK(counters_path_for_socket("/tmp/x.sock.d/s") == "/tmp/x.sock.d/s.counters");
  CHECK(counters_path_for_socket("rel.sock") == "rel.counters");
}
