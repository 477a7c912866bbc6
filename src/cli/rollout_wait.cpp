#include "cli/rollout_wait.h"

#include <nlohmann/json.hpp>

#include <iostream>
#include <optional>
#include <thread>

#include "cli/api_client.h"
#include "cli/target.h"
#include "common/duration.h"

namespace flotilla::cli {

using nlohmann::json;

uint64_t last_event_seq(const ApiClient& client) {
  auto answer = json_of(client.request("GET", "/v1/flotilla/events?limit=1"));
  return answer.value("Last", uint64_t{0});
}

json service_events(const ApiClient& client, const std::string& service, uint64_t after) {
  json out = json::array();
  for (;;) {
    auto answer = json_of(client.request("GET", "/v1/flotilla/events?limit=1000&after=" + std::to_string(after)));
    const auto& events = answer["Events"];
    for (const auto& e : events) {
      after = std::max(after, e.value("Seq", uint64_t{0}));
      if (e.value("Service", "") == service) out.push_back(e);
    }
    if (events.size() < 1000) return out;
  }
}

std::chrono::milliseconds parse_wait_timeout(const std::string& text) {
  auto d = parse_duration(text);
  if (!d || d->count() <= 0) throw UsageError("--timeout \"" + text + "\" is not a duration such as 5m or 90s");
  return std::chrono::duration_cast<std::chrono::milliseconds>(*d);
}

namespace {

json find_service(const json& status, const std::string& name) {
  for (const auto& s : status["Services"])
    if (s.value("Name", "") == name) return s;
  return nullptr;
}

bool canary_instance_ready(const ApiClient& client, const std::string& service) {
  auto instances = json_of(client.request("GET", "/v1/flotilla/instances?service=" + url_encode_path(service)));
  for (const auto& i : instances)
    if (i.value("Canary", false) && i.value("State", "") == "ready") return true;
  return false;
}

}  // namespace

int wait_for_rollout(const ApiClient& client, const RolloutWait& w) {
  const auto deadline = std::chrono::steady_clock::now() + w.timeout;
  uint64_t after = w.after;
  std::string failure;  // the first failure event's message
  // Prints the events since the last call; an exit status once one ends the wait.
  auto read_events = [&]() -> std::optional<int> {
    for (const auto& e : service_events(client, w.service, after)) {
      after = std::max(after, e.value("Seq", uint64_t{0}));
      const std::string instance = e.value("Instance", "");
      const std::string what = e.value("Kind", "");
      // The command itself already said this much.
      if (w.skip_kinds.count(what)) continue;
      std::cout << "  " << local_clock(e.value("Time", int64_t{0})) << " " << (instance.empty() ? w.service : instance)
                << ": " << e.value("Message", "") << std::endl;
      const std::string kind = e.value("Kind", "");
      if (failure.empty() && w.failure_kinds.count(kind)) failure = e.value("Message", kind);
      // Nothing more comes of these: no rollback to wait for.
      if (kind == "deploy-failed" || kind == "restart-failed" || kind == "rollback-failed")
        return fail(w.command, w.service + ": " + e.value("Message", kind));
    }
    return std::nullopt;
  };
  for (;;) {
    if (auto rc = read_events()) return *rc;
    auto s = find_service(json_of(client.request("GET", "/v1/flotilla/status")), w.service);
    if (s.is_null()) return fail(w.command, w.service + ": the service is gone from the application");
    const std::string state = s.value("State", "");
    if (state == "removing") return fail(w.command, w.service + ": the service is being removed");
    bool settled = false;
    if (!s.contains("Rollout")) {
      if (w.canary && s.contains("Canary")) settled = canary_instance_ready(client, w.service);
      else if (w.until_ended) settled = state == "completed" || state == "failed";
      else settled = state == "running" || state == "stopped" || state == "completed" || state == "failed";
    }
    if (settled) {
      // What happened between the last read of the events and this status (a rollback that
      // finished meanwhile, say) counts too.
      if (auto rc = read_events()) return *rc;
      if (!failure.empty()) return fail(w.command, w.service + ": " + failure);
      if (state == "failed")  // a one-shot job that ran and failed
        return fail(w.command, w.service + ": the one-shot job failed; see flotilla logs " + w.service);
      const std::string ready = std::to_string(s.value("Ready", 0)) + "/" + std::to_string(s.value("Desired", 0));
      if (s.contains("Canary"))
        std::cout << w.service << ": canary " << s["Canary"].value("Version", "") << " ready, taking "
                  << s["Canary"].value("Percent", 0) << "% of the traffic\n";
      else if (state == "completed")
        std::cout << w.service << ": version " << s.value("Version", "") << " completed\n";
      else
        std::cout << w.service << ": version " << s.value("Version", "") << " running (" << ready << " ready)\n";
      return 0;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      return fail(w.command, w.service + ": not settled after " + format_duration(w.timeout) + " (state " + state +
                                 "); see flotilla events --service " + w.service);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

}  // namespace flotilla::cli
