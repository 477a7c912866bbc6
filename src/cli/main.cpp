#include <CLI/CLI.hpp>

#include <iostream>
#include <vector>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{
      "flotilla: a microservice platform in one binary.\n"
      "Registry (Consul-compatible API), health checks and KV today; gateway and supervisor next.\n"};
  app.name("flotilla");
  app.require_subcommand(1);
  app.footer("Run 'flotilla COMMAND --help' for a command's options.");
  std::vector<std::pair<CLI::App*, std::function<int()>>> commands;
  auto add = [&](std::function<int()> (*fn)(CLI::App&)) {
    auto before = app.get_subcommands({}).size();
    auto action = fn(app);
    auto subs = app.get_subcommands({});
    commands.emplace_back(subs.size() > before ? subs.back() : nullptr, std::move(action));
  };
  add(flotilla::cli::add_agent);
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
  std::cerr << app.help();
  return 2;
}
