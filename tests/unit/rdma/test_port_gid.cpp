// ib_port and gid_index of a kind = "rdma" link: with rdma_cm the device, port and source GID
// come from resolving the addresses, so the two keys check what it resolved (check_resolved():
// the port rdma_cm chose, that port's GID table, the source GID). The decision and its one-line
// message, without a device: RoCE tables (IPv4-mapped GIDs, each address once per RoCE version),
// an InfiniBand table, the table's end, empty entries, no source GID (iWARP). Under 1 s.
#include <arpa/inet.h>

#include <catch2/catch.hpp>

#include <string>

#include "rdma/ibv_verbs.hpp"

using bus::rdma::check_port_gid;
using bus::rdma::check_resolved;
using bus::rdma::Options;
using bus::rdma::Resolved;

namespace {

ibv_gid gid6(const char* text) {
  ibv_gid g{};
  REQUIRE(::inet_pton(AF_INET6, text, g.raw) == 1);
  return g;
}

// RoCE's GID of an IPv4 address: ::ffff:a.b.c.d.
ibv_gid roce(const char* v4) { return gid6((std::string("::ffff:") + v4).c_str()); }

// A Soft-RoCE port as `rdma link add rxe0 type rxe netdev eth0` makes it on a host with
// 10.0.0.1 and 10.0.0.3: the link-local GID and each address, once for RoCE v1 and once for
// v2; the rest of the table empty.
Resolved rxe(const char* local, ibv_gid sgid) {
  Resolved r;
  r.device = "rxe0";
  r.port = 1;
  r.local = local;
  r.sgid = sgid;
  r.gids.resize(16);
  r.gids[0] = gid6("fe80::5054:ff:fe12:3456");
  r.gids[1] = gid6("fe80::5054:ff:fe12:3456");
  r.gids[2] = roce("10.0.0.1");
  r.gids[3] = roce("10.0.0.1");
  r.gids[4] = roce("10.0.0.3");
  r.gids[5] = roce("10.0.0.3");
  return r;
}

Options with(uint32_t ib_port, int32_t gid_index) {
  Options o;
  o.ib_port = ib_port;
  o.gid_index = gid_index;
  return o;
}

const std::string kWho = "rdma link to 10.0.0.2:7471";

}  // namespace

TEST_CASE("ib_port and gid_index: not set, nothing is checked", "[rdma][gid]") {
  const Options o;
  CHECK(o.ib_port == 0);
  CHECK(o.gid_index == -1);
  // Whatever rdma_cm resolved, even a source GID the table lacks.
  Resolved r = rxe("10.0.0.9", roce("10.0.0.9"));
  r.port = 7;
  CHECK(check_resolved(o, r, kWho).empty());
  CHECK(check_resolved(o, Resolved{}, kWho).empty());
}

TEST_CASE("ib_port and gid_index: what rdma_cm resolved agrees", "[rdma][gid]") {
  const Resolved r = rxe("10.0.0.1", roce("10.0.0.1"));
  CHECK(check_resolved(with(1, -1), r, kWho).empty());
  // The address sits at 2 (RoCE v1) and 3 (v2): either index agrees.
  CHECK(check_resolved(with(0, 2), r, kWho).empty());
  CHECK(check_resolved(with(0, 3), r, kWho).empty());
  CHECK(check_resolved(with(1, 3), r, kWho).empty());
  // The other address of the port.
  CHECK(check_resolved(with(1, 5), rxe("10.0.0.3", roce("10.0.0.3")), kWho).empty());
  // InfiniBand: one GID per port, at index 0.
  Resolved ib;
  ib.device = "mlx5_0";
  ib.port = 2;
  ib.local = "192.168.100.5";
  ib.gids = {gid6("fe80::2:c903:1:2345"), ibv_gid{}};
  ib.sgid = gid6("fe80::2:c903:1:2345");
  CHECK(check_resolved(with(2, 0), ib, kWho).empty());
}

TEST_CASE("ib_port and gid_index: a mismatch is one line naming what rdma_cm chose", "[rdma][gid]") {
  const Resolved r = rxe("10.0.0.1", roce("10.0.0.1"));
  SECTION("the GID index: the address whose GID is there") {
    CHECK(check_resolved(with(0, 4), r, kWho) ==
          "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.1 to rxe0 port 1 GID indices 2 and 3, the "
          "config says gid_index = 4: set local to the address whose GID is at index 4 (10.0.0.3)");
    // Set together with a port that agrees: the same line.
    CHECK(check_resolved(with(1, 5), r, kWho) ==
          "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.1 to rxe0 port 1 GID indices 2 and 3, the "
          "config says gid_index = 5: set local to the address whose GID is at index 5 (10.0.0.3)");
    // A GID that is no IPv4 address (the link-local one): named as a GID.
    CHECK(check_resolved(with(0, 0), r, kWho) ==
          "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.1 to rxe0 port 1 GID indices 2 and 3, the "
          "config says gid_index = 0: set local to the address whose GID is at index 0 (GID fe80::5054:ff:fe12:3456)");
  }
  SECTION("a single index, as on InfiniBand or a table with one entry per address") {
    Resolved one = r;
    one.gids[3] = ibv_gid{};
    CHECK(check_resolved(with(0, 3), one, "rdma link to h:1") ==
          "rdma link to h:1: rdma_cm resolved local 10.0.0.1 to rxe0 port 1 GID index 2, the config says "
          "gid_index = 3, an empty entry of that port's GID table: set local to an address whose GID the port "
          "lists, or gid_index = -1");
  }
  SECTION("three indices") {
    Resolved three = r;
    three.gids[7] = roce("10.0.0.1");
    CHECK(check_resolved(with(0, 4), three, kWho).find(" GID indices 2, 3 and 7, the config says gid_index = 4") !=
          std::string::npos);
  }
  SECTION("beyond the port's GID table") {
    CHECK(check_resolved(with(0, 16), r, kWho) ==
          "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.1 to rxe0 port 1 GID indices 2 and 3, the "
          "config says gid_index = 16, but that port's GID table has 16 entries (0..15)");
    Resolved none = r;
    none.gids.clear();
    CHECK(check_resolved(with(0, 0), none, kWho) ==
          "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.1 to rxe0 port 1 GID ::ffff:10.0.0.1 (not in "
          "that port's GID table of 0 entries), the config says gid_index = 0, but that port's GID table has 0 "
          "entries");
  }
  SECTION("the source GID is not in the table") {
    const Resolved stray = rxe("10.0.0.9", roce("10.0.0.9"));
    CHECK(check_resolved(with(0, 2), stray, kWho) ==
          "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.9 to rxe0 port 1 GID ::ffff:10.0.0.9 (not in "
          "that port's GID table of 16 entries), the config says gid_index = 2: set local to the address whose GID "
          "is at index 2 (10.0.0.1)");
  }
  SECTION("no source GID (iWARP): a set gid_index cannot agree") {
    Resolved iw = r;
    iw.sgid = ibv_gid{};
    iw.device = "siw0";
    CHECK(check_resolved(with(0, 2), iw, kWho) ==
          "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.1 to siw0 port 1 with no source GID (an iWARP "
          "device has none to check), the config says gid_index = 2: set local to the address whose GID is at "
          "index 2 (10.0.0.1)");
    // ib_port alone still checks.
    CHECK(check_resolved(with(1, -1), iw, kWho).empty());
  }
  SECTION("the port: named alone (the GID table is that of another port)") {
    CHECK(check_resolved(with(2, -1), r, kWho) ==
          "rdma link to 10.0.0.2:7471: rdma_cm resolved local 10.0.0.1 to rxe0 port 1 GID indices 2 and 3, the "
          "config says ib_port = 2: set local to an address of the interface on port 2 (or ib_port = 0 to take "
          "the port rdma_cm resolves)");
    CHECK(check_resolved(with(2, 4), r, kWho) == check_resolved(with(2, -1), r, kWho));
    CHECK(check_resolved(with(2, 2), r, kWho) == check_resolved(with(2, -1), r, kWho));
  }
  SECTION("the accepting side, and a local address rdma_cm did not report") {
    Resolved any = r;
    any.local.clear();
    CHECK(check_resolved(with(0, 5), any, "rdma connection from 10.0.0.2:40000") ==
          "rdma connection from 10.0.0.2:40000: rdma_cm resolved local (any) to rxe0 port 1 GID indices 2 and 3, "
          "the config says gid_index = 5: set local to the address whose GID is at index 5 (10.0.0.3)");
  }
}

TEST_CASE("ib_port and gid_index: ranges", "[rdma][gid]") {
  CHECK(check_port_gid(with(0, -1)));
  CHECK(check_port_gid(with(255, 255)));
  CHECK(check_port_gid(with(1, 0)));
  auto bad_port = check_port_gid(with(256, -1));
  REQUIRE(!bad_port);
  CHECK(bad_port.error().detail() == "rdma ib_port must be 0 (any) or 1..255, got 256");
  auto bad_low = check_port_gid(with(0, -2));
  REQUIRE(!bad_low);
  CHECK(bad_low.error().detail() == "rdma gid_index must be -1 (any) or 0..255, got -2");
  auto bad_high = check_port_gid(with(0, 256));
  REQUIRE(!bad_high);
  CHECK(bad_high.error().detail() == "rdma gid_index must be -1 (any) or 0..255, got 256");
}
