#include "acl.hpp"

#include "router/subjects.hpp"

namespace bus::daemon {

bool glob_match(std::string_view g, std::string_view s) noexcept {
  // Iterative matcher with one backtrack point (the last '*'): linear in practice.
  size_t gi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (gi < g.size() && (g[gi] == '?' || g[gi] == s[si])) {
      ++gi;
      ++si;
    } else if (gi < g.size() && g[gi] == '*') {
      star = gi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      gi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (gi < g.size() && g[gi] == '*') ++gi;
  return gi == g.size();
}

bool Grants::may_publish(std::string_view subject) const noexcept {
  if (all) return true;
  for (const auto& p : publish) {
    if (router::pattern_matches(p, subject)) return true;
  }
  return false;
}

bool Grants::may_subscribe(std::string_view pattern) const noexcept {
  if (all) return true;
  for (const auto& p : subscribe) {
    if (router::pattern_covers(p, pattern)) return true;
  }
  return false;
}

namespace {
// A matching rule's grants into `g` (a '>' both ways is everything).
void add_rule(Grants& g, const config::AclRule& r, bool& pub_all, bool& sub_all) {
  for (const auto& p : r.publish) {
    pub_all |= p == ">";
    g.publish.push_back(p);
  }
  for (const auto& p : r.subscribe) {
    sub_all |= p == ">";
    g.subscribe.push_back(p);
  }
}
}  // namespace

Grants grants_for_link(const config::Config& cfg, std::string_view identity) {
  Grants g;
  if (identity.empty()) {
    g.all = true;
    return g;
  }
  bool pub_all = false, sub_all = false, matched = false;
  for (const auto& r : cfg.acl) {
    if (!r.identity || !glob_match(*r.identity, identity)) continue;
    matched = true;
    add_rule(g, r, pub_all, sub_all);
  }
  g.all = (pub_all && sub_all) || !matched;  // no rule names it: as without an identity
  return g;
}

Grants grants_for(const config::Config& cfg, uid_t busd_uid, uid_t uid, gid_t gid,
                  std::string_view name, std::string_view identity) {
  Grants g;
  if (cfg.acl_owner_all && uid == busd_uid) {
    g.all = true;
    return g;
  }
  bool pub_all = false, sub_all = false;
  for (const auto& r : cfg.acl) {
    if (r.uid && *r.uid != uid) continue;
    if (r.gid && *r.gid != gid) continue;
    if (!glob_match(r.name, name)) continue;
    if (r.identity && (identity.empty() || !glob_match(*r.identity, identity))) continue;
    add_rule(g, r, pub_all, sub_all);
  }
  g.all = pub_all && sub_all;
  return g;
}

}  // namespace bus::daemon
