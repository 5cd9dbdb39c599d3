// busd: the bus daemon. `busd` runs a single-host bus on the embedded default config.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "config/config.hpp"
#include "daemon.hpp"
#include "log.hpp"
#include "notify.hpp"

int main(int argc, char** argv) {
  CLI::App app{"busd: the message bus daemon (one per host)"};
  std::string config_path;
  bool print_default = false;
  bool check = false;
  std::string log_level;
  app.set_version_flag("--version", std::string("busd ") + BUSD_VERSION + " (links: " +
                                        std::string(bus::daemon::Daemon::link_kinds()) + ")");
  app.add_option("--config", config_path, "TOML config file (default: the embedded default config)");
  app.add_flag("--print-default-config", print_default, "print the embedded default config and exit");
  app.add_flag("--check-config", check, "check the config (--config FILE, or the default) and exit");
  app.add_option("--log-level", log_level, "error | warn | info | debug (overrides the config)");
  CLI11_PARSE(app, argc, argv);

  if (print_default) {
    std::fputs(std::string(bus::config::default_config_text()).c_str(), stdout);
    return 0;
  }
  auto cfg = config_path.empty() ? bus::Expected<bus::config::Config>(bus::config::defaults())
                                 : bus::config::load_file(config_path);
  if (!cfg) {
    std::fprintf(stderr, "busd: %s\n", cfg.error().message().c_str());
    return 1;
  }
  if (!log_level.empty()) {
    if (!bus::log::set_level(log_level)) {
      std::fprintf(stderr, "busd: --log-level: '%s' is not one of error, warn, info, debug\n", log_level.c_str());
      return 2;
    }
    cfg->log_level = log_level;
  }
  if (check) {
    std::printf("%s: ok\n", config_path.empty() ? "<default config>" : config_path.c_str());
    return 0;
  }
  bus::daemon::Daemon d({*cfg, config_path});
  if (auto s = d.start(); !s) {
    std::fprintf(stderr, "busd: %s\n", s.error().message().c_str());
    return 1;
  }
  // Under systemd (Type=notify): the socket and every listener accept now.
  auto& sd = bus::daemon::notify::systemd();
  if (!sd.error().empty()) bus::log::warn("systemd_notify_unusable", {{"why", sd.error()}});
  sd.ready("accepting agents on " + d.socket_path());
  return d.run();
}
