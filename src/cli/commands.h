// Each subcommand registers itself on the CLI11 app; main() runs the one chosen.
#pragma once

#include <functional>
#include <string>

namespace CLI {
class App;
}

namespace flotilla::config {
struct File;
}

namespace flotilla::cli {

// Each returns the action to run when its subcommand was chosen.
std::function<int()> add_agent(CLI::App& app);
std::function<int()> add_version(CLI::App& app);
std::function<int()> add_kv(CLI::App& app);
std::function<int()> add_services(CLI::App& app);
std::function<int()> add_config(CLI::App& app);

std::function<int()> add_up(CLI::App& app);
std::function<int()> add_gateway(CLI::App& app);

// The supervisor's: clients of the agent API under /v1/flotilla/.
std::function<int()> add_down(CLI::App& app);
std::function<int()> add_status(CLI::App& app);
std::function<int()> add_ps(CLI::App& app);
std::function<int()> add_logs(CLI::App& app);
std::function<int()> add_events(CLI::App& app);
std::function<int()> add_scale(CLI::App& app);
std::function<int()> add_deploy(CLI::App& app);
std::function<int()> add_promote(CLI::App& app);
std::function<int()> add_rollback(CLI::App& app);
std::function<int()> add_restart(CLI::App& app);

extern const char* const kVersion;

struct AgentOptions {
  std::string api = "127.0.0.1:7700";
  std::string data_dir = ".flotilla";
  std::string token;
  bool protect_reads = false;
  std::string node;
  std::string advertise;  // the node's address (empty: advertise_address of the API's host)
  std::string datacenter = "dc1";
  std::string log_level = "info";
  // `flotilla up` in the foreground: the services' output on stdout, prefixed by instance.
  bool attach = false;
};
// The agent (registry, health checks, API); with `file`, also the gateway of its `gateway:`
// section, fed from the registry in-process (`flotilla up`).
int run_agent(const AgentOptions& options, const config::File* file);
// The registry URL `flotilla gateway` follows for a file's agent.api (a wildcard: this host).
std::string registry_of_api(const std::string& api);
// The registry `flotilla gateway` follows without --registry, and why ("agent.api of FILE",
// "$FLOTILLA_API" or "default"): the agent.api of a file named with -f; else $FLOTILLA_API; else
// the agent.api of the default file; else http://127.0.0.1:7700 (the CLI's order for --api).
struct RegistryChoice {
  std::string url;
  std::string from;
};
RegistryChoice gateway_registry(const config::File& file, const std::string& file_name, bool file_given);
// Raises the open-files soft limit to the hard limit.
void raise_fd_limit();

}  // namespace flotilla::cli
