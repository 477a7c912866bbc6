// The supervisor: runs the instances of every service of flotilla.yaml that has a `command`,
// and keeps what runs equal to what is desired. It lives on the control thread beside the
// registry and the gateway, and it owns both ends of an instance's life:
//
//   spawn (shim, logs, PORT, <DEP>_URL) → health probes → healthy → registered (traffic) ─┐
//   exit seen (SIGCHLD) → deregistered at once → restarted with backoff (restart policy)   │
//   stop: maintenance (no new requests) → in-flight requests finish (gateway counts, ≤ grace)
//         → stop_signal → SIGKILL of the whole tree after stop_grace_period ←──────────────┘
//
// Desired state per service — the running spec (and the previous one, for rollback), a scale
// override, a canary — is persisted in the store (keys "sup/…"), as are events, so `kill -9` of
// the agent loses nothing: the next agent kills leftovers, deregisters stale instances and
// starts what is desired. Rollouts are start-first, one instance at a time; a new version that
// does not become healthy in time is rolled back by itself.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/error.h"
#include "config/flotilla_file.h"
#include "supervisor/log_store.h"

namespace flotilla {
class EventLoop;
namespace registry {
class Registry;
}
namespace store {
class Store;
}
namespace gateway {
class Gateway;
}
namespace metrics {
class Registry;
}
}  // namespace flotilla

namespace flotilla::supervisor {

class OutputEcho;

struct Options {
  std::string data_dir;                     // instance logs go to <data_dir>/logs
  std::string shim_binary = "/proc/self/exe";
  LogLimits logs;
  // Set: every line of every instance is also printed there (a foreground `flotilla up`).
  std::shared_ptr<OutputEcho> echo;
};

class Supervisor {
 public:
  using Done = std::function<void(const std::string& error)>;  // empty error: done

  // gateway may be null (no routing: instances are still registered and supervised).
  Supervisor(EventLoop& loop, registry::Registry& registry, store::Store& store, gateway::Gateway* gateway,
             metrics::Registry& metrics, Options options);
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // The services whose dependents get <NAME>_URL: each needs a gateway listener of its own.
  static std::vector<std::string> dependency_targets(const config::File& file);

  // After registry.start() (and the gateway's listen()): restores the desired state from the
  // store, removes what a previous agent left behind, and starts the file's services in
  // dependency order.
  void start(const config::File& file);

  struct ApplyResult {
    // changed: a new version, rolling out; reconfigured: replicas, autoscale, deploy or
    // a depends_on condition changed, no instance replaced.
    // rerun: one-shot jobs that had failed, run again (as compose starts exited containers).
    // deployed: unchanged in the file, but running a version `flotilla deploy` (or a canary
    // promotion) put there, which the file does not describe: kept until the file changes it.
    std::vector<std::string> added, changed, reconfigured, removed, unchanged, rerun, deployed;
  };
  // A newer version of the file (`flotilla up` again): new services start, changed ones roll
  // out, removed ones stop; unchanged ones are untouched. Throws ApiError.
  ApplyResult apply(const config::File& file);
  // What apply refuses before changing anything (another application's file, a stopping
  // agent): throws ApiError.
  void check_apply(const config::File& file) const;

  // Each throws ApiError for a bad request, else answers `done` once the change is durable.
  void scale(const std::string& service, int replicas, Done done);
  void deploy(const std::string& service, const std::vector<std::string>& sets, int canary_percent, Done done);
  void promote(const std::string& service, Done done);
  // `flotilla restart`: each running instance is replaced by a new process of the same version,
  // one at a time, each new one healthy before an old one stops (start-first, as a deploy; a
  // fixed port: stop-first); one-shot jobs run again; a crash backoff ends. New processes that do
  // not become healthy stop the restart, and the instances not replaced yet keep running.
  struct Restart {
    int replacing = 0;  // running instances being replaced
    int rerun = 0;      // one-shot job instances that had ended and run again
  };
  Restart restart(const std::string& service);
  void rollback(const std::string& service, Done done);

  // Stops every instance, dependents before their dependencies, each drained first; `done` runs
  // when all have exited. `forget`: also drop the runtime desired state (scale, deploys), as
  // `flotilla down` does; a plain shutdown keeps it.
  // `why`: the event's message (default: what `forget` says).
  void stop_all(bool forget, std::function<void()> done, const std::string& why = {});

  nlohmann::json status() const;
  // empty: all. crashed: also the last instance of each service that crashed and is being
  // replaced, while the service runs fewer instances than it wants (`ps`, as pm2 ls shows an
  // errored app).
  nlohmann::json instances(const std::string& service, bool crashed = false) const;
  bool has_service(const std::string& service) const;
  // Every service, in start order (dependencies first).
  std::vector<std::string> service_names() const;

  // Events after sequence number `after` (oldest first, at most `limit`).
  // service: only that service's events (empty: all).
  nlohmann::json events(uint64_t after, size_t limit, const std::string& service = {}) const;
  uint64_t last_event() const;
  // Runs `wake` once (on the loop) when an event after `after` exists or a log line is written;
  // returns a handle for cancel_wait.
  uint64_t wait(std::function<void()> wake);
  void cancel_wait(uint64_t handle);

  const std::string& log_dir() const;
  // The instances this agent started for a service (the newest 50), running or not.
  std::vector<std::string> log_instances(const std::string& service) const;
  EventLoop& loop();
  const std::string& app_name() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::supervisor
