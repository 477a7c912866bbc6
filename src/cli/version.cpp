#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/commands.h"

namespace flotilla::cli {

const char* const kVersion = FLOTILLA_VERSION;

std::function<int()> add_version(CLI::App& app) {
  app.add_subcommand("version", "Print flotilla's version");
  return [] {
    std::cout << "flotilla " << kVersion << "\n";
    return 0;
  };
}

}  // namespace flotilla::cli
