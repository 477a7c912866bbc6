// `flotilla ps [SERVICE]`: the instances the supervisor runs (and the last exited ones), one line
// each: process, port, state, health, uptime, CPU and memory, version, how it ended.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/target.h"

namespace flotilla::cli {

namespace {

struct PsOptions {
  Target target;
  std::string service;
  bool json = false;
};

int run(const PsOptions& o) {
  auto client = make_client(o.target);
  // With the instance of each service that crashed last and is being replaced.
  std::string path = "/v1/flotilla/instances?crashed=1";
  if (!o.service.empty()) path += "&service=" + url_encode_path(o.service);
  auto instances = json_of(client.request("GET", path));
  if (o.json) {
    std::cout << instances.dump(2) << "\n";
    return 0;
  }
  Table t({"INSTANCE", "PID", "PORT", "STATE", "HEALTH", "UPTIME", "CPU%", "MEM", "VERSION", "EXIT"});
  for (const auto& i : instances) {
    const std::string state = i.value("State", std::string());
    const bool exited = state == "exited";
    const int pid = i.value("Pid", 0), port = i.value("Port", 0);
    const double mib = static_cast<double>(i.value("MemoryBytes", uint64_t{0})) / (1024.0 * 1024.0);
    std::string version = i.value("Version", std::string());
    if (i.value("Canary", false)) version += "*canary";
    t.add({i.value("ID", std::string()), exited || pid <= 0 ? "-" : std::to_string(pid),
           port > 0 ? std::to_string(port) : "-", state, i.value("Health", std::string("-")),
           exited ? "-" : human_duration(i.value("UptimeSeconds", 0.0)),
           exited ? "-" : format_number(i.value("CpuPercent", 0.0)),
           exited || mib <= 0 ? "-" : format_number(mib, 1) + "MiB", version,
           exited ? i.value("Exit", std::string()) : ""});
  }
  t.print(std::cout);
  return 0;
}

}  // namespace

std::function<int()> add_ps(CLI::App& app) {
  auto o = std::make_shared<PsOptions>();
  auto* cmd = app.add_subcommand("ps", "List the supervised instances: process, port, state, health, resources");
  cmd->footer(
      "One line per instance of every supervised service (or of SERVICE), exited ones included\n"
      "with how they ended. MEM is the resident memory of the instance's whole process tree;\n"
      "VERSION is marked *canary for a canary instance.\n\n"
      "Example: flotilla ps web");
  cmd->add_option("SERVICE", o->service, "Only this service's instances");
  add_target_options(cmd, o->target);
  cmd->add_flag("--json", o->json, "Print the agent's JSON");
  return [o] { return run_guarded("ps", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
