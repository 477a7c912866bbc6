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
      "Registry (Consul-compatible API), health checks, KV and the gateway today; the supervisor next.\n"};
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
  add(flotilla::cli::add_agent);
  add(flotilla::cli::add_gateway);
  add(flotilla::cli::add_services);
  add(flotilla::cli::add_kv);
  add(flotilla::cli::add_config);
  add(flotilla::cli::add_version);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
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
