// Who may publish and subscribe to what (config [[acl]] rules; basic, [hardening] extends).
// An identity is the peer's uid and gid (SO_PEERCRED) and its agent name. A rule applies when
// its uid, gid and name glob all match; the grants of every applicable rule add up. With
// acl_owner_all, busd's own uid may do everything.
//
// Remote identities: a remote agent or peer busd may carry an identity (its TLS client
// certificate's CN or SAN, or the identity of the [[tokens]] secret it presented). A rule with
// `identity = "glob"` applies only to an agent whose identity matches; rules without one apply
// as before (a remote agent's uid and gid are busd.tcp_agent_uid). A link's grants come from the
// rules with an identity glob that matches the link's identity only (grants_for_link).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace bus::daemon {

/// What one agent may do, computed when it registers (and again on a config reload).
struct Grants {
  bool all = false;                     // the owner, or a rule granting ">" both ways
  std::vector<std::string> publish;     // patterns
  std::vector<std::string> subscribe;   // patterns

  [[nodiscard]] bool may_publish(std::string_view subject) const noexcept;
  [[nodiscard]] bool may_subscribe(std::string_view pattern) const noexcept;
};

/// `identity`: a remote agent's ("" = none: rules with an identity glob do not apply).
[[nodiscard]] Grants grants_for(const config::Config& cfg, uid_t busd_uid, uid_t uid, gid_t gid,
                                std::string_view name, std::string_view identity = {});
/// What a peer busd whose link carries `identity` may do: `subscribe` is what this busd forwards
/// to it, `publish` what it accepts from it. From the rules with an identity glob that matches
/// only; no identity (""), or no rule whose identity glob matches it = everything (members of
/// one cluster trust each other).
[[nodiscard]] Grants grants_for_link(const config::Config& cfg, std::string_view identity);

/// '*' any run of characters, '?' one character.
[[nodiscard]] bool glob_match(std::string_view glob, std::string_view s) noexcept;

}  // namespace bus::daemon
