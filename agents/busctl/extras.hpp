// busctl's subcommands that need more than the counters page: config check (bus/config) and
// shell completion (from main.cpp's command tree).
#pragma once

#include <string>

namespace CLI {
class App;
}

namespace bus::ctl {

/// Parses and validates FILE as busd would: "FILE: OK" and kExitOk, or its one-line error on
/// stderr and kExitConfigInvalid.
int run_config_check(const std::string& file);

/// A bash completion script for `app`'s commands, subcommands and options: options whose type
/// name is FILE or PATH (and FILE positionals) complete file names.
[[nodiscard]] std::string bash_completion(const CLI::App& app);

}  // namespace bus::ctl
