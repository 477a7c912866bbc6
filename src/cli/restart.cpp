// `flotilla restart [SERVICE…]`: new processes for the running version of each service (all of
// them without a name), one instance at a time, each new one healthy before an old one stops,
// as `pm2 reload` and `kubectl rollout restart` do. One-shot jobs run again.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/rollout_wait.h"
#include "cli/target.h"

namespace flotilla::cli {

namespace {

struct RestartOptions {
  Target target;
  std::vector<std::string> services;
  bool no_wait = false;
  std::string timeout = "5m";
};

int run(const RestartOptions& o) {
  const auto timeout = parse_wait_timeout(o.timeout);
  auto client = make_client(o.target);
  std::vector<std::string> services = o.services;
  if (services.empty()) {
    // Every service, in the agent's start order (dependencies first).
    auto status = json_of(client.request("GET", "/v1/flotilla/status"));
    for (const auto& s : status["Services"])
      if (s.value("Desired", 0) > 0 && s.value("State", "") != "removing") services.push_back(s.value("Name", ""));
    if (services.empty()) return fail("restart", "no service runs here: nothing to restart");
  }
  // One at a time: a service's dependents find it back in service before the next one goes.
  for (const auto& name : services) {
    const uint64_t before = last_event_seq(client);
    auto r = client.request("POST", "/v1/flotilla/services/" + url_encode_path(name) + "/restart");
    if (r.status != 200) return fail("restart", (runs_no_application(r) ? "" : name + ": ") + api_error(r));
    const auto answer = json_of(r);
    std::string message;
    for (const auto& e : service_events(client, name, before))
      if (e.value("Kind", "") == "restart-started") message = e.value("Message", "");
    std::cout << name << ": " << (message.empty() ? "restarting" : message) << std::endl;
    if (o.no_wait) continue;
    RolloutWait w;
    w.command = "restart";
    w.service = name;
    w.after = before;
    w.failure_kinds = {"restart-failed"};
    w.timeout = timeout;
    w.skip_kinds = {"restart-started"};
    // A one-shot job run again: done when it has ended, not when it has started.
    w.until_ended = answer.value("Rerun", 0) > 0 && answer.value("Replacing", 0) == 0;
    if (int rc = wait_for_rollout(client, w); rc != 0) return rc;
  }
  return 0;
}

}  // namespace

std::function<int()> add_restart(CLI::App& app) {
  auto o = std::make_shared<RestartOptions>();
  auto* cmd = app.add_subcommand("restart", "Replace a service's processes with new ones, one at a time (no downtime)");
  cmd->footer(
      "Each running instance of the service's current version is replaced by a new process: the\n"
      "new one starts and becomes healthy before an old one stops, so requests through the\n"
      "gateway never fail (a fixed port: stop first). Use it after changing the code on disk, or\n"
      "to clear a leak. One-shot jobs run again; a service waiting out a crash backoff starts now.\n"
      "New processes that do not become healthy stop the restart: the ones not replaced yet keep\n"
      "running, and the command exits 1. Without SERVICE every service restarts, in start order,\n"
      "each finishing before the next begins.\n\n"
      "Example: flotilla restart web");
  cmd->add_option("SERVICE", o->services, "The services (default: all)");
  cmd->add_flag("--no-wait", o->no_wait, "Return once the restart has begun");
  cmd->add_option("--timeout", o->timeout, "Give up waiting for a service after this long")->capture_default_str();
  add_target_options(cmd, o->target);
  return [o] { return run_guarded("restart", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
