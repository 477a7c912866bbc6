// `flotilla config check [-f FILE]`: validates flotilla.yaml without starting anything.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/commands.h"
#include "common/duration.h"
#include "config/flotilla_file.h"

namespace flotilla::cli {

std::function<int()> add_config(CLI::App& app) {
  auto file = std::make_shared<std::string>("flotilla.yaml");
  auto* cmd = app.add_subcommand("config", "Work with flotilla.yaml");
  cmd->require_subcommand(1);
  auto* check = cmd->add_subcommand("check", "Validate a flotilla.yaml without starting anything");
  check->add_option("-f,--file", *file, "The file")->capture_default_str();
  check->footer("Exit status 0 when the file is valid; otherwise one line FILE:LINE:COL: what is wrong.");
  return [file, check]() -> int {
    if (!check->parsed()) return 2;
    try {
      auto f = config::load_file(*file);
      std::cout << *file << ": ok\n"
                << "  name:    " << f.name << "\n"
                << "  agent:   api " << f.agent.api << ", data dir " << f.agent.data_dir << ", store "
                << f.agent.store << "\n";
      if (f.gateway) {
        std::cout << "  gateway: listen";
        for (const auto& l : f.gateway->listen) std::cout << " " << l;
        std::cout << ", workers " << (f.gateway->workers ? std::to_string(f.gateway->workers) : "auto") << ", "
                  << f.gateway->routes.size() << " route(s)\n";
        for (const auto& r : f.gateway->routes) {
          const auto& m = r.match;
          std::string what = !m.path.empty() ? "path " + m.path : !m.path_prefix.empty() ? "prefix " + m.path_prefix : "any path";
          if (!m.host.empty()) what = "host " + m.host + ", " + what;
          std::cout << "    line " << r.line << ": " << what << " -> " << r.service << " (timeout "
                    << format_duration(r.timeout) << (r.retry ? ", retry" : "") << (r.rate_limit ? ", rate limit" : "")
                    << ")\n";
        }
      }
      auto order = f.start_order();
      if (!order.empty()) std::cout << "  services run by flotilla, in start-up order:\n";
      for (const auto* s : order) {
        std::string cmd;
        for (const auto& a : s->command) cmd += (cmd.empty() ? "" : " ") + a;
        std::string port = s->port_mode == config::ServiceSection::PortMode::automatic ? "auto"
                           : s->port_mode == config::ServiceSection::PortMode::none  ? "none"
                                                                                     : std::to_string(s->port);
        std::cout << "    " << s->name << ": " << cmd << " (replicas " << s->replicas;
        if (s->autoscale)
          std::cout << ", autoscale " << s->autoscale->min << ".." << s->autoscale->max << " on " << s->autoscale->metric;
        std::cout << ", port " << port << ", restart " << s->restart << ")";
        if (!s->depends_on.empty()) {
          std::cout << " after";
          for (const auto& d : s->depends_on) std::cout << " " << d.service << (d.condition == "service_healthy" ? " (healthy)" : "");
        }
        std::cout << "\n";
      }
      return 0;
    } catch (const config::ConfigError& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  };
}

}  // namespace flotilla::cli
