// `flotilla status`: one line per supervised service — version, state, ready instances, restarts,
// traffic — and what is going on with it (autoscaling, a rollout, a canary, a restart backoff).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/commands.h"
#include "cli/target.h"

namespace flotilla::cli {

namespace {

struct StatusOptions {
  Target target;
  bool json = false;
};

std::string notes_of(const nlohmann::json& s) {
  std::vector<std::string> notes;
  if (s.contains("Rollout")) {
    const auto& r = s["Rollout"];
    notes.push_back(std::string(r.value("Rollback", false) ? "rolling back " : "deploying ") +
                    r.value("From", std::string()) + "→" + r.value("To", std::string()) + " " +
                    human_duration(r.value("Seconds", 0.0)));
  }
  if (s.contains("Canary")) {
    const auto& c = s["Canary"];
    std::string note = "canary " + std::to_string(c.value("Percent", 0)) + "% " + c.value("Version", std::string());
    if (c.value("Analysis", false)) {
      note += " passed " + std::to_string(c.value("Passed", 0));
      if (c.contains("Iterations")) note += "/" + std::to_string(c["Iterations"].get<int>());
    } else {
      note += " (promote or rollback)";
    }
    notes.push_back(note);
  }
  if (s.contains("Autoscale")) {
    const auto& a = s["Autoscale"];
    notes.push_back("auto " + std::to_string(a.value("Min", 0)) + ".." + std::to_string(a.value("Max", 0)) + " " +
                    a.value("Metric", std::string()) + "=" + format_number(a.value("Target", 0.0), 2) + " → " +
                    std::to_string(a.value("Desired", 0)));
  }
  if (s.contains("NextRestartInSeconds"))
    notes.push_back("next restart in " + format_number(s["NextRestartInSeconds"].get<double>()) + "s");
  if (s.value("State", "") == "crash-looping" && s.contains("LastFailure"))
    notes.push_back("last: " + s["LastFailure"].get<std::string>());
  if (s.contains("WaitingFor")) {
    std::string deps;
    for (const auto& d : s["WaitingFor"]) deps += (deps.empty() ? "" : ", ") + d.get<std::string>();
    notes.push_back("waiting for " + deps);
  }
  // One-shot services: instances that exited and stay so (restart: on-failure or no).
  if (const int n = s.value("Completed", 0); n > 0) notes.push_back(std::to_string(n) + " completed (exit 0)");
  if (const int n = s.value("Failed", 0); n > 0) notes.push_back(std::to_string(n) + " failed, not restarted (flotilla ps)");
  std::string out;
  for (const auto& n : notes) out += (out.empty() ? "" : "; ") + n;
  return out;
}

int run(const StatusOptions& o) {
  auto client = make_client(o.target);
  auto r = client.request("GET", "/v1/flotilla/status");
  auto status = json_of(r);
  if (o.json) {
    std::cout << status.dump(2) << "\n";
    return 0;
  }
  const auto& services = status["Services"];
  std::cout << status.value("Name", std::string()) << ": " << services.size()
            << (services.size() == 1 ? " service" : " services") << " (agent " << client.address() << ")"
            << (status.value("Stopping", false) ? ", stopping" : "") << "\n";
  Table t({"SERVICE", "VERSION", "STATE", "READY", "RESTARTS", "REQ/S", "ERR%", "P95", "NOTES"});
  for (const auto& s : services) {
    const int ready = s.value("Ready", 0), desired = s.value("Desired", 0), total = s.value("Total", 0);
    std::string ready_text = std::to_string(ready) + "/" + std::to_string(desired);
    // A one-shot job that ended has no instance left by design: "(0)" would read as an outage.
    const int ended = s.value("Completed", 0) + s.value("Failed", 0);
    if (total != desired && !(ended > 0 && total + ended >= desired)) ready_text += " (" + std::to_string(total) + ")";
    const double rps = s.value("RequestsPerSecond", 0.0);
    const bool traffic = rps > 0;
    t.add({s.value("Name", std::string()), s.value("Version", std::string()), s.value("State", std::string()),
           ready_text, std::to_string(s.value("Restarts", 0)), format_number(rps),
           traffic ? format_number(s.value("ErrorRatio", 0.0) * 100) + "%" : "-",
           traffic ? format_number(s.value("P95Ms", 0.0)) + "ms" : "-", notes_of(s)});
  }
  t.print(std::cout);
  return 0;
}

}  // namespace

std::function<int()> add_status(CLI::App& app) {
  auto o = std::make_shared<StatusOptions>();
  auto* cmd = app.add_subcommand("status", "Show each supervised service: version, state, ready instances, traffic");
  cmd->footer(
      "READY is ready/desired instances, with all live ones in parentheses when that differs (a\n"
      "rollout starts the new instance first). REQ/S, ERR% and P95 cover the gateway's last 10 s.\n"
      "NOTES tells what is in progress: a rollout, a canary, autoscaling, a restart backoff, the\n"
      "dependencies a service waits for, one-shot instances that completed or failed.\n\n"
      "Example: flotilla status -f flotilla.yaml");
  add_target_options(cmd, o->target);
  cmd->add_flag("--json", o->json, "Print the agent's JSON");
  return [o] { return run_guarded("status", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
