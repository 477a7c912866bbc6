// `flotilla rollback SERVICE`: ends a canary, or returns a service to its previous version.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/rollout_wait.h"
#include "cli/target.h"

namespace flotilla::cli {

namespace {

struct RollbackOptions {
  Target target;
  std::string service;
  bool wait = false;
  std::string timeout = "5m";
};

int run(const RollbackOptions& o) {
  if (o.service.empty()) throw UsageError("which service? usage: flotilla rollback SERVICE");
  const auto timeout = parse_wait_timeout(o.timeout);
  auto client = make_client(o.target);
  // What there is to roll back decides what the answer means: a canary, else the version.
  auto status = json_of(client.request("GET", "/v1/flotilla/status"));
  nlohmann::json service;
  for (const auto& s : status["Services"])
    if (s.value("Name", "") == o.service) service = s;
  const uint64_t before = last_event_seq(client);
  auto r = client.request("POST", "/v1/flotilla/services/" + url_encode_path(o.service) + "/rollback");
  if (r.status != 200) return fail("rollback", o.service + ": " + api_error(r));
  if (service.is_object() && service.contains("Canary")) {
    std::cout << o.service << ": canary " << service["Canary"].value("Version", "") << " rolled back" << std::endl;
  } else {
    std::string to = service.is_object() ? service.value("PreviousVersion", "") : "";
    std::cout << o.service << ": rolling back" << (to.empty() ? "" : " to version " + to) << std::endl;
  }
  if (!o.wait) return 0;
  RolloutWait w;
  w.command = "rollback";
  w.service = o.service;
  w.after = before;
  w.failure_kinds = {"deploy-failed", "rollback-failed"};
  w.timeout = timeout;
  return wait_for_rollout(client, w);
}

}  // namespace

std::function<int()> add_rollback(CLI::App& app) {
  auto o = std::make_shared<RollbackOptions>();
  auto* cmd = app.add_subcommand("rollback", "Stop a service's canary, or return it to its previous version");
  cmd->footer(
      "With a canary running, the canary instance stops and all traffic goes back to the stable\n"
      "version. Otherwise the previous version (before the last deploy or flotilla up) is rolled\n"
      "out again, one instance at a time; --wait follows it.\n\n"
      "Example: flotilla rollback web --wait");
  cmd->add_option("SERVICE", o->service, "The service");
  cmd->add_flag("--wait", o->wait, "Wait until the rollback has settled");
  cmd->add_option("--timeout", o->timeout, "With --wait: give up after this long")->capture_default_str();
  add_target_options(cmd, o->target);
  return [o] { return run_guarded("rollback", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
