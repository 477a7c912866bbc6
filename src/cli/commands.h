// Each subcommand registers itself on the CLI11 app; main() runs the one chosen.
#pragma once

#include <functional>

namespace CLI {
class App;
}

namespace flotilla::cli {

// Each returns the action to run when its subcommand was chosen.
std::function<int()> add_agent(CLI::App& app);
std::function<int()> add_version(CLI::App& app);
std::function<int()> add_kv(CLI::App& app);
std::function<int()> add_services(CLI::App& app);
std::function<int()> add_config(CLI::App& app);

extern const char* const kVersion;

}  // namespace flotilla::cli
