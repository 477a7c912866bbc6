// `flotilla promote SERVICE`: the running canary's version becomes the service's, rolled out over
// the stable instances (the canary instance stays as one of the new ones).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/rollout_wait.h"
#include "cli/target.h"

namespace flotilla::cli {

namespace {

struct PromoteOptions {
  Target target;
  std::string service;
  bool wait = false;
  std::string timeout = "5m";
};

int run(const PromoteOptions& o) {
  if (o.service.empty()) throw UsageError("which service? usage: flotilla promote SERVICE");
  const auto timeout = parse_wait_timeout(o.timeout);
  auto client = make_client(o.target);
  std::string version;  // the canary's, from before it is promoted
  const auto status = json_of(client.request("GET", "/v1/flotilla/status"));
  for (const auto& s : status["Services"])
    if (s.value("Name", "") == o.service && s.contains("Canary")) version = s["Canary"].value("Version", "");
  const uint64_t before = last_event_seq(client);
  auto r = client.request("POST", "/v1/flotilla/services/" + url_encode_path(o.service) + "/promote");
  if (r.status != 200) return fail("promote", o.service + ": " + api_error(r));
  std::cout << o.service << ": canary" << (version.empty() ? "" : " version " + version)
            << " promoted, rolling out" << std::endl;
  if (!o.wait) return 0;
  RolloutWait w;
  w.command = "promote";
  w.service = o.service;
  w.after = before;
  w.failure_kinds = {"rollback", "deploy-failed"};
  w.timeout = timeout;
  return wait_for_rollout(client, w);
}

}  // namespace

std::function<int()> add_promote(CLI::App& app) {
  auto o = std::make_shared<PromoteOptions>();
  auto* cmd = app.add_subcommand("promote", "Make a service's canary its version for every instance");
  cmd->footer(
      "The canary's version replaces the stable instances one at a time, as flotilla deploy does.\n"
      "--wait follows that rollout and exits 1 if it was rolled back.\n\n"
      "Example: flotilla deploy web --set environment.FEATURE_X=on --canary 10\n"
      "         flotilla promote web --wait");
  cmd->add_option("SERVICE", o->service, "The service");
  cmd->add_flag("--wait", o->wait, "Wait until the rollout has settled");
  cmd->add_option("--timeout", o->timeout, "With --wait: give up after this long")->capture_default_str();
  add_target_options(cmd, o->target);
  return [o] { return run_guarded("promote", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
