// The supervisor's insides, shared by the files that implement it (include supervisor.h
// elsewhere). Where things are:
//   supervisor.cpp  the public API, persistence (desired state, events), status, loading
//   instance.cpp    one instance's life: start, health, registration, drain, stop, exit, backoff
//   rollout.cpp     reconcile(): scaling, start-first rollouts, rollbacks, canaries, stop order
//   tick.cpp        the 1 s tick: CPU/memory, the gateway's load per instance, autoscaling
#pragma once

#include "supervisor/supervisor.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <spdlog/spdlog.h>

#include "common/event_loop.h"
#include "common/metrics.h"
#include "gateway/gateway.h"
#include "health/probe.h"
#include "registry/registry.h"
#include "registry/store/store.h"
#include "supervisor/autoscaler.h"
#include "supervisor/cgroup.h"
#include "supervisor/output_echo.h"
#include "supervisor/process.h"
#include "supervisor/spec.h"

namespace flotilla::supervisor {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

inline constexpr size_t kEventsKept = 1000;
inline constexpr Duration kBackoffBase = 100ms;
inline constexpr Duration kBackoffCap = 30s;
inline constexpr Duration kBackoffReset = 60s;
inline constexpr int kRolloutCrashLimit = 3;  // crashes of the new version during a rollout before it rolls back

int64_t wall_ms();
std::string random_suffix();
// A free port on 127.0.0.1 (the kernel's choice), avoiding ones handed out recently.
int pick_port(const std::set<int>& avoid);
inline double seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

// ---------------------------------------------------------------------------------------------

struct Load {  // what the gateway saw of an instance in some interval
  uint64_t requests = 0;
  uint64_t failures = 0;
  std::array<uint64_t, gateway::EndpointLoad::kBuckets> latency{};
  void add(const Load& o) {
    requests += o.requests;
    failures += o.failures;
    for (size_t i = 0; i < latency.size(); ++i) latency[i] += o.latency[i];
  }
};

struct Instance {
  enum class State { starting, ready, draining, stopping, exited };
  std::string id;
  std::string service;
  std::shared_ptr<const RunSpec> spec;
  std::string version;
  bool canary = false;
  uint64_t generation = 0;  // the service's generation when it started (see ServiceRuntime)
  int port = 0;
  pid_t shim = -1;
  pid_t pid = -1;
  State state = State::starting;
  Clock::time_point started_at = Clock::now();
  int64_t started_wall_ms = wall_ms();
  std::optional<Clock::time_point> ready_at;
  bool ever_healthy = false;
  int failures = 0;  // consecutive failed probes
  std::string last_probe;
  bool registered = false;
  int registered_weight = 0;
  bool stop_requested = false;  // the supervisor wants it gone: no restart when it exits
  bool no_restart = false;      // exited and its restart policy says it stays so
  bool exit_ok = false;         // it exited with code 0 (a one-shot that completed)
  std::string exit_text;
  std::unique_ptr<Timer> probe_timer;
  std::unique_ptr<Timer> stop_timer;
  std::unique_ptr<InstanceLog> log;
  std::string cgroup;
  // Usage and load sampling (every second).
  double cpu_percent = 0;
  uint64_t rss = 0;
  double last_cpu_seconds = -1;
  Clock::time_point last_sample_at;
  gateway::EndpointLoad last_load;
  uint64_t last_ejections = 0;
  Load analysis;  // since the current canary analysis interval began
  uint64_t analysis_ejections = 0;  // times the gateway ejected it in that interval

  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  bool live() const { return state == State::starting || state == State::ready; }
};

inline const char* state_name(Instance::State s) {
  switch (s) {
    case Instance::State::starting: return "starting";
    case Instance::State::ready: return "ready";
    case Instance::State::draining: return "draining";
    case Instance::State::stopping: return "stopping";
    case Instance::State::exited: return "exited";
  }
  return "?";
}

struct Canary {
  int percent = 0;
  std::shared_ptr<const RunSpec> spec;
  int passed = 0;  // analysis intervals passed in a row
  int crashes = 0;  // of the canary instance: 3 end the canary (canary-failed)
  Clock::time_point interval_started = Clock::now();
  std::string last_check;
};

struct Rollout {
  std::string from;  // versions
  std::string to;
  Clock::time_point started_at = Clock::now();
  int crashes = 0;   // of the new version
  bool rollback = false;
  bool restart = false;  // `flotilla restart`: the same version, new processes
  bool automatic = false;  // a rollback the failure of a rollout started
};

// After a rollout to a new version has finished: for deploy.healthy_timeout its crashes still
// count towards the rollback (a version that gets healthy, then crashes, is rolled back too; with
// one replica the old instance is already gone by then).
struct Probation {
  std::string version;
  Clock::time_point until;
  int crashes = 0;
};

struct ServiceRuntime {
  std::string name;
  config::ServiceSection section;
  std::shared_ptr<const RunSpec> spec;
  std::shared_ptr<const RunSpec> previous;
  // The last instance that crashed and is restarted as a new one: listed (exited, with how it
  // ended) while the service runs fewer instances than it wants, as pm2 ls shows an errored app.
  nlohmann::json last_crash;
  std::string file_version;   // version of the file's spec when it was last applied
  std::string deployed_version;  // the version `flotilla deploy` (or a canary promotion) put in place
  int file_replicas = 1;      // the file's replicas when it was last applied
  std::optional<int> replicas_override;  // `flotilla scale`
  std::optional<Canary> canary;
  std::optional<Rollout> rollout;
  std::optional<Probation> probation;
  std::vector<std::unique_ptr<Instance>> instances;
  // Bumped by `flotilla restart`: an instance of the current version started in an earlier
  // generation counts as old, so the rollout machinery replaces it (kubectl rollout restart).
  uint64_t generation = 0;
  // Restart backoff (per service).
  int crash_count = 0;
  std::string last_failure;  // of the current run of failures (shown while crash_count > 0)
  Clock::time_point next_start_at{};
  Clock::time_point last_crash_at{};
  uint64_t restarts = 0;
  std::string restarts_version;  // the version `restarts` counts (status shows 0 for another)
  std::unique_ptr<Timer> start_timer;
  bool started_once = false;
  bool removing = false;  // gone from the file: stop everything, then forget it
  std::deque<std::string> run_instances;  // started by this agent, newest last (at most 50): whose logs `logs` shows
  // Autoscaling.
  std::unique_ptr<Autoscaler> autoscaler;
  int autoscale_desired = 0;
  std::string autoscale_reason;
  // Load over the last seconds (one entry per sampler tick) for status and the autoscaler.
  std::deque<std::pair<Clock::time_point, Load>> window;
  int64_t inflight = 0;

  int desired() const {
    if (removing) return 0;
    if (replicas_override) return *replicas_override;
    if (autoscaler) return autoscale_desired;
    return section.replicas;
  }
};

// Requests per second, error ratio and p95 over the last `span` of the window.
struct Rates {
  double rps = 0;
  double error_ratio = 0;
  double p95_ms = 0;
  uint64_t requests = 0;
};

struct Supervisor::Impl {
  EventLoop& loop;
  registry::Registry& registry;
  store::Store& store;
  gateway::Gateway* gateway;
  metrics::Registry& metrics;
  Options options;
  std::string log_dir;
  std::string app;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);
  std::map<std::string, std::unique_ptr<ServiceRuntime>> services;
  std::vector<std::string> order;  // start order (dependencies first)
  std::map<pid_t, std::pair<std::string, std::string>> by_shim;  // shim pid -> (service, instance)
  std::map<int, Clock::time_point> recent_ports;
  std::unique_ptr<Reaper> reaper;
  std::unique_ptr<Timer> tick;
  std::deque<json> events;
  uint64_t next_seq = 1;
  std::map<uint64_t, std::function<void()>> waiters;
  uint64_t next_waiter = 1;
  bool stopping_all = false;
  std::vector<std::function<void()>> stop_done;
  std::optional<CgroupTree> cgroups;  // none: no cgroup v2
  bool cgroups_tried = false;         // set_up_cgroups ran (once the first supervised service exists)
  metrics::Counter* restarts_metric = nullptr;

  Impl(EventLoop& l, registry::Registry& r, store::Store& s, gateway::Gateway* g, metrics::Registry& m, Options o)
      : loop(l), registry(r), store(s), gateway(g), metrics(m), options(std::move(o)) {
    log_dir = (std::filesystem::path(options.data_dir) / "logs").string();
  }

  std::string service_key(const std::string& name) const { return "sup/svc/" + name; }

  // ---- supervisor.cpp ----
  void commit(std::vector<store::Op> ops, std::function<void(const std::string&)> done = {});
  json service_record(const ServiceRuntime& s) const;
  void persist(const ServiceRuntime& s, std::function<void(const std::string&)> done = {});
  void event(const std::string& service, const std::string& instance, const std::string& kind,
             const std::string& message, json data = json::object());
  void notify();
  ServiceRuntime* find(const std::string& name);
  ServiceRuntime& must(const std::string& name);
  Instance* instance(ServiceRuntime& s, const std::string& id);
  json instance_json(const ServiceRuntime& s, const Instance& i) const;
  json service_json(const ServiceRuntime& s) const;
  void add_service(const config::ServiceSection& section, const json* record);
  void kill_leftovers();
  // Moves the agent into a cgroup of its own and creates the instances' parent (cgroup v2), the
  // first time a supervised service exists; an application of the gateway alone is left where it is.
  void set_up_cgroups();

  // ---- instance.cpp ----
  std::vector<std::string> environment_for(const ServiceRuntime& s, const RunSpec& spec, const std::string& id,
                                           int port);
  void start_instance(ServiceRuntime& s, std::shared_ptr<const RunSpec> spec, bool canary);
  void schedule_probe(const std::string& service, const std::string& id, Duration after);
  void probe(const std::string& service, const std::string& id);
  void on_probe(const std::string& service, const std::string& id, bool ok, const std::string& output);
  void became_healthy(ServiceRuntime& s, Instance& i);
  // Services not started yet may wait for this one (depends_on: service_healthy): look now
  // rather than at the next 1 s tick.
  void start_waiting_dependents();
  int weight_for(const ServiceRuntime& s, const Instance& i) const;
  void register_instance(ServiceRuntime& s, Instance& i, std::function<void()> then);
  void deregister(Instance& i, std::function<void()> then = {});
  // Canary weights follow the number of stable instances.
  void sync_weights(ServiceRuntime& s);
  // A failed instance (unhealthy, or not healthy in time): out of routing, killed, replaced.
  void fail_instance(ServiceRuntime& s, Instance& i);
  // Graceful stop: maintenance, drain, stop_signal, kill after the grace period.
  void stop_instance(ServiceRuntime& s, Instance& i, const std::string& why);
  // In-flight requests finish: the gateway's count for the endpoint reaches 0 (and stays so for
  // two of its sweeps, so every worker has the snapshot without it), or the grace period ends.
  void wait_drained(const std::string& service, const std::string& id, Clock::time_point since, Clock::time_point until);
  void send_stop(ServiceRuntime& s, Instance& i);
  void on_exit(pid_t pid, ExitStatus status);
  // `why`: the exit or the start failure, shown by status while the failures go on.
  // `current_version`: of the service's current version and generation (not a canary, not an
  // old instance a rollout replaces): counts towards a rollout's (or its probation's) rollback.
  void on_crash(ServiceRuntime& s, bool current_version, const std::string& why);

  // ---- rollout.cpp ----
  // The dependencies whose condition does not hold yet (service_started, service_healthy,
  // service_completed_successfully); empty: the service may start.
  std::vector<std::string> unmet_dependencies(const ServiceRuntime& s) const;
  // Instances of the service's current version (canaries aside) that exited and stay so (restart:
  // no, or on-failure after 0): one-shot jobs that completed (exit 0) or failed.
  struct Finished {
    int completed = 0;
    int failed = 0;
  };
  Finished finished(const ServiceRuntime& s) const;
  bool dependencies_ready(const ServiceRuntime& s) { return unmet_dependencies(s).empty(); }
  // A rollout whose new instances fail: back to the previous version. A restart's: stopped, and
  // the instances started before it stay.
  void roll_back_failed(ServiceRuntime& s, const std::string& why);
  // An instance of the version and generation the service wants now (canaries aside).
  static bool current(const ServiceRuntime& s, const Instance& i) {
    return !i.canary && (i.spec == s.spec || i.version == s.spec->version()) && i.generation == s.generation;
  }
  // Makes what runs converge on what is desired, one step at a time. Called after every change.
  void reconcile(ServiceRuntime& s);
  // During stop_all, a service stops only once everything that depends on it has stopped.
  bool may_stop_now(const std::string& name);
  void maybe_finish_stop_all();
  void analyse_canary(ServiceRuntime& s, Clock::time_point now);
  // promote: the canary's spec becomes the service's (a rolling deploy replaces the stable
  // instances; the canary instance stays as one of the new ones). Otherwise the canary goes.
  void end_canary(ServiceRuntime& s, bool promote);

  // ---- tick.cpp ----
  void on_tick();
  void sample(ServiceRuntime& s, Clock::time_point now);
  Rates rates(const ServiceRuntime& s, Duration span) const;
  void autoscale(ServiceRuntime& s, Clock::time_point now);
  void apply_autoscale(ServiceRuntime& s, const AutoscaleDecision& d);
};

}  // namespace flotilla::supervisor
