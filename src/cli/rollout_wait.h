// `--wait` for deploy, promote and rollback: follows a service until its change has settled,
// printing the service's events as progress lines.
#pragma once

#include <chrono>
#include <cstdint>
#include <set>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace flotilla::cli {

class ApiClient;

// The newest event's sequence number: events after it are the ones a change causes.
uint64_t last_event_seq(const ApiClient& client);
// The service's events after `after` (oldest first).
nlohmann::json service_events(const ApiClient& client, const std::string& service, uint64_t after);

struct RolloutWait {
  std::string command;  // for messages: "deploy"
  std::string service;
  uint64_t after = 0;   // last_event_seq() before the change was sent
  // Settled when a canary instance is ready (or the canary is over), rather than when no
  // rollout is left.
  bool canary = false;
  // Events that mean the change failed: "rollback", "deploy-failed", … Waiting goes on until
  // the service has settled (a rollback finished), then the command fails.
  std::set<std::string> failure_kinds;
  // Events not printed: the command already said as much.
  std::set<std::string> skip_kinds = {"deploy-started", "canary-started"};
  // Settled only once the service is `completed` or `failed` (a one-shot job run again).
  bool until_ended = false;
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

// Polls every 500 ms. Returns the exit status: 0 once settled without a failure event, 1 on a
// failure event, a timeout, or a service that is being removed. Throws on API errors.
int wait_for_rollout(const ApiClient& client, const RolloutWait& w);

// "2m", "30s": --timeout for --wait. Throws UsageError.
std::chrono::milliseconds parse_wait_timeout(const std::string& text);

}  // namespace flotilla::cli
