// `flotilla up`: everything flotilla.yaml describes, on this machine, in one process — today the
// agent (registry, health checks, API) and the gateway fed from it in-process.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/commands.h"
#include "config/flotilla_file.h"

namespace flotilla::cli {

namespace {
struct UpOptions {
  std::string file = "flotilla.yaml";
  std::string log_level = "info";
  std::string token;
  std::string node;
};
}  // namespace

std::function<int()> add_up(CLI::App& app) {
  auto o = std::make_shared<UpOptions>();
  auto* cmd = app.add_subcommand("up", "Run the agent and the gateway that flotilla.yaml describes");
  cmd->footer(
      "Runs in the foreground and logs to stderr; stops cleanly on SIGINT or SIGTERM (requests in\n"
      "flight finish first). The gateway routes to services registered with the agent's API.\n\n"
      "Example: flotilla up -f flotilla.yaml\n"
      "         curl -X PUT -d '{\"Name\":\"web\",\"Port\":9000}' localhost:7700/v1/agent/service/register\n"
      "         curl localhost:8080/");
  cmd->add_option("-f,--file", o->file, "The application's file")->capture_default_str();
  cmd->add_option("--token", o->token, "Secret that API writes must present; required off loopback")
      ->envname("FLOTILLA_TOKEN");
  cmd->add_option("--node", o->node, "Node name (default: the host name)");
  cmd->add_option("--log-level", o->log_level, "trace, debug, info, warn or error")->capture_default_str();
  return [o] {
    config::File file;
    try {
      file = config::load_file(o->file);
    } catch (const config::ConfigError& e) {
      std::cerr << "flotilla up: " << e.what() << "\n";
      return 2;
    }
    AgentOptions a;
    a.api = file.agent.api;
    a.data_dir = file.agent.data_dir;
    a.token = o->token;
    a.node = o->node;
    a.log_level = o->log_level;
    return run_agent(a, &file);
  };
}

}  // namespace flotilla::cli
