// busctl config check FILE: the file parsed and validated exactly as busd would at start
// (bus/config), without starting anything.
#include <cstdio>
#include <string>

#include "commands.hpp"
#include "config/config.hpp"
#include "extras.hpp"

namespace bus::ctl {

int run_config_check(const std::string& file) {
  auto cfg = config::load_file(file);
  if (!cfg) {
    const auto& e = cfg.error();
    std::fprintf(stderr, "%s\n", e.detail().empty() ? e.message().c_str() : e.detail().c_str());
    return kExitConfigInvalid;
  }
  std::printf("%s: OK\n", file.c_str());
  return kExitOk;
}

}  // namespace bus::ctl
