// defaults(), render(), the embedded default document and reloadable_diff(), from the field table.
#include <string>

#include "config/config.hpp"
#include "config/fields.hpp"
#include "shm/layout.hpp"

namespace bus::config {

static_assert(shm::capacity_for(bus::defaults::kMaxMessageSize) == bus::defaults::kRingCapacity,
              "the default ring is the smallest that takes the default message size");

Config defaults() { return Config{}; }

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
    "# token, '>' the rest). Rules take effect on reload. One rule, with every key:\n";

constexpr std::string_view kAclExample =
    "# [[acl]]\n"
    "# uid = 1000                    # peer uid; absent = any uid\n"
    "# gid = 1000                    # peer gid; absent = any gid\n"
    "# name = \"worker-*\"             # agent-name glob: '*' any run of characters, '?' one\n"
    "# publish = [\"svc.work.>\"]      # subjects it may publish to\n"
    "# subscribe = [\"svc.plan.*\", \"$bus.agents.>\"]   # subjects it may subscribe to\n";

constexpr std::string_view kLinksHelp =
    "# Peer busds this one dials, one [[links]] table each (restart). kind: \"tcp\" (dpdk\n"
    "# and rdma come with their transports); peer: \"host:port\" or \"[v6]:port\" of the\n"
    "# peer's [cluster] listen. One link per peer; a peer that dials this busd needs no\n"
    "# table here. For example:\n";

constexpr std::string_view kLinksExample =
    "# [[links]]\n"
    "# kind = \"tcp\"\n"
    "# peer = \"10.0.0.2:7400\"\n";

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
    out += "publish = " + string_array(r.publish) + "\n";
    out += "subscribe = " + string_array(r.subscribe) + "\n";
  }
  out += "\n";
  out += kLinksHelp;
  if (cfg.links.empty()) out += kLinksExample;
  for (const LinkConfig& l : cfg.links) {
    out += "\n[[links]]\n";
    out += "kind = " + detail::quoted(l.kind) + "\n";
    out += "peer = " + detail::quoted(l.peer) + "\n";
  }
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
  if (before.links != after.links && not_reloadable != nullptr) {
    not_reloadable->emplace_back("links");
  }
  return live;
}

}  // namespace bus::config
