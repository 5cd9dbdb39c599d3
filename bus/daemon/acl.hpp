// Who may publish and subscribe to what (config [[acl]] rules; basic, [hardening] extends).
// An identity is the peer's uid and gid (SO_PEERCRED) and its agent name. A rule applies when
// its uid, gid and name glob all match; the grants of every applicable rule add up. With
// acl_owner_all, busd's own uid may do everything.
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

[[nodiscard]] Grants grants_for(const config::Config& cfg, uid_t busd_uid, uid_t uid, gid_t gid,
                                std::string_view name);

/// '*' any run of characters, '?' one character.
[[nodiscard]] bool glob_match(std::string_view glob, std::string_view s) noexcept;

}  // namespace bus::daemon
