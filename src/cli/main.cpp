#include <CLI/CLI.hpp>

#include <iostream>
#include <string_view>
#include <vector>

#include "cli/commands.h"
#include "supervisor/process.h"

int main(int argc, char** argv) {
  // The per-instance shim the supervisor starts (supervisor/process.h); never typed by users.
  if (argc > 1 && std::string_view(argv[1]) == "__shim") return flotilla::supervisor::run_shim(argc, argv);
  CLI::App app{
      "flotilla: a microservice platform in one binary.\n"
      "Runs your services (supervisor: restarts, health checks, rolling deploys, canaries, autoscaling),\n"
      "routes to them (gateway) and keeps their registry (Consul-compatible API, KV).\n"};
  app.name("flotilla");
  app.set_version_flag("--version", std::string("flotilla ") + flotilla::cli::kVersion);
  app.require_subcommand(0, 1);
  std::vector<std::pair<CLI::App*, std::function<int()>>> commands;
  auto add = [&](std::function<int()> (*fn)(CLI::App&)) {
    auto before = app.get_subcommands({}).size();
    auto action = fn(app);
    auto subs = app.get_subcommands({});
    commands.emplace_back(subs.size() > before ? subs.back() : nullptr, std::move(action));
  };
  add(flotilla::cli::add_up);
  add(flotilla::cli::add_down);
  add(flotilla::cli::add_status);
  add(flotilla::cli::add_ps);
  add(flotilla::cli::add_logs);
  add(flotilla::cli::add_events);
  add(flotilla::cli::add_scale);
  add(flotilla::cli::add_deploy);
  add(flotilla::cli::add_promote);
  add(flotilla::cli::add_rollback);
  add(flotilla::cli::add_restart);
  add(flotilla::cli::add_agent);
  add(flotilla::cli::add_gateway);
  add(flotilla::cli::add_services);
  add(flotilla::cli::add_kv);
  add(flotilla::cli::add_config);
  add(flotilla::cli::add_version);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; any mistake in the command line is a usage error: 2.
    return app.exit(e) == 0 ? 0 : 2;
  }
  for (auto& [sub, action] : commands)
    if (sub && sub->parsed()) return action();
  auto rest = app.remaining();
  if (!rest.empty()) {
    std::cerr << "flotilla: unknown command \"" << rest.front() << "\"; run 'flotilla --help' for the list\n";
    return 2;
  }
  std::cout << app.help() << "Run 'flotilla COMMAND --help' for a command's options.\n";
  return 2;
}
