// parse(): TOML text to a validated Config, or the first problem in the file as one line.
// toml++ is built with exceptions (Debian's libtomlplusplus): its parse_error is caught here, at
// this set-up boundary, and nowhere else.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>
#include <toml++/toml.h>

#include "config/config.hpp"
#include "config/fields.hpp"
#include "router/subjects.hpp"
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
      if (name == "busd" || name == "limits" || name == "cluster" || name == "tls") {
        if (const toml::table* t = v.as_table()) {
          section(name, *t);
        } else {
          problem(v.source(), std::string(name), "must be a table ([" + std::string(name) +
                                                     "]), got " + describe(v));
        }
      } else if (name == "acl") {
        acl(v);
      } else if (name == "tokens") {
        tokens(v);
      } else if (name == "slow_consumers") {
        slow_consumers(v);
      } else if (name == "links") {
        links(v);
      } else if (name == "dpdk") {
        dpdk(v);
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
    // The closest fit first: a sibling that is the key in singular or plural ("ports" for
    // "port"); in [dpdk] and [[dpdk.ports]], where a dpdk key belongs; where a scalar key or a
    // table of that name belongs; then a sibling within two edits; then where a dpdk key belongs.
    std::string hint;
    for (const std::string_view s : siblings) {
      if (s.size() == name.size() + 1 ? s.starts_with(name) && s.back() == 's'
                                      : name.size() == s.size() + 1 && name.starts_with(s) &&
                                            name.back() == 's') {
        hint = detail::suggestion(name, siblings);
      }
    }
    if (hint.empty() && (table == "dpdk" || table.starts_with("dpdk.ports["))) {
      hint = dpdk_hint(name, table);
    }
    for (const Field& f : detail::fields()) {
      if (hint.empty() && f.name == name && f.table != table) {
        hint = " (it belongs in [" + std::string(f.table) + "])";
        break;
      }
    }
    for (const std::string_view t : detail::kTables) {
      if (hint.empty() && !table.empty() && name == t) {
        hint = " (it belongs at the top level, before any [table])";
      }
    }
    if (hint.empty()) hint = dpdk_hint(name, table);
    if (hint.empty()) hint = detail::suggestion(name, siblings);
    problem(k.source(), "",
            std::string(is_table_like(v) ? "unknown table '" : "unknown key '") + path + "'" + hint);
  }

  // Where a [dpdk], [[dpdk.ports]] or dpdk link key given elsewhere belongs ("" when `name` is
  // none of them, or belongs in `table`).
  static std::string dpdk_hint(std::string_view name, std::string_view table) {
    const auto in = [&](std::span<const std::string_view> keys) {
      return std::find(keys.begin(), keys.end(), name) != keys.end();
    };
    if (in(detail::kDpdkKeys) && table != "dpdk") return " (it belongs in [dpdk])";
    if (in(detail::kDpdkPortKeys) && !table.starts_with("dpdk.ports[")) {
      return " (it belongs in a [[dpdk.ports]] table)";
    }
    if (in(detail::kDpdkLinkKeys) && !table.starts_with("links[")) {
      return " (it belongs in a [[links]] table with kind = \"dpdk\")";
    }
    return {};
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

  // An integer in [min, max], or the problem reported at it.
  std::optional<int64_t> ranged(const toml::node& v, const std::string& key, int64_t min,
                                int64_t max) {
    const toml::value<int64_t>* i = v.as_integer();
    if (i == nullptr || i->get() < min || i->get() > max) {
      problem(v.source(), key, "must be an integer in [" + std::to_string(min) + ", " +
                                   std::to_string(max) + "], got " + describe(v));
      return std::nullopt;
    }
    return i->get();
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
      } else if (name == "identity") {
        const auto s = string_value(v, key);
        if (!s) continue;
        if (s->empty() || has_control_char(*s)) {
          problem(v.source(), key, "must be a non-empty identity glob (\"*\" = any remote identity)");
          continue;
        }
        r.identity = std::string(*s);
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

  void tokens(const toml::node& v) {
    const toml::array* list = v.as_array();
    if (list == nullptr || (!list->empty() && !list->is_array_of_tables())) {
      problem(v.source(), "tokens", "must be an array of tables ([[tokens]]), got " + describe(v));
      return;
    }
    for (size_t i = 0; i < list->size(); ++i) {
      const toml::table& t = *list->get(i)->as_table();
      const std::string path = "tokens[" + std::to_string(i) + "]";
      const size_t problems_before = problems_;
      Token tok;
      for (const auto& [k, val] : t) {
        const std::string_view name = k.str();
        const std::string key = path + "." + std::string(name);
        if (name != "identity" && name != "token" && name != "token_file") {
          unknown(k, val, path, detail::kTokenKeys);
          continue;
        }
        const auto s = string_value(val, key);
        if (!s) continue;
        if (name == "identity") {
          if (s->empty() || s->size() > 255 || has_control_char(*s) || s->find(' ') != std::string_view::npos) {
            problem(val.source(), key, "must be 1 to 255 printable characters without spaces, got " + describe(val));
            continue;
          }
          tok.identity = std::string(*s);
        } else if (name == "token") {
          if (s->size() < detail::kMinTokenLength || has_control_char(*s)) {
            problem(val.source(), key, "must be at least " + std::to_string(detail::kMinTokenLength) +
                                           " characters without control characters (a secret: make it long and random)");
            continue;
          }
          tok.token = std::string(*s);
        } else {
          if (s->empty() || s->front() != '/' || has_control_char(*s)) {
            problem(val.source(), key, "must be an absolute path, got " + describe(val));
            continue;
          }
          tok.token_file = std::string(*s);
        }
      }
      if (problems_ != problems_before) {
        // (reported for its key)
      } else if (tok.identity.empty()) {
        problem(t.source(), path, "identity is required (what [[acl]] identity globs see)");
      } else if (tok.token.empty() == tok.token_file.empty()) {
        problem(t.source(), path, "give exactly one of token and token_file");
      }
      cfg_.tokens.push_back(std::move(tok));
    }
  }

  void slow_consumers(const toml::node& v) {
    const toml::array* list = v.as_array();
    if (list == nullptr || (!list->empty() && !list->is_array_of_tables())) {
      problem(v.source(), "slow_consumers", "must be an array of tables ([[slow_consumers]]), got " + describe(v));
      return;
    }
    for (size_t i = 0; i < list->size(); ++i) {
      const toml::table& t = *list->get(i)->as_table();
      const std::string path = "slow_consumers[" + std::to_string(i) + "]";
      const size_t problems_before = problems_;
      SlowRule r;
      bool has_policy = false;
      for (const auto& [k, val] : t) {
        const std::string_view name = k.str();
        const std::string key = path + "." + std::string(name);
        if (name == "name") {
          const auto s = string_value(val, key);
          if (!s) continue;
          if (s->empty()) {
            problem(val.source(), key, "must be a non-empty agent-name glob (\"*\" = any name)");
            continue;
          }
          r.name = std::string(*s);
        } else if (name == "subjects") {
          const toml::array* a = val.as_array();
          patterns(val, key, r.subjects);
          for (size_t j = 0; a != nullptr && j < a->size(); ++j) {
            const toml::node& e = *a->get(j);
            const auto* s = e.as_string();
            if (s != nullptr && !s->get().empty() && !router::validate_pattern(s->get())) {
              problem(e.source(), key + "[" + std::to_string(j) + "]",
                      "'" + s->get() + "' is not a valid subject pattern ('*' matches one token, '>' the rest)");
            }
          }
        } else if (name == "policy") {
          const auto s = string_value(val, key);
          if (!s) continue;
          bool known = false;
          for (const SlowPolicy p : {SlowPolicy::Block, SlowPolicy::DropOldest, SlowPolicy::DropNewest, SlowPolicy::Disconnect}) {
            if (*s == slow_policy_name(p)) {
              r.policy = p;
              known = true;
            }
          }
          if (!known) {
            problem(val.source(), key, "must be one of \"block\", \"drop-oldest\", \"drop-newest\", \"disconnect\", got " + describe(val));
            continue;
          }
          has_policy = true;
        } else {
          unknown(k, val, path, detail::kSlowKeys);
        }
      }
      if (problems_ != problems_before) {
        // (reported for its key)
      } else if (r.subjects.empty()) {
        problem(t.source(), path, "subjects is required: the subscription patterns this rule covers (\">\" = all)");
      } else if (!has_policy) {
        problem(t.source(), path, "policy is required: block, drop-oldest, drop-newest or disconnect");
      }
      cfg_.slow_consumers.push_back(std::move(r));
    }
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
    for (size_t i = 0; i < links->size(); ++i) {
      link("links[" + std::to_string(i) + "]", *links->get(i)->as_table());
    }
  }

  // One [[links]] table. The whole table is read before any check: kind (which may come last)
  // decides what the other keys must be.
  void link(const std::string& path, const toml::table& t) {
    const size_t problems_before = problems_;
    struct Given {
      std::string_view name;
      const toml::node* node;
    };
    std::array<Given, std::size(detail::kLinkKeys)> given{};
    for (size_t i = 0; i < given.size(); ++i) given[i] = {detail::kLinkKeys[i], nullptr};
    for (const auto& [k, v] : t) {
      Given* g = nullptr;
      for (Given& c : given) {
        if (c.name == k.str()) g = &c;
      }
      if (g != nullptr) {
        g->node = &v;
      } else {
        unknown(k, v, path, detail::kLinkKeys);
      }
    }
    const auto node = [&](std::string_view name) {
      for (const Given& c : given) {
        if (c.name == name) return c.node;
      }
      return static_cast<const toml::node*>(nullptr);
    };
    const auto key = [&](std::string_view name) {
      std::string k = path;
      k += '.';
      k += name;
      return k;
    };

    LinkConfig l;
    seen_.push_back(Seen{});  // this link's endpoints, filled in below when they are good
    if (const toml::node* kind = node("kind")) {
      const auto s = string_value(*kind, key("kind"));
      if (!s) return keep(std::move(l));
      if (*s != "tcp" && *s != "dpdk" && *s != "rdma") {
        problem(kind->source(), key("kind"), "must be one of tcp, dpdk, rdma, got " + describe(*kind));
        return keep(std::move(l));  // (the other keys depend on the kind)
      }
      l.kind = std::string(*s);
    }
    if (l.kind != "rdma") {
      for (const std::string_view only : detail::kRdmaLinkKeys) {
        if (const toml::node* v = node(only)) {
          problem(v->source(), key(only),
                  node("kind") != nullptr ? "only for kind = \"rdma\" (this link is kind = \"" + l.kind + "\")"
                                          : std::string("only for kind = \"rdma\" (this link has no kind: \"tcp\")"));
        }
      }
    }
    if (l.kind == "rdma") {
      for (const std::string_view only : detail::kTcpLinkKeys) {
        if (const toml::node* v = node(only)) problem(v->source(), key(only), "only for kind = \"tcp\" (this link is kind = \"rdma\")");
      }
      for (const std::string_view only : detail::kDpdkLinkKeys) {
        if (only == "local") continue;  // an rdma link's bind address
        if (const toml::node* v = node(only)) problem(v->source(), key(only), "only for kind = \"dpdk\" (this link is kind = \"rdma\")");
      }
      rdma_link(path, t, node, key, l, problems_before);
      return keep(std::move(l));
    }
    if (l.kind == "dpdk") {
      for (const std::string_view only : detail::kTcpLinkKeys) {
        if (const toml::node* v = node(only)) problem(v->source(), key(only), "only for kind = \"tcp\" (this link is kind = \"dpdk\")");
      }
      dpdk_link(path, t, node, key, l, problems_before);
      return keep(std::move(l));
    }
    if (const toml::node* v = node("tls")) {
      if (v->is_boolean()) {
        l.tls = v->as_boolean()->get();
      } else {
        problem(v->source(), key("tls"), "must be true or false, got " + describe(*v));
      }
    }
    if (const toml::node* v = node("server_name")) {
      if (const auto s = string_value(*v, key("server_name"))) {
        if (has_control_char(*s) || s->find(' ') != std::string_view::npos || s->size() > 253) {
          problem(v->source(), key("server_name"), "must be a DNS name or an IP address, got " + describe(*v));
        } else {
          l.server_name = std::string(*s);
        }
      }
    }
    if (const toml::node* v = node("token")) {
      if (const auto s = string_value(*v, key("token"))) {
        if (s->size() < detail::kMinTokenLength || has_control_char(*s)) {
          problem(v->source(), key("token"), "must be at least " + std::to_string(detail::kMinTokenLength) +
                                                 " characters without control characters");
        } else {
          l.token = std::string(*s);
        }
      }
    }
    if (const toml::node* v = node("token_file")) {
      if (const auto s = string_value(*v, key("token_file"))) {
        if (s->empty() || s->front() != '/' || has_control_char(*s)) {
          problem(v->source(), key("token_file"), "must be an absolute path, got " + describe(*v));
        } else if (!l.token.empty()) {
          problem(v->source(), key("token_file"), "give token or token_file, not both");
        } else {
          l.token_file = std::string(*s);
        }
      }
    }

    for (const std::string_view only : detail::kDpdkLinkKeys) {
      if (const toml::node* v = node(only)) {
        problem(v->source(), key(only),
                node("kind") != nullptr
                    ? "only for kind = \"dpdk\" (this link is kind = \"tcp\")"
                    : "only for kind = \"dpdk\" (this link has no kind: \"tcp\")");
      }
    }
    const toml::node* peer = node("peer");
    if (peer == nullptr) {
      if (problems_ == problems_before) {
        problem(t.source(), path,
                "peer is required (\"host:port\" or \"[v6]:port\" of the peer busd's [cluster] "
                "listen)");
      }
      return keep(std::move(l));
    }
    const auto s = string_value(*peer, key("peer"));
    if (!s) return keep(std::move(l));
    std::string peer_key;
    switch (detail::host_port(*s, &peer_key)) {
      case detail::HostPort::Ok: break;
      case detail::HostPort::Port:
        problem(peer->source(), key("peer"), "port must be in [1, " +
                                                 std::to_string(detail::kMaxPort) + "], got " +
                                                 describe(*peer));
        return keep(std::move(l));
      case detail::HostPort::Shape:
        problem(peer->source(), key("peer"),
                "must be \"host:port\" or \"[v6]:port\", got " + describe(*peer));
        return keep(std::move(l));
    }
    for (size_t j = 0; j + 1 < seen_.size(); ++j) {
      if (seen_[j].tcp_peer == peer_key) {
        problem(peer->source(), key("peer"),
                describe(*peer) + " is already the peer of links[" + std::to_string(j) +
                    "] (one link per peer)");
        break;
      }
    }
    l.peer = std::string(*s);
    seen_.back().tcp_peer = std::move(peer_key);
    keep(std::move(l));
  }

  void keep(LinkConfig l) { cfg_.links.push_back(std::move(l)); }

  // The keys of a kind = "rdma" link (its kind was given and read): peer ("host:port" of the
  // peer's [cluster] rdma_listen), local (a numeric address to dial from), device, and the
  // rdma::Options numbers (rdma::check's ranges; ring_bytes against max_message_size after the
  // whole file, rdma_checks()).
  template <class Node, class Key>
  void rdma_link(const std::string& path, const toml::table& t, const Node& node, const Key& key,
                 LinkConfig& l, size_t problems_before) {
    if (const toml::node* v = node("peer")) {
      if (const auto s = string_value(*v, key("peer"))) {
        std::string peer_key;
        switch (detail::host_port(*s, &peer_key)) {
          case detail::HostPort::Ok: {
            for (size_t j = 0; j + 1 < seen_.size(); ++j) {
              if (seen_[j].rdma_peer == peer_key) {
                problem(v->source(), key("peer"),
                        describe(*v) + " is already the peer of links[" + std::to_string(j) +
                            "] (one link per peer)");
                break;
              }
            }
            l.peer = std::string(*s);
            seen_.back().rdma_peer = std::move(peer_key);
            break;
          }
          case detail::HostPort::Port:
            problem(v->source(), key("peer"), "port must be in [1, " + std::to_string(detail::kMaxPort) +
                                                  "], got " + describe(*v));
            break;
          case detail::HostPort::Shape:
            problem(v->source(), key("peer"),
                    "must be \"host:port\" or \"[v6]:port\" (the peer's [cluster] rdma_listen), got " +
                        describe(*v));
            break;
        }
      }
    }
    if (const toml::node* v = node("local")) {
      if (const auto s = string_value(*v, key("local"))) {
        in6_addr a6{};
        in_addr a4{};
        const std::string text(*s);
        if (text.empty() || ::inet_pton(AF_INET, text.c_str(), &a4) == 1 ||
            ::inet_pton(AF_INET6, text.c_str(), &a6) == 1) {
          l.local = text;
        } else {
          problem(v->source(), key("local"),
                  "must be \"\" (any) or a numeric IPv4 or IPv6 address of the RDMA interface to dial "
                  "from (no port), got " + describe(*v));
        }
      }
    }
    if (const toml::node* v = node("device")) {
      if (const auto s = string_value(*v, key("device"))) {
        if (s->empty() || detail::is_port_name(*s)) {
          l.device = std::string(*s);
        } else {
          problem(v->source(), key("device"),
                  "must be \"\" (any) or a device name as ibv_devices lists it (\"mlx5_0\", \"rxe0\"), got " +
                      describe(*v));
        }
      }
    }
    bool ring_given = false;
    if (const toml::node* v = node("ring_bytes")) {
      const toml::value<int64_t>* i = v->as_integer();
      if (i != nullptr && i->get() == 0) {
        ring_given = false;
      } else if (const auto n = ranged(*v, key("ring_bytes"), detail::kMinRdmaRing, detail::kMaxRdmaRing)) {
        l.ring_bytes = static_cast<uint32_t>(*n);
        ring_given = true;
      }
    }
    const auto number = [&](std::string_view name, uint32_t& out, int64_t min, int64_t max) {
      if (const toml::node* v = node(name)) {
        if (const auto n = ranged(*v, key(name), min, max)) {
          out = static_cast<uint32_t>(*n);
          return true;
        }
      }
      return false;
    };
    number("send_depth", l.send_depth, detail::kMinRdmaDepth, detail::kMaxRdmaDepth);
    number("recv_depth", l.recv_depth, detail::kMinRdmaDepth, detail::kMaxRdmaDepth);
    number("inline_bytes", l.inline_bytes, 0, detail::kMaxRdmaInline);
    if (const toml::node* v = node("signal_every")) {
      if (number("signal_every", l.signal_every, 1, detail::kMaxRdmaDepth) && l.signal_every > l.send_depth / 2) {
        problem(v->source(), key("signal_every"),
                std::to_string(l.signal_every) + " must be at most send_depth / 2 = " + std::to_string(l.send_depth / 2));
      }
    } else if (l.signal_every > l.send_depth / 2) {
      problem(node("send_depth")->source(), key("send_depth"),
              std::to_string(l.send_depth) + " must be at least 2 x signal_every = " + std::to_string(2 * l.signal_every));
    }
    if (const toml::node* v = node("batch_wrs")) {
      if (number("batch_wrs", l.batch_wrs, 1, detail::kMaxRdmaDepth) && l.batch_wrs > l.send_depth) {
        problem(v->source(), key("batch_wrs"),
                std::to_string(l.batch_wrs) + " must be at most send_depth = " + std::to_string(l.send_depth));
      }
    } else if (l.batch_wrs > l.send_depth) {
      problem(node("send_depth")->source(), key("send_depth"),
              std::to_string(l.send_depth) + " must be at least batch_wrs = " + std::to_string(l.batch_wrs));
    }
    number("ib_port", l.ib_port, 0, detail::kMaxRdmaPort);
    if (const toml::node* v = node("gid_index")) {
      if (const auto n = ranged(*v, key("gid_index"), -1, detail::kMaxRdmaGidIndex)) l.gid_index = static_cast<int32_t>(*n);
    }
    if (problems_ == problems_before && node("peer") == nullptr) {
      problem(t.source(), path,
              "peer is required for kind = \"rdma\" (\"host:port\": the peer busd's [cluster] rdma_listen)");
    }
    const toml::node* ring = node("ring_bytes");
    rdma_links_.push_back(RdmaLinkAt{path, seen_.size() - 1, ring_given,
                                     ring_given ? ring->source() : node("kind")->source()});
  }

  // The keys of a kind = "dpdk" link (its kind was given and read). `node` and `key` are
  // link()'s look-ups.
  template <class Node, class Key>
  void dpdk_link(const std::string& path, const toml::table& t, const Node& node, const Key& key,
                 LinkConfig& l, size_t problems_before) {
    Seen& seen = seen_.back();
    // peer and local: "a.b.c.d:port".
    const auto endpoint = [&](std::string_view name, std::string& out, std::optional<uint64_t>& at) {
      const toml::node* v = node(name);
      if (v == nullptr) return;
      const auto s = string_value(*v, key(name));
      if (!s) return;
      uint64_t k = 0;
      switch (detail::ipv4_port(*s, &k)) {
        case detail::HostPort::Ok: break;
        case detail::HostPort::Port:
          return problem(v->source(), key(name), "port must be in [1, " +
                                                     std::to_string(detail::kMaxPort) +
                                                     "], got " + describe(*v));
        case detail::HostPort::Shape:
          return problem(v->source(), key(name),
                         "must be \"a.b.c.d:port\" (an IPv4 address and a UDP port), got " +
                             describe(*v));
      }
      out = std::string(*s);
      at = k;
    };
    endpoint("peer", l.peer, seen.dpdk_peer);
    endpoint("local", l.local, seen.dpdk_local);
    if (const toml::node* v = node("port")) {
      if (const auto s = string_value(*v, key("port"))) {
        l.port = std::string(*s);
        seen.dpdk_port = true;
        dpdk_links_.push_back(
            DpdkLinkAt{path, seen_.size() - 1, v->source(), node("kind")->source()});
      }
    }
    if (const toml::node* v = node("peer_mac")) {
      if (const auto s = string_value(*v, key("peer_mac"))) {
        if (s->empty() || detail::is_mac(*s)) {
          l.peer_mac = std::string(*s);
        } else {
          problem(v->source(), key("peer_mac"),
                  "must be \"aa:bb:cc:dd:ee:ff\" (six hex bytes) or \"\" (learn it by ARP), got " +
                      describe(*v));
        }
      }
    }
    if (const toml::node* v = node("window")) {
      if (const auto n = ranged(*v, key("window"), detail::kMinWindow, detail::kMaxWindow)) {
        l.window = static_cast<uint32_t>(*n);
      }
    }
    if (const toml::node* v = node("rto_min_us")) {
      if (const auto n = ranged(*v, key("rto_min_us"), detail::kMinRtoUs, detail::kMaxRtoUs)) {
        l.rto_min_us = static_cast<uint32_t>(*n);
      }
    }
    if (problems_ == problems_before) {
      if (node("port") == nullptr) {
        return problem(t.source(), path,
                       "port is required for kind = \"dpdk\" (the name of a [[dpdk.ports]] "
                       "table)");
      }
      if (node("local") == nullptr) {
        return problem(t.source(), path,
                       "local is required for kind = \"dpdk\" (\"a.b.c.d:port\": this side's "
                       "IPv4 address and UDP port)");
      }
      if (node("peer") == nullptr) {
        return problem(t.source(), path,
                       "peer is required for kind = \"dpdk\" (\"a.b.c.d:port\": the IPv4 address "
                       "and UDP port of the peer's end of the link)");
      }
    }
    // Several links share a port, told apart by their local end (IPv4 address and UDP port):
    // one link per (port, local), and one per (port, peer).
    if (!seen.dpdk_port) return;
    for (size_t j = 0; j + 1 < seen_.size(); ++j) {
      const Seen& other = seen_[j];
      if (!other.dpdk_port || cfg_.links[j].port != l.port) continue;
      std::string on = "] on port ";
      on += detail::quoted(l.port);
      if (seen.dpdk_local && other.dpdk_local == seen.dpdk_local) {
        const toml::node& v = *node("local");
        problem(v.source(), key("local"),
                describe(v) + " is already the local end of links[" + std::to_string(j) + on +
                    " (each link on a port needs its own local address and UDP port)");
      }
      if (seen.dpdk_peer && other.dpdk_peer == seen.dpdk_peer) {
        const toml::node& v = *node("peer");
        problem(v.source(), key("peer"),
                describe(v) + " is already the peer of links[" + std::to_string(j) + on +
                    " (one link per peer)");
      }
    }
  }

  // [dpdk]: eal and [[dpdk.ports]].
  void dpdk(const toml::node& v) {
    const toml::table* t = v.as_table();
    if (t == nullptr) {
      problem(v.source(), "dpdk", "must be a table ([dpdk]), got " + describe(v));
      return;
    }
    for (const auto& [k, e] : *t) {
      const std::string_view name = k.str();
      if (name == "eal") {
        eal(e);
      } else if (name == "ports") {
        ports(e);
      } else {
        unknown(k, e, "dpdk", detail::kDpdkKeys);
      }
    }
  }

  void eal(const toml::node& v) {
    const toml::array* a = v.as_array();
    if (a == nullptr) {
      problem(v.source(), "dpdk.eal",
              "must be an array of strings (the EAL arguments), got " + describe(v));
      return;
    }
    if (a->size() > detail::kMaxEalArgs) {
      problem(v.source(), "dpdk.eal",
              "must have at most " + std::to_string(detail::kMaxEalArgs) + " arguments, got " +
                  std::to_string(a->size()));
      return;
    }
    for (size_t i = 0; i < a->size(); ++i) {
      const toml::node& e = *a->get(i);
      const std::string item = "dpdk.eal[" + std::to_string(i) + "]";
      const auto s = string_value(e, item);
      if (!s) continue;
      if (s->empty()) {
        problem(e.source(), item, "must be a non-empty argument");
        continue;
      }
      cfg_.dpdk.eal.emplace_back(*s);
    }
  }

  void ports(const toml::node& v) {
    const toml::array* ports = v.as_array();
    if (ports == nullptr || (!ports->empty() && !ports->is_array_of_tables())) {
      problem(v.source(), "dpdk.ports",
              "must be an array of tables ([[dpdk.ports]]), got " + describe(v));
      return;
    }
    for (size_t i = 0; i < ports->size(); ++i) {
      port("dpdk.ports[" + std::to_string(i) + "]", *ports->get(i)->as_table());
    }
  }

  void port(const std::string& path, const toml::table& t) {
    const size_t problems_before = problems_;
    DpdkPort p;
    bool has_name = false;
    for (const auto& [k, v] : t) {
      const std::string_view name = k.str();
      std::string key = path;
      key += '.';
      key += name;
      const detail::PortNumber* number = nullptr;
      for (const detail::PortNumber& n : detail::port_numbers()) {
        if (n.name == name) number = &n;
      }
      if (number != nullptr) {
        if (const auto n = ranged(v, key, number->min, number->max)) detail::set(p, *number, *n);
      } else if (name == "name") {
        has_name = true;
        const auto s = string_value(v, key);
        if (!s) continue;
        if (!detail::is_port_name(*s)) {
          problem(v.source(), key,
                  "must be 1 to " + std::to_string(detail::kMaxPortName) +
                      " characters of A-Z a-z 0-9 . _ : - (an ethdev name), got " + describe(v));
          continue;
        }
        for (size_t j = 0; j < cfg_.dpdk.ports.size(); ++j) {
          if (cfg_.dpdk.ports[j].name == *s) {
            problem(v.source(), key,
                    describe(v) + " is already the name of dpdk.ports[" + std::to_string(j) + "]");
            break;
          }
        }
        p.name = std::string(*s);
      } else if (name == "idle") {
        const auto s = string_value(v, key);
        if (!s) continue;
        if (*s != "busy" && *s != "adaptive" && *s != "inline") {
          problem(v.source(), key, "must be one of busy, adaptive, inline, got " + describe(v));
          continue;
        }
        p.idle = std::string(*s);
      } else if (name == "mac") {
        const auto s = string_value(v, key);
        if (!s) continue;
        if (!s->empty() && !detail::is_mac(*s)) {
          problem(v.source(), key,
                  "must be \"aa:bb:cc:dd:ee:ff\" (six hex bytes) or \"\" (the port's own), got " +
                      describe(v));
          continue;
        }
        p.mac = std::string(*s);
      } else {
        unknown(k, v, path, detail::kDpdkPortKeys);
      }
    }
    if (!has_name && problems_ == problems_before) {
      problem(t.source(), path,
              "name is required (the ethdev name: a --vdev name such as \"net_memif0\" or a PCI "
              "address)");
    }
    cfg_.dpdk.ports.push_back(std::move(p));
  }

  // After the whole file: each kind = "dpdk" link names a [[dpdk.ports]] table, and [dpdk] eal
  // is given.
  void dpdk_checks() {
    for (const DpdkLinkAt& at : dpdk_links_) {
      const LinkConfig& l = cfg_.links[at.index];
      if (cfg_.dpdk.eal.empty()) {
        std::string key = at.path;
        key += ".kind";
        problem(at.kind_at, key, "\"dpdk\" needs [dpdk] eal = [...] (the EAL arguments)");
      }
      bool found = false;
      for (const DpdkPort& p : cfg_.dpdk.ports) found = found || p.name == l.port;
      if (found) continue;
      std::string what = "no [[dpdk.ports]] table has name = ";
      what += detail::quoted(l.port);
      if (cfg_.dpdk.ports.empty()) {
        what += " (there are no [[dpdk.ports]] tables)";
      } else {
        constexpr size_t kListed = 8;
        what += " (the ports: ";
        for (size_t i = 0; i < cfg_.dpdk.ports.size() && i < kListed; ++i) {
          if (i != 0) what += ", ";
          what += detail::quoted(cfg_.dpdk.ports[i].name);
        }
        if (cfg_.dpdk.ports.size() > kListed) {
          what += " and ";
          what += std::to_string(cfg_.dpdk.ports.size() - kListed);
          what += " more";
        }
        what += ')';
      }
      std::string key = at.path;
      key += ".port";
      problem(at.port_at, key, what);
    }
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

  // After the whole file: each kind = "rdma" link's ring against limits.max_message_size (0 or
  // no ring_bytes: derived).
  void rdma_checks() {
    const uint64_t least = detail::rdma_min_ring(cfg_.limits.max_message_size);
    for (const RdmaLinkAt& at : rdma_links_) {
      LinkConfig& l = cfg_.links[at.index];
      if (!at.ring_given) {
        uint64_t ring = uint64_t{1} << 20;
        while (ring < least) ring <<= 1;
        l.ring_bytes = static_cast<uint32_t>(std::min<uint64_t>(ring, uint64_t{detail::kMaxRdmaRing}));
        continue;
      }
      if (l.ring_bytes >= least) continue;
      std::string key = at.path;
      key += ".ring_bytes";
      problem(at.ring_at, key,
              std::to_string(l.ring_bytes) + " is too small for limits.max_message_size = " +
                  std::to_string(cfg_.limits.max_message_size) + " (needs at least 4 x (max_message_size + 4100) = " +
                  std::to_string(least) + ", or 0 to derive it)");
    }
  }

  void cross_checks() {
    dpdk_checks();
    rdma_checks();
    const Tls& tls = cfg_.tls;
    const auto tls_at = [&](std::string_view name) {
      for (const auto& [f, at] : given_) {
        if (f->table == "tls" && f->name == name) return at;
      }
      return toml::source_region{};
    };
    if ((tls.listen_links || tls.listen_agents) && (tls.cert.empty() || tls.key.empty())) {
      problem(tls_at(tls.listen_links ? "listen_links" : "listen_agents"),
              tls.listen_links ? "tls.listen_links" : "tls.listen_agents", "a TLS listener needs tls.cert and tls.key");
    }
    if (tls.cert.empty() != tls.key.empty()) {
      problem(tls_at(tls.cert.empty() ? "key" : "cert"), tls.cert.empty() ? "tls.key" : "tls.cert",
              "tls.cert and tls.key go together");
    }
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
  // Per [[links]] table, in order: its endpoints where they were good (for one link per peer).
  struct Seen {
    std::string tcp_peer;  // host_port() key; "" = none
    bool dpdk_port = false;  // cfg_.links[i].port was given
    std::optional<uint64_t> dpdk_local, dpdk_peer;  // ipv4_port() keys
    std::string rdma_peer;  // host_port() key; "" = none
  };
  // The kind = "rdma" links, for rdma_checks().
  struct RdmaLinkAt {
    std::string path;  // "links[2]"
    size_t index;      // in cfg_.links
    bool ring_given;   // a non-zero ring_bytes; else derived
    toml::source_region ring_at;  // its ring_bytes value, else its kind value
  };
  std::vector<RdmaLinkAt> rdma_links_;
  std::vector<Seen> seen_;
  // The kind = "dpdk" links with a port, for the checks after the whole file.
  struct DpdkLinkAt {
    std::string path;  // "links[2]"
    size_t index;      // in cfg_.links
    toml::source_region port_at;  // its port and kind values
    toml::source_region kind_at;
  };
  std::vector<DpdkLinkAt> dpdk_links_;
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
