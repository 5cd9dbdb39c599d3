// kind = "rdma" [[links]] and [cluster] rdma_listen: the accepted forms, each error one exact
// line, the ring derived from max_message_size, and the render() round trip. When busd is built
// with RDMA (BUS_HAVE_RDMA), every option set the config accepts also passes rdma::check().
#include <catch2/catch.hpp>

#include <string>

#include "config/config.hpp"

#if BUS_HAVE_RDMA
#include "rdma/ibv_verbs.hpp"  // check_port_gid; rdma/verbs.hpp: check
#endif

using namespace bus::config;

namespace {

std::string error_of(std::string_view doc) {
  auto c = parse(doc, "busd.toml");
  return c ? std::string("(parsed)") : c.error().detail();
}

Config parsed(std::string_view doc) {
  auto c = parse(doc, "busd.toml");
  INFO(doc);
  REQUIRE(c);
  return *c;
}

constexpr std::string_view kFull = R"([cluster]
rdma_listen = "10.0.0.1:7471"

[[links]]
kind = "rdma"
peer = "10.0.0.2:7471"
local = "10.0.0.1"
device = "mlx5_0"
ring_bytes = 16_777_216
send_depth = 512
recv_depth = 128
signal_every = 8
inline_bytes = 0
batch_wrs = 64
ib_port = 1
gid_index = 3

[[links]]
peer = "10.0.0.3:7400"

[[links]]
peer = "[fe80::1%eth0]:7471"
kind = "rdma"
local = "fe80::2"
)";

}  // namespace

TEST_CASE("kind = \"rdma\" links: accepted forms", "[config][rdma]") {
  const Config c = parsed(kFull);
  CHECK(c.cluster.rdma_listen == "10.0.0.1:7471");
  REQUIRE(c.links.size() == 3);
  const LinkConfig& a = c.links[0];
  CHECK(a.kind == "rdma");
  CHECK(a.peer == "10.0.0.2:7471");
  CHECK(a.local == "10.0.0.1");
  CHECK(a.device == "mlx5_0");
  CHECK(a.ring_bytes == 16u << 20);
  CHECK(a.send_depth == 512);
  CHECK(a.recv_depth == 128);
  CHECK(a.signal_every == 8);
  CHECK(a.inline_bytes == 0);
  CHECK(a.batch_wrs == 64);
  CHECK(a.ib_port == 1);
  CHECK(a.gid_index == 3);
  CHECK(c.links[1].kind == "tcp");
  const LinkConfig& b = c.links[2];
  CHECK(b.kind == "rdma");
  CHECK(b.local == "fe80::2");
  CHECK(b.device.empty());
  // Defaults; the ring derived for the default max_message_size (1 MiB): 4 x (1 MiB + 4100)
  // rounded up to a power of two.
  CHECK(b.send_depth == 256);
  CHECK(b.recv_depth == 256);
  CHECK(b.signal_every == 16);
  CHECK(b.inline_bytes == 128);
  CHECK(b.batch_wrs == 32);
  CHECK(b.ib_port == 0);      // any port
  CHECK(b.gid_index == -1);   // any GID index
  CHECK(b.ring_bytes == 8u << 20);

  SECTION("the derived ring follows max_message_size, at least 1 MiB; 0 derives too") {
    CHECK(parsed("[limits]\nmax_message_size = 1024\n[[links]]\nkind = \"rdma\"\npeer = \"h:1\"")
              .links[0].ring_bytes == 1u << 20);
    CHECK(parsed("[[links]]\nkind = \"rdma\"\npeer = \"h:1\"\nring_bytes = 0\n[limits]\nmax_message_size = 4_194_304")
              .links[0].ring_bytes == 32u << 20);
    // The least ring for max_message_size 1024: 4 x (1024 + 4100) = 20496 (not a power of two).
    CHECK(parsed("[limits]\nmax_message_size = 1024\n[[links]]\nkind = \"rdma\"\npeer = \"h:1\"\nring_bytes = 20496")
              .links[0].ring_bytes == 20496);
  }
  SECTION("the bounds of each number") {
    const Config e = parsed(
        "[limits]\nmax_message_size = 1024\n[[links]]\nkind = \"rdma\"\npeer = \"h:1\"\nring_bytes = 1_073_741_824\n"
        "send_depth = 4\nrecv_depth = 32768\nsignal_every = 2\ninline_bytes = 1024\nbatch_wrs = 4\n"
        "[[links]]\nkind = \"rdma\"\npeer = \"h:2\"\nsend_depth = 32768\nrecv_depth = 4\nsignal_every = 16384\n"
        "batch_wrs = 32768\nlocal = \"\"\ndevice = \"\"");
    CHECK(e.links[0].ring_bytes == 1u << 30);
    CHECK(e.links[0].send_depth == 4);
    CHECK(e.links[1].signal_every == 16384);
    CHECK(e.links[1].batch_wrs == 32768);
  }
  SECTION("ib_port and gid_index: their bounds, and 0 / -1 written out") {
    const Config e = parsed(
        "[[links]]\nkind = \"rdma\"\npeer = \"h:1\"\nib_port = 255\ngid_index = 255\n"
        "[[links]]\nkind = \"rdma\"\npeer = \"h:2\"\nib_port = 0\ngid_index = -1\n"
        "[[links]]\nkind = \"rdma\"\npeer = \"h:3\"\ngid_index = 0\n");
    CHECK(e.links[0].ib_port == 255);
    CHECK(e.links[0].gid_index == 255);
    CHECK(e.links[1].ib_port == 0);
    CHECK(e.links[1].gid_index == -1);
    CHECK(e.links[2].ib_port == 0);
    CHECK(e.links[2].gid_index == 0);
  }
  SECTION("rdma_listen forms") {
    CHECK(parsed("[cluster]\nrdma_listen = \"[::]:7471\"").cluster.rdma_listen == "[::]:7471");
    CHECK(parsed("[cluster]\nrdma_listen = \"\"").cluster.rdma_listen.empty());
    CHECK(defaults().cluster.rdma_listen.empty());
  }
}

TEST_CASE("kind = \"rdma\" links: each error is one exact line", "[config][rdma]") {
  const std::string head = "[[links]]\nkind = \"rdma\"\npeer = \"h:1\"\n";
  SECTION("numbers out of range") {
    CHECK(error_of(head + "send_depth = 3") ==
          "busd.toml:4: links[0].send_depth: must be an integer in [4, 32768], got 3");
    CHECK(error_of(head + "recv_depth = 32769") ==
          "busd.toml:4: links[0].recv_depth: must be an integer in [4, 32768], got 32769");
    CHECK(error_of(head + "inline_bytes = 1025") ==
          "busd.toml:4: links[0].inline_bytes: must be an integer in [0, 1024], got 1025");
    CHECK(error_of(head + "ring_bytes = 4095") ==
          "busd.toml:4: links[0].ring_bytes: must be an integer in [4096, 1073741824], got 4095");
    CHECK(error_of(head + "signal_every = 0") ==
          "busd.toml:4: links[0].signal_every: must be an integer in [1, 32768], got 0");
    CHECK(error_of(head + "batch_wrs = \"8\"") ==
          "busd.toml:4: links[0].batch_wrs: must be an integer in [1, 32768], got \"8\"");
    CHECK(error_of(head + "ib_port = 256") ==
          "busd.toml:4: links[0].ib_port: must be an integer in [0, 255], got 256");
    CHECK(error_of(head + "ib_port = -1") ==
          "busd.toml:4: links[0].ib_port: must be an integer in [0, 255], got -1");
    CHECK(error_of(head + "gid_index = -2") ==
          "busd.toml:4: links[0].gid_index: must be an integer in [-1, 255], got -2");
    CHECK(error_of(head + "gid_index = 256") ==
          "busd.toml:4: links[0].gid_index: must be an integer in [-1, 255], got 256");
    CHECK(error_of(head + "gid_index = \"3\"") ==
          "busd.toml:4: links[0].gid_index: must be an integer in [-1, 255], got \"3\"");
  }
  SECTION("numbers against each other") {
    CHECK(error_of(head + "send_depth = 64\nsignal_every = 33") ==
          "busd.toml:5: links[0].signal_every: 33 must be at most send_depth / 2 = 32");
    CHECK(error_of(head + "send_depth = 64\nbatch_wrs = 65") ==
          "busd.toml:5: links[0].batch_wrs: 65 must be at most send_depth = 64");
    // The defaults (signal_every 16, batch_wrs 32) against a small send_depth.
    CHECK(error_of(head + "send_depth = 16") ==
          "busd.toml:4: links[0].send_depth: 16 must be at least 2 x signal_every = 32");
    CHECK(error_of(head + "send_depth = 16\nsignal_every = 8") ==
          "busd.toml:4: links[0].send_depth: 16 must be at least batch_wrs = 32");
    CHECK(error_of(head + "ring_bytes = 1_048_576") ==
          "busd.toml:4: links[0].ring_bytes: 1048576 is too small for limits.max_message_size = 1048576 "
          "(needs at least 4 x (max_message_size + 4100) = 4210704, or 0 to derive it)");
  }
  SECTION("peer, local, device") {
    CHECK(error_of("[[links]]\nkind = \"rdma\"") ==
          "busd.toml:1: links[0]: peer is required for kind = \"rdma\" (\"host:port\": the peer busd's "
          "[cluster] rdma_listen)");
    CHECK(error_of("[[links]]\nkind = \"rdma\"\npeer = \"h\"") ==
          "busd.toml:3: links[0].peer: must be \"host:port\" or \"[v6]:port\" (the peer's [cluster] "
          "rdma_listen), got \"h\"");
    CHECK(error_of("[[links]]\nkind = \"rdma\"\npeer = \"h:0\"") ==
          "busd.toml:3: links[0].peer: port must be in [1, 65535], got \"h:0\"");
    CHECK(error_of(head + "[[links]]\nkind = \"rdma\"\npeer = \"H:01\"") ==
          "busd.toml:6: links[1].peer: \"H:01\" is already the peer of links[0] (one link per peer)");
    for (std::string_view bad : {"h", "10.0.0.1:7471", "10.0.0.256", "[::1]"}) {
      INFO(bad);
      std::string doc = head + "local = \"";
      doc += bad;
      doc += '"';
      std::string expected =
          "busd.toml:4: links[0].local: must be \"\" (any) or a numeric IPv4 or IPv6 address of the RDMA "
          "interface to dial from (no port), got \"";
      expected += bad;
      expected += '"';
      CHECK(error_of(doc) == expected);
    }
    CHECK(error_of(head + "device = \"mlx5 0\"") ==
          "busd.toml:4: links[0].device: must be \"\" (any) or a device name as ibv_devices lists it "
          "(\"mlx5_0\", \"rxe0\"), got \"mlx5 0\"");
  }
  SECTION("keys of other kinds on an rdma link, and rdma keys on other links") {
    CHECK(error_of(head + "tls = true") ==
          "busd.toml:4: links[0].tls: only for kind = \"tcp\" (this link is kind = \"rdma\")");
    CHECK(error_of(head + "token = \"0123456789abcdef\"") ==
          "busd.toml:4: links[0].token: only for kind = \"tcp\" (this link is kind = \"rdma\")");
    CHECK(error_of(head + "window = 64") ==
          "busd.toml:4: links[0].window: only for kind = \"dpdk\" (this link is kind = \"rdma\")");
    CHECK(error_of(head + "port = \"p0\"") ==
          "busd.toml:4: links[0].port: only for kind = \"dpdk\" (this link is kind = \"rdma\")");
    CHECK(error_of("[[links]]\npeer = \"h:1\"\nsend_depth = 64") ==
          "busd.toml:3: links[0].send_depth: only for kind = \"rdma\" (this link has no kind: \"tcp\")");
    CHECK(error_of("[[links]]\nkind = \"tcp\"\npeer = \"h:1\"\ndevice = \"rxe0\"") ==
          "busd.toml:4: links[0].device: only for kind = \"rdma\" (this link is kind = \"tcp\")");
    CHECK(error_of("[[links]]\npeer = \"h:1\"\ngid_index = 1") ==
          "busd.toml:3: links[0].gid_index: only for kind = \"rdma\" (this link has no kind: \"tcp\")");
    CHECK(error_of("[[links]]\nkind = \"tcp\"\npeer = \"h:1\"\nib_port = 1") ==
          "busd.toml:4: links[0].ib_port: only for kind = \"rdma\" (this link is kind = \"tcp\")");
    CHECK(error_of("[[links]]\nkind = \"dpdk\"\nring_bytes = 65536\nport = \"p0\"\nlocal = \"1.2.3.4:1\"\n"
                   "peer = \"1.2.3.5:1\"\n[dpdk]\neal = [\"-l\", \"0\"]\n[[dpdk.ports]]\nname = \"p0\"") ==
          "busd.toml:3: links[0].ring_bytes: only for kind = \"rdma\" (this link is kind = \"dpdk\")");
  }
  SECTION("rdma_listen") {
    CHECK(error_of("[cluster]\nrdma_listen = \"7471\"") ==
          "busd.toml:2: cluster.rdma_listen: must be \"\" (none) or \"addr:port\" / \"[v6]:port\" (an "
          "address of the RDMA interface), got \"7471\"");
    CHECK(error_of("[cluster]\nrdma_listen = \"10.0.0.1:70000\"") ==
          "busd.toml:2: cluster.rdma_listen: port must be in [1, 65535], got \"10.0.0.1:70000\"");
  }
}

TEST_CASE("kind = \"rdma\" links: render round trip", "[config][rdma]") {
  const Config c = parsed(kFull);
  const std::string doc = render(c);
  INFO(doc);
  auto back = parse(doc, "rendered");
  REQUIRE(back);
  CHECK(*back == c);
  CHECK(doc.find("rdma_listen = \"10.0.0.1:7471\"") != std::string::npos);
  CHECK(doc.find("\nib_port = 1") != std::string::npos);
  CHECK(doc.find("\ngid_index = 3") != std::string::npos);
  CHECK(doc.find("\ngid_index = -1") != std::string::npos);  // links[2]: written out, parsed back
  // The default document explains kind = "rdma" and still parses to the defaults.
  const std::string_view text = default_config_text();
  CHECK(text.find("# kind = \"rdma\": RDMA WRITE") != std::string_view::npos);
  CHECK(text.find("ib_port 0, gid_index -1") != std::string_view::npos);
  CHECK(text.find("\nrdma_listen = \"\"") != std::string_view::npos);
  auto d = parse(text, "<default>");
  REQUIRE(d);
  CHECK(*d == defaults());
  // rdma keys need a restart.
  std::vector<std::string> restart;
  Config changed = c;
  changed.links[0].send_depth = 1024;
  changed.cluster.rdma_listen = "10.0.0.1:7472";
  CHECK(reloadable_diff(c, changed, &restart).empty());
  CHECK(restart == std::vector<std::string>{"cluster.rdma_listen", "links"});
  restart.clear();
  changed = c;
  changed.links[0].gid_index = 2;
  CHECK(reloadable_diff(c, changed, &restart).empty());
  CHECK(restart == std::vector<std::string>{"links"});
}

#if BUS_HAVE_RDMA
TEST_CASE("kind = \"rdma\" links: what the config accepts, rdma::check() accepts", "[config][rdma]") {
  const Config c = parsed(
      "[limits]\nmax_message_size = 1024\n"
      "[[links]]\nkind = \"rdma\"\npeer = \"h:1\"\nsend_depth = 4\nsignal_every = 2\nbatch_wrs = 4\n"
      "inline_bytes = 1024\nring_bytes = 20496\n"
      "[[links]]\nkind = \"rdma\"\npeer = \"h:2\"\nsend_depth = 32768\nrecv_depth = 32768\nsignal_every = 16384\n"
      "batch_wrs = 32768\nring_bytes = 1_073_741_824\n"
      "[[links]]\nkind = \"rdma\"\npeer = \"h:3\"\n"
      "[[links]]\nkind = \"rdma\"\npeer = \"h:4\"\nib_port = 255\ngid_index = 255\n"
      "[[links]]\nkind = \"rdma\"\npeer = \"h:5\"\nib_port = 1\ngid_index = 0");
  for (const LinkConfig& l : c.links) {
    bus::rdma::Options o;
    o.ring_bytes = l.ring_bytes;
    o.max_frame = c.limits.max_message_size + 4096;
    o.send_depth = l.send_depth;
    o.recv_depth = l.recv_depth;
    o.signal_every = l.signal_every;
    o.inline_bytes = l.inline_bytes;
    o.batch_wrs = l.batch_wrs;
    o.ib_port = l.ib_port;
    o.gid_index = l.gid_index;
    INFO(l.peer);
    CHECK(bus::rdma::check(o));
    CHECK(bus::rdma::check_port_gid(o));
  }
  // ... and one byte less of ring is refused by both.
  bus::rdma::Options o;
  o.max_frame = 1024 + 4096;
  o.ring_bytes = 20495;
  CHECK(!bus::rdma::check(o));
  CHECK(parse("[limits]\nmax_message_size = 1024\n[[links]]\nkind = \"rdma\"\npeer = \"h:1\"\nring_bytes = 20495",
              "busd.toml")
            .has_value() == false);
}
#endif
