// `flotilla deploy SERVICE [--set KEY=VALUE]… [--canary PERCENT] [--wait]`: a new version of a
// service from its current one with a few settings changed, rolled out one instance at a time
// (start-first), or first as a canary that takes a share of the traffic.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <iostream>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/rollout_wait.h"
#include "cli/target.h"

namespace flotilla::cli {

namespace {

struct DeployOptions {
  Target target;
  std::string service;
  std::vector<std::string> sets;
  std::string canary;  // PERCENT, or PERCENT%
  bool wait = false;
  std::string timeout = "5m";
};

int run(const DeployOptions& o) {
  if (o.service.empty())
    throw UsageError("which service? usage: flotilla deploy SERVICE [--set KEY=VALUE]… [--canary PERCENT]");
  int canary = 0;
  if (!o.canary.empty()) {
    std::string p = o.canary;
    if (p.back() == '%') p.pop_back();
    if (!p.empty() && p.size() <= 3 && p.find_first_not_of("0123456789") == std::string::npos) canary = std::stoi(p);
    if (canary < 1 || canary > 99) throw UsageError("--canary \"" + o.canary + "\": give a percentage from 1 to 99");
  }
  std::vector<std::string> sets;
  for (const auto& a : o.sets) {
    auto eq = a.find('=');
    if (eq == std::string::npos || eq == 0)
      throw UsageError("--set \"" + a + "\" is not KEY=VALUE, such as environment.LOG_LEVEL=debug");
    std::string key = a.substr(0, eq), value = a.substr(eq + 1);
    // The agent runs here: a relative directory means one relative to where the command is typed.
    if (key == "working_dir" && !value.empty() && std::filesystem::path(value).is_relative())
      value = std::filesystem::absolute(value).lexically_normal().string();
    sets.push_back(key + "=" + value);
  }
  const auto timeout = parse_wait_timeout(o.timeout);

  auto client = make_client(o.target);
  const uint64_t before = last_event_seq(client);
  nlohmann::json body = {{"set", sets}};
  if (canary > 0) body["canary"] = canary;
  auto r = client.request("POST", "/v1/flotilla/services/" + url_encode_path(o.service) + "/deploy", body.dump());
  if (r.status != 200) return fail("deploy", (runs_no_application(r) ? "" : o.service + ": ") + api_error(r));

  std::string version;
  for (const auto& e : service_events(client, o.service, before)) {
    const std::string kind = e.value("Kind", "");
    if ((kind == "deploy-started" || kind == "canary-started") && e.contains("Data")) {
      const auto& d = e["Data"];
      version = d.value("to", d.value("version", std::string()));
    }
  }
  if (canary > 0)
    std::cout << o.service << ": canary at " << canary << "%" << (version.empty() ? "" : " (version " + version + ")")
              << "\n";
  else
    std::cout << o.service << ": rolling out" << (version.empty() ? "" : " version " + version) << "\n";
  std::cout.flush();
  if (!o.wait) return 0;
  RolloutWait w;
  w.command = "deploy";
  w.service = o.service;
  w.after = before;
  w.canary = canary > 0;
  w.failure_kinds = {"rollback", "deploy-failed", "canary-failed", "canary-rolled-back"};
  w.timeout = timeout;
  return wait_for_rollout(client, w);
}

}  // namespace

std::function<int()> add_deploy(CLI::App& app) {
  auto o = std::make_shared<DeployOptions>();
  auto* cmd = app.add_subcommand("deploy", "Roll out a new version of a service (optionally as a canary)");
  cmd->footer(
      "The new version is the running one with --set applied: environment.NAME=VALUE, command=…,\n"
      "working_dir=… or stop_grace_period=…. Instances are replaced one at a time, each new one\n"
      "healthy before an old one stops; a version that does not become healthy is rolled back by\n"
      "itself. --canary runs one instance of it that takes PERCENT of the traffic until flotilla\n"
      "promote or rollback (or the automatic canary analysis) decides. --wait follows the rollout\n"
      "and exits 1 if it was rolled back.\n\n"
      "Example: flotilla deploy web --set environment.LOG_LEVEL=debug --wait");
  cmd->add_option("SERVICE", o->service, "The service");
  cmd->add_option("--set", o->sets, "KEY=VALUE to change (repeatable)")->allow_extra_args(false);
  cmd->add_option("--canary", o->canary, "Deploy as a canary taking this percentage (1-99) of the traffic");
  cmd->add_flag("--wait", o->wait, "Wait until the rollout (or the canary instance) has settled");
  cmd->add_option("--timeout", o->timeout, "With --wait: give up after this long")->capture_default_str();
  add_target_options(cmd, o->target);
  return [o] { return run_guarded("deploy", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
