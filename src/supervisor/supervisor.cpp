#include "supervisor/supervisor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
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
#include "supervisor/process.h"
#include "supervisor/spec.h"

extern char** environ;

namespace flotilla::supervisor {

using nlohmann::json;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr size_t kEventsKept = 1000;
constexpr Duration kBackoffBase = 100ms;
constexpr Duration kBackoffCap = 30s;
constexpr Duration kBackoffReset = 60s;
constexpr int kRolloutCrashLimit = 3;  // crashes of the new version during a rollout before it rolls back

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_suffix() {
  static std::mt19937_64 rng{std::random_device{}()};
  char buf[8];
  std::snprintf(buf, sizeof buf, "%06x", static_cast<unsigned>(rng() & 0xffffff));
  return buf;
}

// A free port on 127.0.0.1 (the kernel's choice), avoiding ones handed out recently.
int pick_port(const std::set<int>& avoid) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port = ntohs(a.sin_port);
    ::close(fd);
    if (port && !avoid.count(port)) return port;
  }
  throw std::runtime_error("no free port on 127.0.0.1");
}

double seconds(Duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

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

const char* state_name(Instance::State s) {
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
  Clock::time_point interval_started = Clock::now();
  std::string last_check;
};

struct Rollout {
  std::string from;  // versions
  std::string to;
  Clock::time_point started_at = Clock::now();
  int crashes = 0;   // of the new version
  bool rollback = false;
};

struct ServiceRuntime {
  std::string name;
  config::ServiceSection section;
  std::shared_ptr<const RunSpec> spec;
  std::shared_ptr<const RunSpec> previous;
  std::string file_version;   // version of the file's spec when it was last applied
  int file_replicas = 1;      // the file's replicas when it was last applied
  std::optional<int> replicas_override;  // `flotilla scale`
  std::optional<Canary> canary;
  std::optional<Rollout> rollout;
  std::vector<std::unique_ptr<Instance>> instances;
  // Restart backoff (per service).
  int crash_count = 0;
  Clock::time_point next_start_at{};
  Clock::time_point last_crash_at{};
  uint64_t restarts = 0;
  std::unique_ptr<Timer> start_timer;
  bool started_once = false;
  bool removing = false;  // gone from the file: stop everything, then forget it
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
  metrics::Counter* restarts_metric = nullptr;

  Impl(EventLoop& l, registry::Registry& r, store::Store& s, gateway::Gateway* g, metrics::Registry& m, Options o)
      : loop(l), registry(r), store(s), gateway(g), metrics(m), options(std::move(o)) {
    log_dir = (std::filesystem::path(options.data_dir) / "logs").string();
  }

  // ---- persistence and events ----

  void commit(std::vector<store::Op> ops, std::function<void(const std::string&)> done = {}) {
    store::Txn txn;
    txn.ops = std::move(ops);
    store.commit(std::move(txn), [alive = alive, done = std::move(done)](const store::TxnResult& r) {
      if (!r.error.empty()) spdlog::error("supervisor: store write failed: {}", r.error);
      if (*alive && done) done(r.error);
    });
  }

  std::string service_key(const std::string& name) const { return "sup/svc/" + name; }

  json service_record(const ServiceRuntime& s) const {
    json j = {{"spec", s.spec->to_json()},
              {"file_version", s.file_version},
              {"file_replicas", s.file_replicas}};
    j["previous"] = s.previous ? s.previous->to_json() : json(nullptr);
    j["replicas"] = s.replicas_override ? json(*s.replicas_override) : json(nullptr);
    j["canary"] = s.canary ? json{{"percent", s.canary->percent}, {"spec", s.canary->spec->to_json()}} : json(nullptr);
    return j;
  }

  void persist(const ServiceRuntime& s, std::function<void(const std::string&)> done = {}) {
    commit({store::Op::put(service_key(s.name), service_record(s).dump())}, std::move(done));
  }

  void event(const std::string& service, const std::string& instance, const std::string& kind, const std::string& message,
             json data = json::object()) {
    json e = {{"Seq", next_seq++}, {"Time", wall_ms()}, {"Service", service}, {"Instance", instance},
              {"Kind", kind},     {"Message", message}, {"Data", std::move(data)}};
    spdlog::info("{}{}{}: {}", service, instance.empty() ? "" : " ", instance, message);
    char key[40];
    std::snprintf(key, sizeof key, "sup/ev/%020llu", static_cast<unsigned long long>(e["Seq"].get<uint64_t>()));
    std::vector<store::Op> ops{store::Op::put(key, e.dump())};
    events.push_back(std::move(e));
    while (events.size() > kEventsKept) {
      char old[40];
      std::snprintf(old, sizeof old, "sup/ev/%020llu", static_cast<unsigned long long>(events.front()["Seq"].get<uint64_t>()));
      ops.push_back(store::Op::del(old));
      events.pop_front();
    }
    commit(std::move(ops));
    notify();
  }

  void notify() {
    if (waiters.empty()) return;
    auto w = std::move(waiters);
    waiters.clear();
    for (auto& [id, fn] : w) loop.post(std::move(fn));
  }

  // ---- lookups ----

  ServiceRuntime* find(const std::string& name) {
    auto it = services.find(name);
    return it == services.end() ? nullptr : it->second.get();
  }
  ServiceRuntime& must(const std::string& name) {
    auto* s = find(name);
    if (!s) throw ApiError(404, "no supervised service \"" + name + "\" (services with a command in flotilla.yaml)", "service");
    return *s;
  }
  Instance* instance(ServiceRuntime& s, const std::string& id) {
    for (auto& i : s.instances)
      if (i->id == id) return i.get();
    return nullptr;
  }

  // ---- starting an instance ----

  std::vector<std::string> environment_for(const ServiceRuntime& s, const RunSpec& spec, const std::string& id, int port) {
    std::map<std::string, std::string> env;
    for (char** e = environ; e && *e; ++e) {
      std::string kv = *e;
      auto eq = kv.find('=');
      if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    env.erase("FLOTILLA_TOKEN");  // the agent's secret is not the services' business
    for (const auto& [k, v] : spec.environment) env[k] = v;
    if (port) env["PORT"] = std::to_string(port);
    env["FLOTILLA_SERVICE"] = s.name;
    env["FLOTILLA_INSTANCE"] = id;
    env["FLOTILLA_APP"] = app;
    for (const auto& d : s.section.depends_on) {
      uint16_t p = gateway ? gateway->service_port(d.service) : 0;
      if (p) env[url_variable(d.service)] = "http://127.0.0.1:" + std::to_string(p);
    }
    std::vector<std::string> out;
    out.reserve(env.size());
    for (auto& [k, v] : env) out.push_back(k + "=" + v);
    return out;
  }

  void start_instance(ServiceRuntime& s, std::shared_ptr<const RunSpec> spec, bool canary) {
    auto inst = std::make_unique<Instance>();
    inst->id = s.name + "-" + random_suffix();
    inst->service = s.name;
    inst->spec = spec;
    inst->version = spec->version();
    inst->canary = canary;
    auto now = Clock::now();
    for (auto it = recent_ports.begin(); it != recent_ports.end();)
      it = now - it->second > 60s ? recent_ports.erase(it) : std::next(it);
    try {
      if (spec->port_mode == config::ServiceSection::PortMode::fixed) inst->port = spec->port;
      else if (spec->port_mode == config::ServiceSection::PortMode::automatic) {
        std::set<int> avoid;
        for (auto& [p, t] : recent_ports) avoid.insert(p);
        inst->port = pick_port(avoid);
        recent_ports[inst->port] = now;
      }
      LaunchSpec ls;
      ls.argv = spec->command;
      ls.working_dir = spec->working_dir;
      ls.env = environment_for(s, *spec, inst->id, inst->port);
      ls.shim_binary = options.shim_binary;
      if (cgroups) {
        inst->cgroup = cgroups->create(inst->id, CgroupLimits{spec->memory_bytes, spec->cpus});
        ls.cgroup = inst->cgroup;
      }
      Spawned sp = spawn(ls);
      inst->shim = sp.shim;
      inst->pid = sp.pid;
      inst->log = std::make_unique<InstanceLog>(loop, log_dir, s.name, inst->id, sp.stdout_fd, sp.stderr_fd,
                                                options.logs, [this] { notify(); });
    } catch (const std::exception& e) {
      if (!inst->cgroup.empty()) cgroup_remove(inst->cgroup);
      event(s.name, inst->id, "failed", std::string("cannot start: ") + e.what());
      on_crash(s, /*during_rollout_of_new=*/spec == s.spec && s.rollout.has_value());
      // No exit will come to call reconcile again: retry once the backoff has passed.
      if (!s.start_timer) s.start_timer = std::make_unique<Timer>(loop);
      if (!s.start_timer->armed())
        s.start_timer->arm(std::max<Duration>(s.next_start_at - Clock::now(), Duration(0)), [this, name = s.name] {
          if (auto* sv = find(name)) reconcile(*sv);
        });
      return;
    }
    by_shim[inst->shim] = {s.name, inst->id};
    commit({store::Op::put("sup/inst/" + inst->id,
                           json{{"shim", inst->shim}, {"start", process_start_ticks(inst->shim)}, {"cgroup", inst->cgroup}}.dump())});
    event(s.name, inst->id, "started",
          "started (pid " + std::to_string(inst->pid) + (inst->port ? ", port " + std::to_string(inst->port) : "") +
              ", version " + inst->version + (canary ? ", canary" : "") + ")",
          {{"pid", inst->pid}, {"port", inst->port}, {"version", inst->version}});
    Instance& ref = *inst;
    s.instances.push_back(std::move(inst));
    s.started_once = true;
    if (ref.spec->healthcheck.kind == config::Healthcheck::Kind::none) {
      became_healthy(s, ref);
    } else {
      ref.probe_timer = std::make_unique<Timer>(loop);
      schedule_probe(s.name, ref.id, 0ms);
    }
  }

  // ---- health ----

  void schedule_probe(const std::string& service, const std::string& id, Duration after) {
    auto* s = find(service);
    Instance* i = s ? instance(*s, id) : nullptr;
    if (!i || !i->probe_timer) return;
    i->probe_timer->arm(after, [this, service, id] { probe(service, id); });
  }

  void probe(const std::string& service, const std::string& id) {
    auto* s = find(service);
    Instance* i = s ? instance(*s, id) : nullptr;
    if (!i || !i->live()) return;
    const auto& hc = i->spec->healthcheck;
    auto done = [this, alive = alive, service, id](health::ProbeResult&& r) {
      if (!*alive) return;
      on_probe(service, id, r.status == registry::status::passing, r.output);
    };
    if (hc.kind == config::Healthcheck::Kind::http) {
      registry::CheckDefinition def;
      def.http = "http://127.0.0.1:" + std::to_string(i->port) + hc.http_path;
      health::probe_http(loop, def, hc.timeout, done);
    } else {
      health::probe_tcp(loop, i->address(), hc.timeout, done);
    }
  }

  void on_probe(const std::string& service, const std::string& id, bool ok, const std::string& output) {
    auto* s = find(service);
    Instance* i = s ? instance(*s, id) : nullptr;
    if (!i || !i->live()) return;
    const auto& hc = i->spec->healthcheck;
    i->last_probe = output.substr(0, 200);
    if (ok) {
      i->failures = 0;
      if (i->state == Instance::State::starting && !i->ever_healthy) became_healthy(*s, *i);
    } else if (Clock::now() - i->started_at >= hc.start_period) {
      ++i->failures;
      if (!i->ever_healthy) {
        // Not healthy yet: it has deploy.healthy_timeout to get there.
        if (Clock::now() - i->started_at > s->section.deploy.healthy_timeout) {
          event(s->name, i->id, "unhealthy",
                "not healthy after " + format_duration(s->section.deploy.healthy_timeout) + ": " + i->last_probe);
          // In a rollout, a new version that cannot get healthy is rolled back at once.
          if (s->rollout && !s->rollout->rollback && !i->canary && i->spec == s->spec)
            roll_back_failed(*s, "an instance was not healthy within " + format_duration(s->section.deploy.healthy_timeout));
          fail_instance(*s, *i);
          return;
        }
      } else if (i->failures >= hc.retries) {
        event(s->name, i->id, "unhealthy",
              std::to_string(i->failures) + " failed health checks in a row: " + i->last_probe);
        fail_instance(*s, *i);
        return;
      }
    }
    // Until its first success an instance is probed every 100 ms (Docker's start_interval): a
    // service that binds its port 50 ms after start should not wait a whole interval for traffic.
    schedule_probe(service, id, i->ever_healthy ? hc.interval : std::min<Duration>(hc.interval, 100ms));
  }

  void became_healthy(ServiceRuntime& s, Instance& i) {
    i.ever_healthy = true;
    if (i.spec->port_mode == config::ServiceSection::PortMode::none) {
      i.state = Instance::State::ready;
      i.ready_at = Clock::now();
      event(s.name, i.id, "healthy", "running (no port: not routed)");
      reconcile(s);
      start_waiting_dependents();
      return;
    }
    register_instance(s, i, [this, service = s.name, id = i.id] {
      auto* sv = find(service);
      Instance* in = sv ? instance(*sv, id) : nullptr;
      if (!in || in->state != Instance::State::starting) return;
      in->state = Instance::State::ready;
      in->ready_at = Clock::now();
      event(service, id, "healthy", "healthy and registered: receives traffic");
      reconcile(*sv);
      start_waiting_dependents();
    });
  }

  // Services not started yet may wait for this one (depends_on: service_healthy): look now
  // rather than at the next 1 s tick.
  void start_waiting_dependents() {
    for (const auto& name : std::vector<std::string>(order))
      if (auto* d = find(name); d && !d->started_once) reconcile(*d);
  }

  int weight_for(const ServiceRuntime& s, const Instance& i) const {
    if (!s.canary) return 1;
    if (i.canary) {
      int stable = 0;
      for (const auto& o : s.instances)
        if (!o->canary && o->state == Instance::State::ready) ++stable;
      return std::max(1, s.canary->percent * std::max(1, stable));
    }
    return std::max(1, 100 - s.canary->percent);
  }

  void register_instance(ServiceRuntime& s, Instance& i, std::function<void()> then) {
    registry::Service svc;
    svc.id = i.id;
    svc.name = s.name;
    svc.address = "127.0.0.1";
    svc.port = i.port;
    svc.meta = {{"flotilla-instance", i.id}, {"flotilla-version", i.version}, {"flotilla-app", app}};
    if (i.canary) svc.meta["flotilla-canary"] = "true";
    svc.weight_passing = weight_for(s, i);
    svc.weight_warning = svc.weight_passing;
    i.registered = true;
    i.registered_weight = svc.weight_passing;
    try {
      registry.register_service(std::move(svc), {}, true,
                                [alive = alive, then = std::move(then), service = s.name](const registry::WriteResult& r) {
                                  if (!*alive) return;
                                  if (!r.ok) spdlog::error("supervisor: registering an instance of {} failed: {}", service, r.error);
                                  then();
                                });
    } catch (const std::exception& e) {
      spdlog::error("supervisor: cannot register an instance of {}: {}", s.name, e.what());
      i.registered = false;
    }
  }

  void deregister(Instance& i) {
    if (!i.registered) return;
    i.registered = false;
    registry.deregister_service(i.id, [](const registry::WriteResult&) {});
  }

  // Canary weights follow the number of stable instances.
  void sync_weights(ServiceRuntime& s) {
    for (auto& i : s.instances) {
      if (i->state != Instance::State::ready || !i->registered) continue;
      if (weight_for(s, *i) != i->registered_weight) register_instance(s, *i, [] {});
    }
  }

  // ---- stopping ----

  // A failed instance (unhealthy, or not healthy in time): out of routing, killed, replaced.
  void fail_instance(ServiceRuntime& s, Instance& i) {
    deregister(i);
    if (i.probe_timer) i.probe_timer->cancel();
    i.state = Instance::State::stopping;
    kill_instance(i.shim);
    if (!i.cgroup.empty()) cgroup_kill(i.cgroup);
  }

  // Graceful stop: maintenance, drain, stop_signal, kill after the grace period.
  void stop_instance(ServiceRuntime& s, Instance& i, const std::string& why) {
    if (!i.live()) return;
    i.stop_requested = true;
    if (i.probe_timer) i.probe_timer->cancel();
    event(s.name, i.id, "stopping", why);
    if (!i.registered) {
      send_stop(s, i);
      return;
    }
    i.state = Instance::State::draining;
    registry.set_maintenance(i.id, true, "flotilla: draining before stop",
                             [this, alive = alive, service = s.name, id = i.id](const registry::WriteResult&) {
                               if (!*alive) return;
                               auto* sv = find(service);
                               Instance* in = sv ? instance(*sv, id) : nullptr;
                               if (in && in->state == Instance::State::draining)
                                 wait_drained(service, id, Clock::now(), Clock::now() + in->spec->stop_grace_period);
                             });
  }

  // In-flight requests finish: the gateway's count for the endpoint reaches 0 (and stays so for
  // two of its sweeps, so every worker has the snapshot without it), or the grace period ends.
  void wait_drained(const std::string& service, const std::string& id, Clock::time_point since, Clock::time_point until) {
    auto* s = find(service);
    Instance* i = s ? instance(*s, id) : nullptr;
    if (!i || i->state != Instance::State::draining) return;
    auto now = Clock::now();
    bool idle = true;
    if (gateway) {
      auto load = gateway->endpoint_load(i->address());
      idle = !load.known || load.active == 0;
    }
    if ((idle && now - since >= 100ms) || now >= until) {
      if (!idle) event(service, id, "drain-timeout", "requests still in flight after stop_grace_period");
      send_stop(*s, *i);
      return;
    }
    if (!i->stop_timer) i->stop_timer = std::make_unique<Timer>(loop);
    i->stop_timer->arm(20ms, [this, service, id, since, until] { wait_drained(service, id, since, until); });
  }

  void send_stop(ServiceRuntime& s, Instance& i) {
    i.state = Instance::State::stopping;
    int sig = signal_number(i.spec->stop_signal);
    signal_instance(i.shim, sig ? sig : SIGTERM);
    if (!i.stop_timer) i.stop_timer = std::make_unique<Timer>(loop);
    i.stop_timer->arm(i.spec->stop_grace_period, [this, service = s.name, id = i.id] {
      auto* sv = find(service);
      Instance* in = sv ? instance(*sv, id) : nullptr;
      if (!in || in->state == Instance::State::exited) return;
      event(service, id, "killed", "did not exit within stop_grace_period: killed");
      kill_instance(in->shim);
      if (!in->cgroup.empty()) cgroup_kill(in->cgroup);
    });
  }

  // ---- exits ----

  void on_exit(pid_t pid, ExitStatus status) {
    auto it = by_shim.find(pid);
    if (it == by_shim.end()) return;  // an orphan re-parented to the agent: reaped, nothing to do
    auto [service, id] = it->second;
    by_shim.erase(it);
    commit({store::Op::del("sup/inst/" + id)});
    auto* s = find(service);
    Instance* i = s ? instance(*s, id) : nullptr;
    if (!i) return;
    deregister(*i);  // out of routing at once: the supervisor knows before any health check
    i->probe_timer.reset();
    i->stop_timer.reset();
    if (!i->cgroup.empty()) cgroup_remove(i->cgroup);
    i->exit_text = status.describe();
    const bool wanted = i->stop_requested;
    const bool is_new = i->spec == s->spec && !i->canary;
    bool no_restart = false;
    if (wanted) {
      event(service, id, "stopped", status.describe());
    } else {
      const bool failed = status.signaled || status.code != 0;
      const auto& policy = i->spec->restart;
      no_restart = policy == "no" || (policy == "on-failure" && !failed);
      event(service, id, failed ? "crashed" : "exited",
            status.describe() + (no_restart ? " (restart: " + policy + ", not restarted)" : ""),
            {{"code", status.code}, {"signal", status.signaled ? signal_name(status.signal) : ""}});
    }
    if (no_restart) {
      i->state = Instance::State::exited;
      i->no_restart = true;
      i->log.reset();
    } else {
      s->instances.erase(std::remove_if(s->instances.begin(), s->instances.end(),
                                        [&](const auto& p) { return p->id == id; }),
                         s->instances.end());
      if (!wanted) on_crash(*s, is_new && s->rollout.has_value());
    }
    reconcile(*s);
    maybe_finish_stop_all();
    if (s->removing && s->instances.empty()) {
      commit({store::Op::del(service_key(s->name))});
      services.erase(service);
      order.erase(std::remove(order.begin(), order.end(), service), order.end());
    }
  }

  void on_crash(ServiceRuntime& s, bool new_version_in_rollout) {
    ++s.restarts;
    if (restarts_metric) restarts_metric->inc();
    auto now = Clock::now();
    ++s.crash_count;
    auto backoff = std::min<Duration>(kBackoffCap, kBackoffBase * (1LL << std::min(s.crash_count - 1, 20)));
    s.next_start_at = now + backoff;
    s.last_crash_at = now;
    if (backoff >= 1s)
      event(s.name, "", "backoff",
            "restarting in " + format_duration(backoff) + " (" + std::to_string(s.crash_count) + " failures in a row)",
            {{"seconds", seconds(backoff)}, {"failures", s.crash_count}});
    if (new_version_in_rollout && s.rollout && ++s.rollout->crashes >= kRolloutCrashLimit && !s.rollout->rollback) {
      roll_back_failed(s, "the new version crashed " + std::to_string(s.rollout->crashes) + " times");
    }
  }

  // ---- desired state ----

  bool dependencies_ready(const ServiceRuntime& s) {
    for (const auto& d : s.section.depends_on) {
      auto* dep = find(d.service);
      if (!dep) continue;
      int started = 0, ready = 0;
      for (const auto& i : dep->instances) {
        if (i->live()) ++started;
        if (i->state == Instance::State::ready) ++ready;
      }
      if (dep->desired() == 0) continue;
      if (d.condition == "service_healthy" ? ready == 0 : started == 0) return false;
    }
    return true;
  }

  void roll_back_failed(ServiceRuntime& s, const std::string& why) {
    if (!s.previous) {
      event(s.name, "", "deploy-failed", "version " + s.spec->version() + " failed (" + why + "); no previous version to return to");
      s.rollout.reset();
      return;
    }
    auto failed = s.spec;
    event(s.name, "", "rollback",
          "version " + failed->version() + " failed (" + why + "): rolling back to " + s.previous->version(),
          {{"from", failed->version()}, {"to", s.previous->version()}});
    s.spec = s.previous;
    s.previous = failed;
    s.rollout = Rollout{failed->version(), s.spec->version(), Clock::now(), 0, true};
    s.crash_count = 0;
    s.next_start_at = {};
    persist(s);
  }

  // Makes what runs converge on what is desired, one step at a time. Called after every change.
  void reconcile(ServiceRuntime& s) {
    if (stopping_all) {
      for (auto& i : s.instances)
        if (i->live() && may_stop_now(s.name)) stop_instance(s, *i, "stopping the application");
      return;
    }
    const int want = s.desired();
    std::vector<Instance*> fresh_ready, fresh_starting, old, canaries;
    int exited_for_good = 0;
    for (auto& i : s.instances) {
      if (i->state == Instance::State::exited && i->no_restart && i->version == s.spec->version()) ++exited_for_good;
      if (!i->live()) continue;
      if (i->canary) canaries.push_back(i.get());
      else if (i->spec == s.spec || i->version == s.spec->version())
        (i->state == Instance::State::ready ? fresh_ready : fresh_starting).push_back(i.get());
      else old.push_back(i.get());
    }
    if (!s.started_once && !dependencies_ready(s)) return;  // the 1 s tick looks again
    auto now = Clock::now();
    auto can_start = [&] {
      if (now >= s.next_start_at) return true;
      if (!s.start_timer) s.start_timer = std::make_unique<Timer>(loop);
      if (!s.start_timer->armed())
        s.start_timer->arm(s.next_start_at - now, [this, name = s.name] {
          if (auto* sv = find(name)) reconcile(*sv);
        });
      return false;
    };

    // Canary: one instance of the canary spec while a canary is set; none otherwise.
    if (s.canary && canaries.empty() && want > 0 && can_start()) start_instance(s, s.canary->spec, true);
    if (!s.canary)
      for (auto* c : canaries) stop_instance(s, *c, "canary ended");

    const int fresh = static_cast<int>(fresh_ready.size() + fresh_starting.size()) + exited_for_good;
    if (!old.empty()) {
      // Rollout: start-first, one at a time (maxSurge 1, maxUnavailable 0). A fixed port cannot
      // hold two instances: then stop-first.
      if (!s.rollout) s.rollout = Rollout{old.front()->version, s.spec->version(), now};
      if (!fresh_starting.empty()) {
        for (auto* i : fresh_starting)
          if (now - i->started_at > s.section.deploy.healthy_timeout + 5s && !s.rollout->rollback) {
            roll_back_failed(s, "an instance was not healthy within " + format_duration(s.section.deploy.healthy_timeout));
            return reconcile(s);
          }
        return;
      }
      const bool fixed = s.spec->port_mode == config::ServiceSection::PortMode::fixed;
      const int total = fresh + static_cast<int>(old.size());
      if (total > want || (fixed && total >= want && !old.empty())) {
        // Retire one old instance: a not-ready one first, else the oldest.
        Instance* victim = old.front();
        for (auto* o : old)
          if (o->state != Instance::State::ready) victim = o;
        stop_instance(s, *victim, "replaced by version " + s.spec->version());
        if (!fixed) return;
        return;
      }
      bool any_stopping = false;
      for (auto& i : s.instances)
        if (i->state == Instance::State::draining || i->state == Instance::State::stopping) any_stopping = true;
      if (fixed && any_stopping) return;
      if (can_start()) start_instance(s, s.spec, false);
      return;
    }
    if (s.rollout) {
      event(s.name, "", s.rollout->rollback ? "rollback-finished" : "deploy-finished",
            std::string(s.rollout->rollback ? "rolled back to version " : "version ") + s.spec->version() +
                (s.rollout->rollback ? "" : " rolled out") + " (" + std::to_string(fresh_ready.size()) + " instance(s))",
            {{"version", s.spec->version()}});
      s.rollout.reset();
    }
    if (fresh < want) {
      if (!can_start()) return;
      // A start that fails sets the backoff: the rest wait for the retry.
      for (int n = fresh; n < want && Clock::now() >= s.next_start_at; ++n) start_instance(s, s.spec, false);
    } else if (fresh > want) {
      int extra = fresh - want;
      // Starting ones first, then the newest ready ones.
      std::vector<Instance*> pick(fresh_starting.begin(), fresh_starting.end());
      std::vector<Instance*> ready = fresh_ready;
      std::sort(ready.begin(), ready.end(), [](auto* a, auto* b) { return a->started_at > b->started_at; });
      pick.insert(pick.end(), ready.begin(), ready.end());
      for (auto* i : pick) {
        if (extra-- <= 0) break;
        stop_instance(s, *i, "scaling down to " + std::to_string(want));
      }
    }
    sync_weights(s);
  }

  // During stop_all, a service stops only once everything that depends on it has stopped.
  bool may_stop_now(const std::string& name) {
    for (auto& [n, s] : services) {
      if (n == name) continue;
      bool depends = false;
      for (const auto& d : s->section.depends_on) depends = depends || d.service == name;
      if (!depends) continue;
      for (auto& i : s->instances)
        if (i->state != Instance::State::exited) return false;
    }
    return true;
  }

  void maybe_finish_stop_all() {
    if (!stopping_all) return;
    for (auto& [n, s] : services) {
      reconcile(*s);  // services whose dependents are gone may stop now
    }
    for (auto& [n, s] : services)
      for (auto& i : s->instances)
        if (i->state != Instance::State::exited) return;
    auto done = std::move(stop_done);
    stop_done.clear();
    for (auto& d : done) d();
  }

  // ---- the 1 s tick: backoff reset, dependencies, sampling, autoscaling, canary analysis ----

  void on_tick() {
    auto now = Clock::now();
    // CPU and memory of every instance's process tree, one pass over /proc for all of them.
    std::vector<Instance*> sampled;
    std::vector<pid_t> roots;
    for (auto& [name, s] : services)
      for (auto& i : s->instances)
        if (i->pid > 0 && i->state != Instance::State::exited) {
          sampled.push_back(i.get());
          roots.push_back(i->pid);
        }
    auto usage = sample_usage(roots);
    for (size_t k = 0; k < sampled.size(); ++k) {
      Instance& i = *sampled[k];
      if (i.last_cpu_seconds >= 0) {
        double dt = seconds(now - i.last_sample_at);
        if (dt > 0) i.cpu_percent = std::max(0.0, (usage[k].cpu_seconds - i.last_cpu_seconds) / dt * 100.0);
      }
      i.last_cpu_seconds = usage[k].cpu_seconds;
      i.rss = usage[k].rss_bytes;
      i.last_sample_at = now;
    }
    for (auto& name : std::vector<std::string>(order)) {
      auto* s = find(name);
      if (!s) continue;
      // Reset the backoff after 60 s without a crash while something is ready.
      if (s->crash_count > 0 && now - s->last_crash_at >= kBackoffReset) {
        bool healthy = false;
        for (auto& i : s->instances) healthy = healthy || (i->state == Instance::State::ready && i->ready_at && now - *i->ready_at >= kBackoffReset);
        if (healthy) s->crash_count = 0;
      }
      sample(*s, now);
      if (s->autoscaler && !stopping_all) autoscale(*s, now);
      if (s->canary && s->section.deploy.canary_analysis) analyse_canary(*s, now);
      if (!s->started_once || s->rollout) reconcile(*s);
    }
    tick->arm(1s, [this] { on_tick(); });
  }

  void sample(ServiceRuntime& s, Clock::time_point now) {
    Load total;
    int64_t inflight = 0;
    for (auto& i : s.instances) {
      if (!gateway || !i->port) continue;
      auto load = gateway->endpoint_load(i->address());
      if (!load.known) continue;
      // The first time the gateway knows an automatic-port instance, its counts are the
      // instance's own from zero (the gateway's per-address state is created when it is first
      // routed, and automatic ports are not handed out again within 60 s): the requests, failures
      // and ejections before this first tick count. A fixed port may still carry its previous
      // instance's counts, so there the first sample is only the baseline.
      gateway::EndpointLoad base = i->last_load;
      if (!base.known && i->spec->port_mode == config::ServiceSection::PortMode::automatic) base.known = true;
      Load d;
      if (base.known && load.requests >= base.requests) {
        d.requests = load.requests - base.requests;
        d.failures = load.failures - std::min(load.failures, base.failures);
        for (size_t b = 0; b < d.latency.size(); ++b)
          d.latency[b] = load.latency[b] - std::min(load.latency[b], base.latency[b]);
      }
      if (base.known && load.ejections > i->last_ejections) {
        i->analysis_ejections += load.ejections - i->last_ejections;
        event(s.name, i->id, "ejected", "ejected by the gateway's outlier detection (consecutive failures)");
      }
      i->last_ejections = load.ejections;
      i->last_load = load;
      i->analysis.add(d);
      total.add(d);
      if (i->state == Instance::State::ready) inflight += load.active;
    }
    s.inflight = inflight;
    s.window.emplace_back(now, total);
    while (!s.window.empty() && now - s.window.front().first > 10s) s.window.pop_front();
  }

  // Requests per second, error ratio and p95 over the last `span` of the window.
  struct Rates {
    double rps = 0;
    double error_ratio = 0;
    double p95_ms = 0;
    uint64_t requests = 0;
  };
  Rates rates(const ServiceRuntime& s, Duration span) const {
    Rates r;
    if (s.window.empty()) return r;
    auto now = s.window.back().first;
    Load sum;
    int n = 0;
    for (auto it = s.window.rbegin(); it != s.window.rend() && now - it->first < span; ++it, ++n) sum.add(it->second);
    double secs = std::max(1, n);
    r.requests = sum.requests;
    r.rps = static_cast<double>(sum.requests) / secs;
    r.error_ratio = sum.requests ? static_cast<double>(sum.failures) / static_cast<double>(sum.requests) : 0;
    r.p95_ms = gateway::EndpointLoad::quantile_ms(sum.latency, 0.95);
    return r;
  }

  void autoscale(ServiceRuntime& s, Clock::time_point now) {
    if (s.replicas_override || s.removing) return;
    int ready = 0;
    double cpu = 0;
    for (auto& i : s.instances)
      if (i->state == Instance::State::ready && !i->canary && i->version == s.spec->version()) {
        ++ready;
        cpu += i->cpu_percent;
      }
    if (ready == 0) return;  // nothing to measure yet (starting)
    const auto& metric = s.autoscaler->settings().metric;
    double value = 0;
    // The last second: a load step is seen in full at the first tick after it.
    if (metric == "rps_per_instance") value = rates(s, 1s).rps / ready;
    else if (metric == "p95_ms") value = rates(s, 5s).p95_ms;
    else if (metric == "inflight") value = static_cast<double>(s.inflight) / ready;
    else if (metric == "cpu_percent") value = cpu / ready;
    // Only instances that count: a rollout or scale in progress is left alone.
    int current = s.autoscale_desired;
    if (ready < current) {
      // Still starting some: evaluate on what serves, never below what is already decided.
      auto d = s.autoscaler->evaluate(ready, value, now);
      if (d.desired > current) apply_autoscale(s, d);
      return;
    }
    auto d = s.autoscaler->evaluate(current, value, now);
    if (d.desired != current) apply_autoscale(s, d);
  }

  void apply_autoscale(ServiceRuntime& s, const AutoscaleDecision& d) {
    const int from = s.autoscale_desired;
    s.autoscale_desired = d.desired;
    s.autoscale_reason = d.reason;
    event(s.name, "", "autoscaled", "autoscale " + std::to_string(from) + " -> " + std::to_string(d.desired) + ": " + d.reason,
          {{"from", from}, {"to", d.desired}, {"metric", d.metric}});
    reconcile(s);
  }

  void analyse_canary(ServiceRuntime& s, Clock::time_point now) {
    auto& c = *s.canary;
    const auto& a = *s.section.deploy.canary_analysis;
    if (now - c.interval_started < a.interval) return;
    CanarySample canary, stable;
    Load cl, sl;
    bool canary_ready = false;
    uint64_t canary_ejections = 0;
    for (auto& i : s.instances) {
      if (i->canary) {
        cl.add(i->analysis);
        canary_ejections += i->analysis_ejections;
        canary_ready = canary_ready || i->state == Instance::State::ready;
      } else {
        sl.add(i->analysis);
      }
      i->analysis = Load{};
      i->analysis_ejections = 0;
    }
    c.interval_started = now;
    if (!canary_ready) return;
    canary = {cl.requests, cl.failures, gateway::EndpointLoad::quantile_ms(cl.latency, 0.95)};
    stable = {sl.requests, sl.failures, gateway::EndpointLoad::quantile_ms(sl.latency, 0.95)};
    auto check = judge_canary(a, canary, stable);
    if (canary_ejections > 0) {
      // The gateway's outlier detection took the canary out of routing (consecutive failures):
      // that is a verdict. Waiting for min_requests would wait for as long as it stays ejected.
      check.verdict = CanaryVerdict::fail;
      check.reason = "ejected by the gateway's outlier detection after consecutive failures (" +
                     std::to_string(canary.failures) + " of " + std::to_string(canary.requests) + " requests failed)";
    }
    c.last_check = check.reason;
    json data = {{"canary_requests", canary.requests}, {"canary_failures", canary.failures}, {"canary_p95_ms", canary.p95_ms},
                 {"stable_requests", stable.requests}, {"stable_failures", stable.failures}, {"stable_p95_ms", stable.p95_ms}};
    if (check.verdict == CanaryVerdict::wait) {
      event(s.name, "", "canary-check", "waiting: " + check.reason, data);
    } else if (check.verdict == CanaryVerdict::fail) {
      event(s.name, "", "canary-failed", "canary analysis failed: " + check.reason + "; rolling back", data);
      end_canary(s, false);
    } else {
      ++c.passed;
      event(s.name, "", "canary-check",
            "passed " + std::to_string(c.passed) + "/" + std::to_string(a.iterations) + ": " + check.reason, data);
      if (c.passed >= a.iterations) {
        event(s.name, "", "canary-promoted", "canary passed " + std::to_string(a.iterations) + " analyses: promoting");
        end_canary(s, true);
      }
    }
  }

  // promote: the canary's spec becomes the service's (a rolling deploy replaces the stable
  // instances; the canary instance stays as one of the new ones). Otherwise the canary goes.
  void end_canary(ServiceRuntime& s, bool promote) {
    if (!s.canary) return;
    auto spec = s.canary->spec;
    s.canary.reset();
    if (promote) {
      s.previous = s.spec;
      s.spec = spec;
      for (auto& i : s.instances)
        if (i->canary) i->canary = false;  // the same version: counted as a new instance now
      s.rollout = Rollout{s.previous->version(), s.spec->version(), Clock::now()};
      s.crash_count = 0;
      s.next_start_at = {};
    }
    persist(s);
    reconcile(s);
    sync_weights(s);
  }

  // ---- status ----

  json instance_json(const ServiceRuntime& s, const Instance& i) const {
    auto now = Clock::now();
    json j = {{"ID", i.id},
              {"Service", s.name},
              {"Pid", i.pid},
              {"Port", i.port},
              {"State", state_name(i.state)},
              {"Version", i.version},
              {"Canary", i.canary},
              {"Health", i.state == Instance::State::ready ? "passing"
                         : i.state == Instance::State::starting ? (i.failures ? "failing" : "starting")
                                                                : "-"},
              {"LastCheck", i.last_probe},
              {"UptimeSeconds", i.state == Instance::State::exited ? 0.0 : seconds(now - i.started_at)},
              {"StartedAt", i.started_wall_ms},
              {"CpuPercent", std::round(i.cpu_percent * 10) / 10},
              {"MemoryBytes", i.rss},
              {"Exit", i.exit_text}};
    return j;
  }

  json service_json(const ServiceRuntime& s) const {
    // Ready and Total count the service's own instances; a canary instance is reported apart.
    int ready = 0, total = 0, canary_ready = 0;
    for (const auto& i : s.instances) {
      if (i->canary) {
        if (i->state == Instance::State::ready) ++canary_ready;
        continue;
      }
      if (i->state != Instance::State::exited) ++total;
      if (i->state == Instance::State::ready) ++ready;
    }
    auto r = rates(s, 10s);
    std::string state = "running";
    if (s.removing) state = "removing";
    else if (s.rollout) state = s.rollout->rollback ? "rolling back" : "deploying";
    else if (s.canary) state = "canary";
    else if (s.crash_count >= 3 && ready < s.desired()) state = "crash-looping";
    else if (ready < s.desired()) state = "starting";
    else if (s.desired() == 0) state = "stopped";
    json j = {{"Name", s.name},
              {"Version", s.spec->version()},
              {"PreviousVersion", s.previous ? s.previous->version() : ""},
              {"State", state},
              {"Desired", s.desired()},
              {"Ready", ready},
              {"Total", total},
              {"Restarts", s.restarts},
              {"RequestsPerSecond", std::round(r.rps * 10) / 10},
              {"ErrorRatio", std::round(r.error_ratio * 10000) / 10000},
              {"P95Ms", std::round(r.p95_ms * 10) / 10},
              {"Port", gateway ? gateway->service_port(s.name) : 0}};
    if (s.crash_count > 0 && Clock::now() < s.next_start_at)
      j["NextRestartInSeconds"] = std::round(seconds(s.next_start_at - Clock::now()) * 10) / 10;
    if (s.autoscaler) {
      const auto& a = s.autoscaler->settings();
      j["Autoscale"] = {{"Min", a.min}, {"Max", a.max}, {"Metric", a.metric}, {"Target", a.target},
                        {"Desired", s.autoscale_desired}, {"Reason", s.autoscale_reason},
                        {"Overridden", s.replicas_override.has_value()}};
    }
    if (s.rollout)
      j["Rollout"] = {{"From", s.rollout->from}, {"To", s.rollout->to}, {"Rollback", s.rollout->rollback},
                      {"Seconds", std::round(seconds(Clock::now() - s.rollout->started_at))}};
    if (s.canary)
      j["Canary"] = {{"Percent", s.canary->percent}, {"Version", s.canary->spec->version()},
                     {"Passed", s.canary->passed}, {"LastCheck", s.canary->last_check},
                     {"Iterations", s.section.deploy.canary_analysis ? s.section.deploy.canary_analysis->iterations : 0},
                     {"Analysis", s.section.deploy.canary_analysis.has_value()}, {"Ready", canary_ready}};
    return j;
  }

  // ---- loading ----

  void add_service(const config::ServiceSection& section, const json* record) {
    auto s = std::make_unique<ServiceRuntime>();
    s->name = section.name;
    s->section = section;
    auto file_spec = std::make_shared<const RunSpec>(run_spec(section));
    s->file_version = file_spec->version();
    s->file_replicas = section.replicas;
    s->spec = file_spec;
    if (record) {
      try {
        if (record->at("file_version").get<std::string>() == s->file_version) {
          // The file did not change this service: what was deployed, scaled or canaried stays.
          s->spec = std::make_shared<const RunSpec>(RunSpec::from_json(record->at("spec")));
          if (!record->at("previous").is_null())
            s->previous = std::make_shared<const RunSpec>(RunSpec::from_json(record->at("previous")));
          if (!record->at("replicas").is_null() && record->value("file_replicas", section.replicas) == section.replicas)
            s->replicas_override = record->at("replicas").get<int>();
          if (!record->at("canary").is_null()) {
            Canary c;
            c.percent = record->at("canary").at("percent").get<int>();
            c.spec = std::make_shared<const RunSpec>(RunSpec::from_json(record->at("canary").at("spec")));
            s->canary = c;
          }
        } else {
          s->previous = std::make_shared<const RunSpec>(RunSpec::from_json(record->at("spec")));
        }
      } catch (const std::exception& e) {
        spdlog::warn("supervisor: the stored state of {} is unreadable ({}); starting from the file", s->name, e.what());
        s->spec = file_spec;
      }
    }
    if (section.autoscale) {
      s->autoscaler = std::make_unique<Autoscaler>(*section.autoscale, 0.1, section.autoscale->scale_down_window);
      s->autoscale_desired = std::clamp(section.replicas, section.autoscale->min, section.autoscale->max);
    }
    persist(*s);
    services[s->name] = std::move(s);
  }

  void kill_leftovers() {
    std::vector<store::Op> ops;
    for (const auto& [key, value] : registry.state().supervisor_records()) {
      if (key.rfind("sup/inst/", 0) != 0) continue;
      ops.push_back(store::Op::del(key));
      try {
        auto j = json::parse(value);
        pid_t shim = j.at("shim").get<pid_t>();
        if (shim > 0 && is_shim(shim, j.at("start").get<uint64_t>())) {
          spdlog::warn("supervisor: killing instance {} left by a previous agent (shim pid {})", key.substr(9), shim);
          kill_instance(shim);
        }
        auto cg = j.value("cgroup", std::string());
        if (!cg.empty()) {
          cgroup_kill(cg);
          cgroup_remove(cg);
        }
      } catch (const std::exception&) {
      }
    }
    // Instances a previous agent registered are gone: out of the registry before anything routes.
    for (const auto& [id, svc] : registry.state().services()) {
      auto it = svc.meta.find("flotilla-instance");
      if (it != svc.meta.end()) registry.deregister_service(id, [](const registry::WriteResult&) {});
    }
    if (!ops.empty()) commit(std::move(ops));
  }
};

// ---------------------------------------------------------------------------------------------

Supervisor::Supervisor(EventLoop& loop, registry::Registry& registry, store::Store& store, gateway::Gateway* gateway,
                       metrics::Registry& metrics, Options options)
    : impl_(std::make_unique<Impl>(loop, registry, store, gateway, metrics, std::move(options))) {}

Supervisor::~Supervisor() {
  *impl_->alive = false;
  // Whatever still runs dies with its shim when the agent exits (PR_SET_PDEATHSIG); kill it now
  // so an agent that stops without stop_all leaves nothing behind.
  for (auto& [pid, who] : impl_->by_shim) kill_instance(pid);
}

std::vector<std::string> Supervisor::dependency_targets(const config::File& file) {
  std::set<std::string> out;
  for (const auto& s : file.services)
    for (const auto& d : s.depends_on) out.insert(d.service);
  return {out.begin(), out.end()};
}

void Supervisor::start(const config::File& file) {
  auto& im = *impl_;
  im.app = file.name;
  std::string why;
  if (cgroup_v2_available(why)) {
    try {
      im.cgroups = CgroupTree::set_up();
      spdlog::info("supervisor: instances run in cgroup v2 groups under {}", im.cgroups->path());
    } catch (const std::exception& e) {
      spdlog::info("supervisor: no cgroups ({}); process trees are kept by the shim (PR_SET_PDEATHSIG, subreaper)", e.what());
    }
  } else {
    spdlog::info("supervisor: cgroup v2 not usable ({}); memory/cpus limits are not enforced, process trees are kept by "
                 "the shim (PR_SET_PDEATHSIG, subreaper)",
                 why);
  }
  im.restarts_metric = &im.metrics.counter("flotilla_supervisor_restarts_total",
                                           "Instances that exited or failed without being asked to, all services.");
  im.reaper = std::make_unique<Reaper>(im.loop, [&im](pid_t pid, ExitStatus st) { im.on_exit(pid, st); });
  im.kill_leftovers();
  // Events kept by the store, oldest first.
  for (const auto& [key, value] : im.registry.state().supervisor_records()) {
    if (key.rfind("sup/ev/", 0) != 0) continue;
    try {
      auto e = json::parse(value);
      im.next_seq = std::max(im.next_seq, e.at("Seq").get<uint64_t>() + 1);
      im.events.push_back(std::move(e));
    } catch (const std::exception&) {
    }
  }
  std::vector<store::Op> stale;
  std::set<std::string> in_file;
  for (const auto* s : file.start_order()) {
    in_file.insert(s->name);
    const json* record = nullptr;
    json parsed;
    auto it = im.registry.state().supervisor_records().find(im.service_key(s->name));
    if (it != im.registry.state().supervisor_records().end()) {
      try {
        parsed = json::parse(it->second);
        record = &parsed;
      } catch (const std::exception&) {
      }
    }
    im.add_service(*s, record);
    im.order.push_back(s->name);
  }
  for (const auto& [key, value] : im.registry.state().supervisor_records())
    if (key.rfind("sup/svc/", 0) == 0 && !in_file.count(key.substr(8))) stale.push_back(store::Op::del(key));
  if (!stale.empty()) im.commit(std::move(stale));
  im.event("", "", "agent-started", "supervising " + std::to_string(im.order.size()) + " service(s) of " + file.name);
  for (const auto& name : im.order) im.reconcile(*im.services[name]);
  im.tick = std::make_unique<Timer>(im.loop);
  im.tick->arm(1s, [&im] { im.on_tick(); });
}

Supervisor::ApplyResult Supervisor::apply(const config::File& file) {
  auto& im = *impl_;
  if (im.stopping_all) throw ApiError(409, "the application is stopping");
  if (file.name != im.app)
    throw ApiError(409, "this agent runs \"" + im.app + "\", not \"" + file.name + "\" (each application has its own agent)", "name");
  ApplyResult out;
  std::set<std::string> in_file;
  for (const auto* section : file.start_order()) {
    in_file.insert(section->name);
    auto* s = im.find(section->name);
    if (!s) {
      if (im.gateway && im.gateway->service_port(section->name) == 0)
        for (const auto& other : file.services)
          for (const auto& d : other.depends_on)
            if (d.service == section->name)
              spdlog::warn("supervisor: {} is new and depended on; its {} needs the agent restarted", section->name,
                           url_variable(section->name));
      im.add_service(*section, nullptr);
      im.order.push_back(section->name);
      out.added.push_back(section->name);
      im.event(section->name, "", "added", "added to the application");
      continue;
    }
    auto file_spec = std::make_shared<const RunSpec>(run_spec(*section));
    const bool spec_changed = file_spec->version() != s->file_version;
    const bool replicas_changed = section->replicas != s->file_replicas;
    const bool other_changed = !(section->autoscale == s->section.autoscale) || !(section->deploy == s->section.deploy) ||
                               section->depends_on.size() != s->section.depends_on.size();
    s->removing = false;
    s->section = *section;
    if (replicas_changed) {
      s->replicas_override.reset();
      s->file_replicas = section->replicas;
    }
    if (section->autoscale && (!s->autoscaler || !(s->autoscaler->settings() == *section->autoscale))) {
      s->autoscaler = std::make_unique<Autoscaler>(*section->autoscale, 0.1, section->autoscale->scale_down_window);
      s->autoscale_desired = std::clamp(s->autoscale_desired ? s->autoscale_desired : section->replicas,
                                        section->autoscale->min, section->autoscale->max);
    } else if (!section->autoscale) {
      s->autoscaler.reset();
    }
    if (spec_changed) {
      s->previous = s->spec;
      s->spec = file_spec;
      s->file_version = file_spec->version();
      s->canary.reset();
      s->rollout.reset();
      s->crash_count = 0;
      s->next_start_at = {};
      im.event(s->name, "", "deploy-started", "flotilla.yaml changed: rolling out version " + s->spec->version(),
               {{"from", s->previous->version()}, {"to", s->spec->version()}});
      out.changed.push_back(s->name);
    } else if (replicas_changed || other_changed) {
      out.changed.push_back(s->name);
    } else {
      out.unchanged.push_back(s->name);
    }
    im.persist(*s);
    im.reconcile(*s);
  }
  for (auto& [name, s] : im.services) {
    if (in_file.count(name) || s->removing) continue;
    s->removing = true;
    out.removed.push_back(name);
    im.event(name, "", "removed", "gone from flotilla.yaml: stopping its instances");
  }
  for (const auto& name : out.removed) {
    auto* s = im.find(name);
    if (!s) continue;
    if (s->instances.empty()) {
      im.commit({store::Op::del(im.service_key(name))});
      im.services.erase(name);
      im.order.erase(std::remove(im.order.begin(), im.order.end(), name), im.order.end());
    } else {
      im.reconcile(*s);
    }
  }
  // Keep start order for new services.
  std::vector<std::string> order;
  for (const auto* section : file.start_order())
    if (im.find(section->name)) order.push_back(section->name);
  for (const auto& n : im.order)
    if (std::find(order.begin(), order.end(), n) == order.end()) order.push_back(n);
  im.order = order;
  return out;
}

void Supervisor::scale(const std::string& service, int replicas, Done done) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (replicas < 0 || replicas > 1000) throw ApiError(400, "replicas must be from 0 to 1000", "replicas");
  if (im.stopping_all) throw ApiError(409, "the application is stopping");
  if (s.autoscaler)
    throw ApiError(409, service + " is autoscaled (" + std::to_string(s.autoscaler->settings().min) + ".." +
                            std::to_string(s.autoscaler->settings().max) +
                            "); change autoscale in flotilla.yaml to change its range",
                   "replicas");
  const int from = s.desired();
  s.replicas_override = replicas;
  im.event(service, "", "scaled", "scaled from " + std::to_string(from) + " to " + std::to_string(replicas),
           {{"from", from}, {"to", replicas}});
  im.persist(s, [done = std::move(done)](const std::string& error) { done(error); });
  im.reconcile(s);
}

void Supervisor::deploy(const std::string& service, const std::vector<std::string>& sets, int canary_percent, Done done) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (im.stopping_all) throw ApiError(409, "the application is stopping");
  if (canary_percent < 0 || canary_percent >= 100) throw ApiError(400, "canary must be a percentage from 1 to 99", "canary");
  RunSpec next = *s.spec;
  for (const auto& a : sets) {
    try {
      apply_set(next, a);
    } catch (const std::invalid_argument& e) {
      throw ApiError(400, e.what(), "set");
    }
  }
  auto spec = std::make_shared<const RunSpec>(std::move(next));
  if (canary_percent > 0) {
    if (s.canary) throw ApiError(409, "a canary of " + service + " is running: promote or roll it back first", "canary");
    if (s.rollout) throw ApiError(409, "a rollout of " + service + " is in progress", "canary");
    Canary c;
    c.percent = canary_percent;
    c.spec = spec;
    s.canary = c;
    im.event(service, "", "canary-started",
             "canary of version " + spec->version() + " takes " + std::to_string(canary_percent) + "% of the traffic",
             {{"version", spec->version()}, {"percent", canary_percent}});
  } else {
    if (s.canary) throw ApiError(409, "a canary of " + service + " is running: promote or roll it back first", "canary");
    if (spec->version() == s.spec->version())
      throw ApiError(400, sets.empty() ? "nothing to deploy: give --set KEY=VALUE (or change flotilla.yaml and run flotilla up)"
                                       : "nothing changes: version " + spec->version() + " already runs",
                     "set");
    s.previous = s.spec;
    s.spec = spec;
    s.rollout.reset();
    s.crash_count = 0;
    s.next_start_at = {};
    im.event(service, "", "deploy-started", "rolling out version " + spec->version(),
             {{"from", s.previous->version()}, {"to", spec->version()}});
  }
  im.persist(s, [done = std::move(done)](const std::string& error) { done(error); });
  im.reconcile(s);
}

void Supervisor::promote(const std::string& service, Done done) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (!s.canary) throw ApiError(409, service + " has no canary to promote", "service");
  im.event(service, "", "canary-promoted", "canary version " + s.canary->spec->version() + " promoted");
  im.end_canary(s, true);
  im.persist(s, [done = std::move(done)](const std::string& error) { done(error); });
}

void Supervisor::rollback(const std::string& service, Done done) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (s.canary) {
    im.event(service, "", "canary-rolled-back", "canary version " + s.canary->spec->version() + " rolled back");
    im.end_canary(s, false);
  } else {
    if (!s.previous) throw ApiError(409, service + " has no previous version to roll back to", "service");
    std::swap(s.spec, s.previous);
    s.rollout = Rollout{s.previous->version(), s.spec->version(), Clock::now(), 0, true};
    s.crash_count = 0;
    s.next_start_at = {};
    im.event(service, "", "rollback", "rolling back to version " + s.spec->version(),
             {{"from", s.previous->version()}, {"to", s.spec->version()}});
    im.reconcile(s);
  }
  im.persist(s, [done = std::move(done)](const std::string& error) { done(error); });
}

void Supervisor::stop_all(bool forget, std::function<void()> done) {
  auto& im = *impl_;
  im.stop_done.push_back(std::move(done));
  if (!im.stopping_all) {
    im.stopping_all = true;
    im.event("", "", "stopping", forget ? "flotilla down: stopping every service" : "agent stopping: stopping every service");
    if (forget) {
      std::vector<store::Op> ops;
      for (auto& [name, s] : im.services) {
        s->replicas_override.reset();
        s->canary.reset();
        ops.push_back(store::Op::del(im.service_key(name)));
      }
      im.commit(std::move(ops));
    }
  }
  im.maybe_finish_stop_all();
}

json Supervisor::status() const {
  const auto& im = *impl_;
  json services = json::array();
  for (const auto& name : im.order)
    if (auto it = im.services.find(name); it != im.services.end()) services.push_back(im.service_json(*it->second));
  return {{"Name", im.app}, {"Stopping", im.stopping_all}, {"Services", services}};
}

json Supervisor::instances(const std::string& service) const {
  const auto& im = *impl_;
  json out = json::array();
  for (const auto& name : im.order) {
    if (!service.empty() && name != service) continue;
    auto it = im.services.find(name);
    if (it == im.services.end()) continue;
    for (const auto& i : it->second->instances) out.push_back(im.instance_json(*it->second, *i));
  }
  return out;
}

bool Supervisor::has_service(const std::string& service) const { return impl_->services.count(service) > 0; }

json Supervisor::events(uint64_t after, size_t limit, const std::string& service) const {
  json out = json::array();
  for (const auto& e : impl_->events) {
    if (e["Seq"].get<uint64_t>() <= after) continue;
    if (!service.empty() && e["Service"].get<std::string>() != service) continue;
    out.push_back(e);
    if (out.size() >= limit) break;
  }
  return out;
}

uint64_t Supervisor::last_event() const { return impl_->next_seq - 1; }

uint64_t Supervisor::wait(std::function<void()> wake) {
  auto id = impl_->next_waiter++;
  impl_->waiters[id] = std::move(wake);
  return id;
}

void Supervisor::cancel_wait(uint64_t handle) { impl_->waiters.erase(handle); }

const std::string& Supervisor::log_dir() const { return impl_->log_dir; }
EventLoop& Supervisor::loop() { return impl_->loop; }
const std::string& Supervisor::app_name() const { return impl_->app; }

}  // namespace flotilla::supervisor
