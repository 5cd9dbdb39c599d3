// defaults(), render(), the embedded default document and reloadable_diff(), from the field table.
#include <cstdint>
#include <string>

#include "config/config.hpp"
#include "config/fields.hpp"
#include "shm/layout.hpp"

namespace bus::config {

static_assert(shm::capacity_for(bus::defaults::kMaxMessageSize) == bus::defaults::kRingCapacity,
              "the default ring is the smallest that takes the default message size");

Config defaults() { return Config{}; }

std::string_view slow_policy_name(SlowPolicy p) noexcept {
  switch (p) {
    case SlowPolicy::Block: return "block";
    case SlowPolicy::DropOldest: return "drop-oldest";
    case SlowPolicy::DropNewest: return "drop-newest";
    case SlowPolicy::Disconnect: return "disconnect";
  }
  return "block";
}

namespace {

using detail::Field;
using detail::Form;

constexpr std::string_view kPreamble =
    "# busd configuration (TOML). Every key is optional: a key left out keeps the default shown\n"
    "# here. `busd --print-default-config` prints this document; `busd --config FILE\n"
    "# --check-config` checks a file. Keys marked (restart) take effect at the next start; the\n"
    "# others also on reload (SIGHUP). A reload that fails keeps the running configuration.\n";

constexpr std::string_view kAclHelp =
    "# Access control. A peer may do what busd's own uid may (acl_owner_all) and what the\n"
    "# [[acl]] rules that match it grant. A rule matches a peer whose uid and gid (SO_PEERCRED)\n"
    "# and agent name all match; publish and subscribe list subject patterns ('*' matches one\n"
    "# token, '>' the rest). identity (a glob) makes a rule match only remote agents and peer\n"
    "# busds whose TLS certificate (CN, else SAN) or [[tokens]] identity matches; a link's\n"
    "# identity limits what crosses it (subscribe: what this busd forwards to the peer; publish:\n"
    "# what it accepts from it). Rules take effect on reload. One rule, with every key:\n";

constexpr std::string_view kAclExample =
    "# [[acl]]\n"
    "# uid = 1000                    # peer uid; absent = any uid\n"
    "# gid = 1000                    # peer gid; absent = any gid\n"
    "# name = \"worker-*\"             # agent-name glob: '*' any run of characters, '?' one\n"
    "# identity = \"planner.*\"        # remote identity glob; absent = anyone (local agents have none)\n"
    "# publish = [\"svc.work.>\"]      # subjects it may publish to\n"
    "# subscribe = [\"svc.plan.*\", \"$bus.agents.>\"]   # subjects it may subscribe to\n";

constexpr std::string_view kTokensHelp =
    "# Tokens (restart): a simpler alternative to client certificates. A remote agent\n"
    "# (ClientOptions::token or $BUS_TOKEN) or a peer busd ([[links]] token) presents a secret;\n"
    "# the [[tokens]] table it matches (compared in constant time) gives its identity. Once a\n"
    "# table exists, a remote agent or peer without a certificate identity must present one. One\n"
    "# table, with every key (token and token_file: exactly one, the file read at start):\n";

constexpr std::string_view kTokensExample =
    "# [[tokens]]\n"
    "# identity = \"planner.remote\"\n"
    "# token = \"a-long-random-secret-0123456789\"\n"
    "# token_file = \"/etc/busd/planner.token\"\n";

constexpr std::string_view kSlowHelp =
    "# Slow consumers. A message for a subscription whose agent's ring is full waits (block,\n"
    "# pushing back on the publisher) unless its policy says otherwise: drop-oldest and\n"
    "# drop-newest keep up to limits.slow_buffer_bytes for the agent and then drop (counted),\n"
    "# disconnect cuts the agent. The agent picks a policy per subscription; a\n"
    "# [[slow_consumers]] rule overrides it for the agents its name glob matches and the\n"
    "# subscriptions inside one of its subjects (the first matching rule decides). Rules take\n"
    "# effect on reload, for existing subscriptions too. One rule, with every key:\n";

constexpr std::string_view kSlowExample =
    "# [[slow_consumers]]\n"
    "# name = \"logger-*\"             # agent-name glob; absent = any agent\n"
    "# subjects = [\"metrics.>\"]      # subscriptions to these patterns (or inside them)\n"
    "# policy = \"drop-oldest\"        # block | drop-oldest | drop-newest | disconnect\n";

constexpr std::string_view kLinksHelp =
    "# Peer busds, one [[links]] table each (restart). kind = \"tcp\" (the default): this busd\n"
    "# dials peer, \"host:port\" or \"[v6]:port\" of the peer's [cluster] listen. One link per\n"
    "# peer; a peer that dials this busd needs no table here.\n"
    "# A tcp link may also say tls = true (dial with TLS; [tls] ca verifies the peer, whose\n"
    "# certificate must name server_name, \"\" = the host of peer) and token or token_file (a\n"
    "# secret of the peer's [[tokens]]).\n"
    "# kind = \"rdma\": RDMA WRITE into the peer's ring over an RC queue pair (librdmacm;\n"
    "# InfiniBand, RoCE, Soft-RoCE); busd needs an RDMA device at start. peer is \"host:port\" of\n"
    "# the peer's [cluster] rdma_listen; local (a numeric address to dial from, \"\" = any),\n"
    "# device (\"\" = any), ring_bytes (0 = derived from max_message_size), send_depth 256,\n"
    "# recv_depth 256, signal_every 16, inline_bytes 128, batch_wrs 32, ib_port 0, gid_index -1\n"
    "# (ib_port and gid_index check the port and source GID index rdma_cm resolves local to;\n"
    "# 0 / -1 = any). For example:\n";

constexpr std::string_view kLinksExample =
    "# [[links]]\n"
    "# kind = \"tcp\"\n"
    "# peer = \"10.0.0.2:7400\"\n";

constexpr std::string_view kDpdkLinkHelp =
    "# kind = \"dpdk\": datagrams over a [[dpdk.ports]] port (see [dpdk] below); both busds list\n"
    "# each other. peer and local are \"a.b.c.d:port\" (IPv4, UDP). Links on one port need their\n"
    "# own local end; one link per peer on a port. For example, every key:\n";

constexpr std::string_view kDpdkHelp =
    "# DPDK (restart), for kind = \"dpdk\" links: eal, the EAL arguments busd initialises DPDK\n"
    "# with at start (at most 64, needed when a link has kind = \"dpdk\"), and one [[dpdk.ports]]\n"
    "# table per ethdev port, named by its links.\n";

constexpr std::string_view kDpdkExample =
    "# [dpdk]\n"
    "# eal = [\"-l\", \"0\", \"--no-huge\", \"-m\", \"512\", \"--file-prefix=busd\", "
    "\"--vdev=net_memif0\"]\n";

constexpr size_t kWidth = 100;  // comment lines wrap before this column

// "# text" wrapped at word boundaries.
std::string comment_lines(std::string_view text) {
  std::string out;
  std::string line = "#";
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find(' ', at);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view word = text.substr(at, end - at);
    if (line.size() > 1 && line.size() + 1 + word.size() > kWidth) {
      out += line;
      out += '\n';
      line.assign(1, '#');  // (not line = "#": GCC 12 warns falsely, -Wrestrict at -O3)
    }
    line += ' ';
    line += word;
    at = end + 1;
  }
  return out + line + "\n";
}

std::string comment(const Field& f) {
  std::string c(f.help);
  if (f.form == Form::Integer) {
    c += " [" + detail::grouped(f.min) + ", " + detail::grouped(f.max) + "]";
  }
  if (f.restart) c += " (restart)";
  return comment_lines(c);
}

std::string value(const Config& cfg, const Field& f) {
  if (f.form != Form::RingCapacity) return detail::toml_value(cfg, f);
  const uint64_t derived = shm::capacity_for(cfg.limits.max_message_size);
  if (cfg.limits.ring_capacity != derived) return detail::toml_value(cfg, f);
  return "0  # derived: " + detail::grouped(derived);
}

std::string string_array(const std::vector<std::string>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i != 0) out += ", ";
    out += detail::quoted(v[i]);
  }
  return out + "]";
}

// An integer as TOML: 1_000_000 for a large one, -1 as such.
std::string integer(int64_t v) {
  if (v < 0) return std::to_string(v);
  return detail::grouped(static_cast<uint64_t>(v));
}

// "min..max" for a help line (2^63-1 so, not in digits).
std::string range(int64_t min, int64_t max) {
  std::string r = integer(min);
  r += "..";
  if (max == INT64_MAX) {
    r += "2^63-1";
  } else {
    r += integer(max);
  }
  return r;
}

// One line of a commented example: "# key = value", its help aligned after it.
std::string example_line(std::string_view key, const std::string& value, std::string_view help) {
  constexpr size_t kHelpColumn = 34;
  std::string line = "# ";
  line += key;
  line += " = ";
  line += value;
  if (!help.empty()) {
    line.append(line.size() < kHelpColumn ? kHelpColumn - line.size() : 1, ' ');
    line += "# ";
    line += help;
  }
  line += '\n';
  return line;
}

// A key of a table: "k = v", or in a commented example "# k = v" with its help.
std::string table_line(std::string_view k, const std::string& v, std::string_view help, bool example) {
  if (example) return example_line(k, v, help);
  std::string line(k);
  line += " = ";
  line += v;
  line += '\n';
  return line;
}

// A kind = "dpdk" link: every key (the commented example: "# " before each line, and help).
std::string dpdk_link(const LinkConfig& l, bool example) {
  const auto key = [&](std::string_view k, const std::string& v, std::string_view help) {
    return table_line(k, v, help, example);
  };
  std::string out = example ? "# [[links]]\n" : "\n[[links]]\n";
  out += key("kind", detail::quoted(l.kind), "");
  out += key("port", detail::quoted(l.port), "the name of a [[dpdk.ports]] table");
  out += key("local", detail::quoted(l.local), "this side's IPv4 address and UDP port");
  out += key("peer", detail::quoted(l.peer), "the peer's end of this link");
  out += key("peer_mac", detail::quoted(l.peer_mac), "\"aa:bb:cc:dd:ee:ff\"; \"\" = learn it by ARP");
  std::string help = "datagrams in flight, ";
  help += range(detail::kMinWindow, detail::kMaxWindow);
  out += key("window", integer(l.window), help);
  help = "least retransmission timeout, ";
  help += range(detail::kMinRtoUs, detail::kMaxRtoUs);
  out += key("rto_min_us", integer(l.rto_min_us), help);
  return out;
}

// A kind = "rdma" link: every key (the commented example: "# " before each line, and help).
std::string rdma_link(const LinkConfig& l, bool example) {
  const auto key = [&](std::string_view k, const std::string& v, std::string_view help) {
    return table_line(k, v, help, example);
  };
  std::string out = example ? "# [[links]]\n" : "\n[[links]]\n";
  out += key("kind", detail::quoted(l.kind), "");
  out += key("peer", detail::quoted(l.peer), "the peer's [cluster] rdma_listen");
  out += key("local", detail::quoted(l.local), "address to dial from; \"\" = any");
  out += key("device", detail::quoted(l.device), "the device it must resolve to; \"\" = any");
  out += key("ring_bytes", integer(l.ring_bytes), "this side's receive ring; 0 = derived");
  out += key("send_depth", integer(l.send_depth), "send work requests outstanding, 4..32768");
  out += key("recv_depth", integer(l.recv_depth), "receive work requests posted (the peer's credits), 4..32768");
  out += key("signal_every", integer(l.signal_every), "every Nth send WR signaled, 1..send_depth/2");
  out += key("inline_bytes", integer(l.inline_bytes), "inline data asked of the device, 0..1024");
  out += key("batch_wrs", integer(l.batch_wrs), "send WRs per doorbell, 1..send_depth");
  out += key("ib_port", integer(l.ib_port), "check: the port rdma_cm resolves local to, 1..255; 0 = any");
  out += key("gid_index", integer(l.gid_index), "check: the source GID's index in that port's table, 0..255; -1 = any");
  return out;
}

// One [[dpdk.ports]] table, every key (or the commented example).
std::string dpdk_port(const DpdkPort& p, bool example) {
  const auto key = [&](std::string_view k, const std::string& v, std::string_view help) {
    return table_line(k, v, help, example);
  };
  std::string out = example ? "#\n# [[dpdk.ports]]\n" : "\n[[dpdk.ports]]\n";
  out += key("name", detail::quoted(p.name), "ethdev name: a --vdev name or a PCI address");
  out += key("idle", detail::quoted(p.idle), "busy (never sleeps: a whole core), adaptive, or inline (no thread: busd's loop polls it)");
  out += key("mac", detail::quoted(p.mac), "\"aa:bb:cc:dd:ee:ff\" to set; \"\" = the port's own");
  for (const detail::PortNumber& n : detail::port_numbers()) {
    std::string help(n.help);
    help += ", ";
    help += range(n.min, n.max);
    out += key(n.name, integer(detail::number_of(p, n)), help);
  }
  return out;
}

}  // namespace

std::string render(const Config& cfg) {
  std::string out(kPreamble);
  std::string_view table;
  for (const Field& f : detail::fields()) {
    if (f.table != table) {
      table = f.table;
      out += "\n[" + std::string(table) + "]\n";
    }
    out += comment(f);
    out += std::string(f.name) + " = " + value(cfg, f) + "\n";
  }
  out += "\n";
  out += kAclHelp;
  if (cfg.acl.empty()) out += kAclExample;
  for (const AclRule& r : cfg.acl) {
    out += "\n[[acl]]\n";
    if (r.uid) out += "uid = " + std::to_string(*r.uid) + "\n";
    if (r.gid) out += "gid = " + std::to_string(*r.gid) + "\n";
    out += "name = " + detail::quoted(r.name) + "\n";
    if (r.identity) out += "identity = " + detail::quoted(*r.identity) + "\n";
    out += "publish = " + string_array(r.publish) + "\n";
    out += "subscribe = " + string_array(r.subscribe) + "\n";
  }
  out += "\n";
  out += kTokensHelp;
  if (cfg.tokens.empty()) out += kTokensExample;
  for (const Token& t : cfg.tokens) {
    out += "\n[[tokens]]\n";
    out += "identity = " + detail::quoted(t.identity) + "\n";
    if (!t.token.empty()) out += "token = " + detail::quoted(t.token) + "\n";
    if (!t.token_file.empty()) out += "token_file = " + detail::quoted(t.token_file) + "\n";
  }
  out += "\n";
  out += kSlowHelp;
  if (cfg.slow_consumers.empty()) out += kSlowExample;
  for (const SlowRule& r : cfg.slow_consumers) {
    out += "\n[[slow_consumers]]\n";
    out += "name = " + detail::quoted(r.name) + "\n";
    out += "subjects = " + string_array(r.subjects) + "\n";
    out += "policy = " + detail::quoted(std::string(slow_policy_name(r.policy))) + "\n";
  }
  out += "\n";
  out += kLinksHelp;
  if (cfg.links.empty()) {
    out += kLinksExample;
    out += "#\n";
    out += kDpdkLinkHelp;
    LinkConfig example;
    example.kind = "dpdk";
    example.peer = "10.0.0.2:9000";
    example.port = "net_memif0";
    example.local = "10.0.0.1:9000";
    out += dpdk_link(example, true);
  }
  for (const LinkConfig& l : cfg.links) {
    if (l.kind == "dpdk") {
      out += dpdk_link(l, false);
      continue;
    }
    if (l.kind == "rdma") {
      out += rdma_link(l, false);
      continue;
    }
    out += "\n[[links]]\n";
    out += "kind = " + detail::quoted(l.kind) + "\n";
    out += "peer = " + detail::quoted(l.peer) + "\n";
    if (l.tls) out += "tls = true\n";
    if (!l.server_name.empty()) out += "server_name = " + detail::quoted(l.server_name) + "\n";
    if (!l.token.empty()) out += "token = " + detail::quoted(l.token) + "\n";
    if (!l.token_file.empty()) out += "token_file = " + detail::quoted(l.token_file) + "\n";
  }
  out += "\n";
  out += kDpdkHelp;
  if (cfg.dpdk.eal.empty() && cfg.dpdk.ports.empty()) {
    out += "# For example, every key:\n";
    out += kDpdkExample;
    DpdkPort example;
    example.name = "net_memif0";
    out += dpdk_port(example, true);
    return out;
  }
  out += "\n[dpdk]\n";
  out += "eal = " + string_array(cfg.dpdk.eal) + "\n";
  for (const DpdkPort& p : cfg.dpdk.ports) out += dpdk_port(p, false);
  return out;
}

std::string_view default_config_text() {
  static const std::string text = render(defaults());
  return text;
}

std::vector<std::string> reloadable_diff(const Config& before, const Config& after,
                                         std::vector<std::string>* not_reloadable) {
  std::vector<std::string> live;
  for (const Field& f : detail::fields()) {
    if (detail::toml_value(before, f) == detail::toml_value(after, f)) continue;
    std::string key = std::string(f.table) + "." + std::string(f.name);
    if (!f.restart) {
      live.push_back(std::move(key));
    } else if (not_reloadable != nullptr) {
      not_reloadable->push_back(std::move(key));
    }
  }
  if (before.acl != after.acl) live.emplace_back("acl");
  if (before.slow_consumers != after.slow_consumers) live.emplace_back("slow_consumers");
  if (before.tokens != after.tokens && not_reloadable != nullptr) {
    not_reloadable->emplace_back("tokens");
  }
  if (before.links != after.links && not_reloadable != nullptr) {
    not_reloadable->emplace_back("links");
  }
  if (before.dpdk != after.dpdk && not_reloadable != nullptr) {
    not_reloadable->emplace_back("dpdk");
  }
  return live;
}

}  // namespace bus::config
