// What one version of a supervised service runs: the part of its flotilla.yaml section that,
// when it changes, needs new instances (a rollout). Replicas, autoscale and the gateway's keys
// are not part of it: changing them never restarts anything. A spec is a value: it is persisted
// as JSON in the store (current, previous and canary versions) and named by its version, a short
// hash of that JSON.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "config/flotilla_file.h"

namespace flotilla::supervisor {

struct RunSpec {
  std::vector<std::string> command;
  std::string working_dir;
  std::vector<std::pair<std::string, std::string>> environment;  // sorted by key
  config::ServiceSection::PortMode port_mode = config::ServiceSection::PortMode::automatic;
  int port = 0;
  config::Healthcheck healthcheck;
  std::string restart = "always";
  std::string stop_signal = "SIGTERM";
  Duration stop_grace_period = std::chrono::seconds(10);
  uint64_t memory_bytes = 0;
  double cpus = 0;
  // The depends_on services, sorted: each gives the instances a <NAME>_URL, so a change is a
  // new environment (a rollout). Left out of the JSON when empty, so the versions of services
  // without dependencies are those earlier flotilla versions computed.
  std::vector<std::string> dependencies;

  // 8 hex digits of xxHash64 over the canonical JSON: equal specs, equal versions.
  std::string version() const;
  nlohmann::json to_json() const;
  // Throws std::runtime_error for a record this version cannot read.
  static RunSpec from_json(const nlohmann::json& j);
};

RunSpec run_spec(const config::ServiceSection& section);

// One `flotilla deploy --set KEY=VALUE`: environment.NAME=VALUE, command=STRING (run by
// /bin/sh -c), working_dir=PATH (absolute, an existing directory), stop_grace_period=DURATION.
// Throws std::invalid_argument with a message naming the key.
void apply_set(RunSpec& spec, const std::string& assignment);

// The variable that carries a dependency's address: "user-db" -> "USER_DB_URL".
std::string url_variable(const std::string& service);

}  // namespace flotilla::supervisor
