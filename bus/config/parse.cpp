// parse(): TOML text to a validated Config, or the first problem in the file as one line.
// toml++ is built with exceptions (Debian's libtomlplusplus): its parse_error is caught here, at
// this set-up boundary, and nowhere else.
#include <cstdio>
#include <optional>
#include <utility>
#include <vector>
#include <toml++/toml.h>

#include "config/config.hpp"
#include "config/fields.hpp"
#include "shm/layout.hpp"

namespace bus::config {
namespace {

using detail::Field;
using detail::Form;

constexpr size_t kMaxQuoted = 40;  // longest string value quoted back in a message

std::string describe(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::integer: return std::to_string(n.as_integer()->get());
    case toml::node_type::floating_point: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", n.as_floating_point()->get());
      return buf;
    }
    case toml::node_type::boolean: return n.as_boolean()->get() ? "true" : "false";
    case toml::node_type::string: {
      std::string_view s = n.as_string()->get();
      if (s.size() <= kMaxQuoted) return detail::quoted(s);
      size_t cut = kMaxQuoted;  // back up to the start of a UTF-8 character
      while (cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xC0) == 0x80) --cut;
      return detail::quoted(s.substr(0, cut)) + "...";
    }
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

bool has_control_char(std::string_view s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) return true;
  }
  return false;
}

bool is_table_like(const toml::node& n) {
  if (n.is_table()) return true;
  const toml::array* a = n.as_array();
  return a != nullptr && !a->empty() && a->is_array_of_tables();
}

// Walks the document, keeps the first problem (lowest line) and fills a Config.
class Reader {
 public:
  explicit Reader(std::string_view source) : source_(source) {}

  void document(const toml::table& root) {
    for (const auto& [k, v] : root) {
      const std::string_view name = k.str();
      if (name == "busd" || name == "limits" || name == "cluster") {
        if (const toml::table* t = v.as_table()) {
          section(name, *t);
        } else {
          problem(v.source(), std::string(name), "must be a table ([" + std::string(name) +
                                                     "]), got " + describe(v));
        }
      } else if (name == "acl") {
        acl(v);
      } else if (name == "links") {
        links(v);
      } else {
        unknown(k, v, "", detail::kTables);
      }
    }
  }

  Expected<Config> finish() {
    if (!first_) cross_checks();
    if (first_) return fail(Errc::InvalidArgument, detail::one_line(first_->text));
    return std::move(cfg_);
  }

 private:
  struct Problem {
    uint32_t line;  // 0: toml++ did not know
    std::string text;
  };

  void problem(const toml::source_region& at, const std::string& key, const std::string& what) {
    const uint32_t line = at.begin.line;
    ++problems_;
    // The earliest line wins; problems without a line come after all others.
    const auto rank = [](uint32_t l) { return l == 0 ? UINT32_MAX : l; };
    if (first_ && rank(first_->line) <= rank(line)) return;
    std::string text(source_);
    if (line != 0) {
      text += ':';  // (not ":" + to_string(): GCC 12 warns falsely, -Wrestrict at -O3)
      text += std::to_string(line);
    }
    text += ": ";
    if (!key.empty()) text += key + ": ";
    first_ = Problem{line, text + what};
  }

  void unknown(const toml::key& k, const toml::node& v, std::string_view table,
               std::span<const std::string_view> siblings) {
    const std::string_view name = k.str();
    const std::string path = table.empty() ? std::string(name) : std::string(table) + "." +
                                                                   std::string(name);
    std::string hint;
    for (const Field& f : detail::fields()) {
      if (f.name == name && f.table != table) {
        hint = " (it belongs in [" + std::string(f.table) + "])";
        break;
      }
    }
    for (const std::string_view t : detail::kTables) {
      if (hint.empty() && !table.empty() && name == t) {
        hint = " (it belongs at the top level, before any [table])";
      }
    }
    if (hint.empty()) hint = detail::suggestion(name, siblings);
    problem(k.source(), "",
            std::string(is_table_like(v) ? "unknown table '" : "unknown key '") + path + "'" + hint);
  }

  void section(std::string_view table, const toml::table& t) {
    std::vector<std::string_view> names;
    for (const Field& f : detail::fields()) {
      if (f.table == table) names.push_back(f.name);
    }
    for (const auto& [k, v] : t) {
      const Field* field = nullptr;
      for (const Field& f : detail::fields()) {
        if (f.table == table && f.name == k.str()) field = &f;
      }
      if (field == nullptr) {
        unknown(k, v, table, names);
      } else {
        read(*field, v);
      }
    }
  }

  void read(const Field& f, const toml::node& v) {
    const std::string key = std::string(f.table) + "." + std::string(f.name);
    const auto bad = [&](const std::string& what) { problem(v.source(), key, what); };
    given_.emplace_back(&f, v.source());
    switch (f.form) {
      case Form::Text: {
        const auto s = string_value(v, key);
        if (!s) return;
        if (std::string why = f.check != nullptr ? f.check(*s) : std::string(); !why.empty()) {
          return bad(why);
        }
        detail::set(cfg_, f, std::string(*s));
        return;
      }
      case Form::Flag:
        if (!v.is_boolean()) return bad("must be true or false, got " + describe(v));
        detail::set(cfg_, f, v.as_boolean()->get());
        return;
      case Form::Integer: {
        const auto n = integer(v);
        if (!n || *n < f.min || *n > f.max) {
          return bad("must be an integer in [" + std::to_string(f.min) + ", " +
                     std::to_string(f.max) + "], got " + describe(v));
        }
        detail::set(cfg_, f, *n);
        return;
      }
      case Form::OctalMode: {
        const auto mode = octal_mode(v);
        if (!mode || *mode > f.max) {
          return bad("must be an octal file mode in quotes, \"0000\" to \"" +
                     detail::octal(static_cast<uint32_t>(f.max)) + "\", got " + describe(v));
        }
        detail::set(cfg_, f, *mode);
        return;
      }
      case Form::RingCapacity: {
        const auto n = integer(v);
        const bool power_of_two = n && *n != 0 && (*n & (*n - 1)) == 0;
        if (!n || (*n != 0 && (!power_of_two || *n < f.min || *n > f.max))) {
          return bad("must be 0 (derive from max_message_size) or a power of two in [" +
                     std::to_string(f.min) + ", " + std::to_string(f.max) + "], got " +
                     describe(v));
        }
        ring_line_ = v.source();
        ring_derive_ = *n == 0;
        if (*n != 0) detail::set(cfg_, f, *n);
        return;
      }
    }
  }

  // A string without control characters (paths, names and patterns never need one).
  std::optional<std::string_view> string_value(const toml::node& v, const std::string& key) {
    const toml::value<std::string>* s = v.as_string();
    if (s == nullptr) {
      problem(v.source(), key, "must be a string, got " + describe(v));
      return std::nullopt;
    }
    if (has_control_char(s->get())) {
      problem(v.source(), key, "must not contain control characters, got " + describe(v));
      return std::nullopt;
    }
    return std::string_view(s->get());
  }

  static std::optional<uint64_t> integer(const toml::node& v) {
    const toml::value<int64_t>* i = v.as_integer();
    if (i == nullptr || i->get() < 0) return std::nullopt;
    return static_cast<uint64_t>(i->get());
  }

  // "0660", "660" or a TOML octal integer 0o660; a decimal integer is refused (is 660 meant
  // as octal or decimal?).
  static std::optional<uint64_t> octal_mode(const toml::node& v) {
    if (const toml::value<int64_t>* i = v.as_integer()) {
      if ((i->flags() & toml::value_flags::format_as_octal) == toml::value_flags::none) {
        return std::nullopt;
      }
      return integer(v);
    }
    const toml::value<std::string>* s = v.as_string();
    if (s == nullptr) return std::nullopt;
    std::string_view t = s->get();
    if (t.starts_with("0o")) t.remove_prefix(2);
    if (t.empty() || t.size() > 4) return std::nullopt;
    uint64_t m = 0;
    for (const char c : t) {
      if (c < '0' || c > '7') return std::nullopt;
      m = m * 8 + static_cast<uint64_t>(c - '0');
    }
    return m;
  }

  void acl(const toml::node& v) {
    const toml::array* rules = v.as_array();
    if (rules == nullptr || (!rules->empty() && !rules->is_array_of_tables())) {
      problem(v.source(), "acl", "must be an array of tables ([[acl]]), got " + describe(v));
      return;
    }
    for (size_t i = 0; i < rules->size(); ++i) {
      rule("acl[" + std::to_string(i) + "]", *rules->get(i)->as_table());
    }
  }

  void rule(const std::string& path, const toml::table& t) {
    const size_t problems_before = problems_;
    AclRule r;
    for (const auto& [k, v] : t) {
      const std::string_view name = k.str();
      const std::string key = path + "." + std::string(name);
      if (name == "uid" || name == "gid") {
        const auto n = integer(v);
        if (!n || *n > detail::kMaxId) {
          problem(v.source(), key, "must be an integer in [0, " + std::to_string(detail::kMaxId) +
                                       "], got " + describe(v));
          continue;
        }
        (name == "uid" ? r.uid : r.gid) = static_cast<uint32_t>(*n);
      } else if (name == "name") {
        const auto s = string_value(v, key);
        if (!s) continue;
        if (s->empty()) {
          problem(v.source(), key, "must be a non-empty agent-name glob (\"*\" = any name)");
          continue;
        }
        r.name = std::string(*s);
      } else if (name == "publish" || name == "subscribe") {
        patterns(v, key, name == "publish" ? r.publish : r.subscribe);
      } else {
        unknown(k, v, path, detail::kAclKeys);
      }
    }
    // (A rule whose patterns had a problem was reported for that.)
    if (r.publish.empty() && r.subscribe.empty() && problems_ == problems_before) {
      problem(t.source(), path, "grants nothing: give publish or subscribe patterns");
    }
    cfg_.acl.push_back(std::move(r));
  }

  void patterns(const toml::node& v, const std::string& key, std::vector<std::string>& out) {
    const toml::array* a = v.as_array();
    if (a == nullptr) {
      problem(v.source(), key, "must be an array of subject patterns, got " + describe(v));
      return;
    }
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& e = *a->get(i);
      const std::string item = key + "[" + std::to_string(i) + "]";
      const auto s = string_value(e, item);
      if (!s) continue;
      if (s->empty()) {
        problem(e.source(), item, "must be a non-empty subject pattern");
        continue;
      }
      out.emplace_back(*s);
    }
  }

  void links(const toml::node& v) {
    const toml::array* links = v.as_array();
    if (links == nullptr || (!links->empty() && !links->is_array_of_tables())) {
      problem(v.source(), "links", "must be an array of tables ([[links]]), got " + describe(v));
      return;
    }
    std::vector<std::string> peers;  // host_port() keys of the links read so far ("" = none)
    for (size_t i = 0; i < links->size(); ++i) {
      link("links[" + std::to_string(i) + "]", *links->get(i)->as_table(), peers);
    }
  }

  void link(const std::string& path, const toml::table& t, std::vector<std::string>& peers) {
    const size_t problems_before = problems_;
    LinkConfig l;
    std::string peer_key;
    bool has_peer = false;
    for (const auto& [k, v] : t) {
      const std::string_view name = k.str();
      const std::string key = path + "." + std::string(name);
      if (name == "kind") {
        const auto s = string_value(v, key);
        if (!s) continue;
        if (*s == "dpdk" || *s == "rdma") {
          problem(v.source(), key,
                  detail::quoted(*s)
                      .append(" links are not available yet (the ")
                      .append(*s == "dpdk" ? "DPDK" : "RDMA")
                      .append(" transport is a later issue); use \"tcp\""));
          continue;
        }
        if (*s != "tcp") {
          problem(v.source(), key, "must be one of tcp, dpdk, rdma, got " + describe(v));
          continue;
        }
        l.kind = std::string(*s);
      } else if (name == "peer") {
        has_peer = true;
        const auto s = string_value(v, key);
        if (!s) continue;
        switch (detail::host_port(*s, &peer_key)) {
          case detail::HostPort::Ok: break;
          case detail::HostPort::Port:
            problem(v.source(), key, "port must be in [1, " + std::to_string(detail::kMaxPort) +
                                         "], got " + describe(v));
            continue;
          case detail::HostPort::Shape:
            problem(v.source(), key, "must be \"host:port\" or \"[v6]:port\", got " + describe(v));
            continue;
        }
        for (size_t j = 0; j < peers.size(); ++j) {
          if (peers[j] == peer_key) {
            problem(v.source(), key,
                    describe(v) + " is already the peer of links[" + std::to_string(j) +
                        "] (one link per peer)");
            break;
          }
        }
        l.peer = std::string(*s);
      } else {
        unknown(k, v, path, detail::kLinkKeys);
      }
    }
    if (!has_peer && problems_ == problems_before) {
      problem(t.source(), path,
              "peer is required (\"host:port\" or \"[v6]:port\" of the peer busd's [cluster] "
              "listen)");
    }
    peers.push_back(l.peer.empty() ? std::string() : std::move(peer_key));
    cfg_.links.push_back(std::move(l));
  }

  // Where the file gives the key, if it does.
  const toml::source_region* given(std::string_view table, std::string_view name) const {
    for (const auto& [f, at] : given_) {
      if (f->table == table && f->name == name) return &at;
    }
    return nullptr;
  }

  // `low` must be below `high` (or at most `high` when `equal_ok`). Reported at `high` where the
  // file gives it, else at `low` (a default cannot be the problem alone).
  void ordered(std::string_view low, uint64_t low_v, std::string_view high, uint64_t high_v,
               bool equal_ok) {
    if (low_v < high_v || (equal_ok && low_v == high_v)) return;
    const std::string low_key = std::string("cluster.").append(low);
    const std::string high_key = std::string("cluster.").append(high);
    if (const toml::source_region* at = given("cluster", high)) {
      problem(*at, high_key,
              std::to_string(high_v)
                  .append(equal_ok ? " must be at least " : " must be greater than ")
                  .append(low_key)
                  .append(" = ")
                  .append(std::to_string(low_v)));
    } else {
      const toml::source_region* at_low = given("cluster", low);
      problem(at_low != nullptr ? *at_low : toml::source_region{}, low_key,
              std::to_string(low_v)
                  .append(equal_ok ? " must be at most " : " must be less than ")
                  .append(high_key)
                  .append(" = ")
                  .append(std::to_string(high_v)));
    }
  }

  void cross_checks() {
    const Cluster& c = cfg_.cluster;
    ordered("heartbeat_ms", c.heartbeat_ms, "dead_after_ms", c.dead_after_ms, false);
    ordered("backoff_min_ms", c.backoff_min_ms, "backoff_max_ms", c.backoff_max_ms, true);
    const uint64_t needed = shm::capacity_for(cfg_.limits.max_message_size);
    if (ring_derive_) {
      cfg_.limits.ring_capacity = needed;
    } else if (cfg_.limits.ring_capacity < needed) {
      problem(ring_line_, "limits.ring_capacity",
              std::to_string(cfg_.limits.ring_capacity) +
                  " is too small for limits.max_message_size = " +
                  std::to_string(cfg_.limits.max_message_size) + " (needs at least " +
                  std::to_string(needed) + ", or 0 to derive it)");
    }
  }

  std::string_view source_;
  Config cfg_;
  // limits.ring_capacity: derived from max_message_size unless the file gives a non-zero value;
  // where the file gives it.
  bool ring_derive_ = true;
  toml::source_region ring_line_;
  // The scalar keys the file gives, and where.
  std::vector<std::pair<const Field*, toml::source_region>> given_;
  std::optional<Problem> first_;
  size_t problems_ = 0;
};

}  // namespace

Expected<Config> parse(std::string_view toml_text, std::string_view source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    const toml::source_position& at = e.source().begin;
    std::string text(source_name);
    if (at.line != 0) {
      text += ':';
      text += std::to_string(at.line);
      text += ':';
      text += std::to_string(at.column);
    }
    text += ": TOML syntax: ";
    text += e.description();
    if (e.description().find("leading zero") != std::string_view::npos) {
      text += " (a file mode is written in quotes: socket_mode = \"0660\")";
    }
    return fail(Errc::InvalidArgument, detail::one_line(text));
  }
  Reader r(source_name);
  r.document(root);
  return r.finish();
}

}  // namespace bus::config
