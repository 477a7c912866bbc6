// One instance's life: start (shim, PORT, <DEP>_URL, logs), health probes, registration once
// healthy, drain and stop, and what its exit means (restart with backoff, or not).
#include "common/error.h"
#include "supervisor/supervisor_impl.h"

extern char** environ;

namespace flotilla::supervisor {

std::vector<std::string> Supervisor::Impl::environment_for(const ServiceRuntime& s, const RunSpec& spec,
                                                          const std::string& id, int port) {
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
  for (const auto& d : spec.dependencies) {
    uint16_t p = gateway ? gateway->service_port(d) : 0;
    if (p) env[url_variable(d)] = "http://127.0.0.1:" + std::to_string(p);
  }
  std::vector<std::string> out;
  out.reserve(env.size());
  for (auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

void Supervisor::Impl::start_instance(ServiceRuntime& s, std::shared_ptr<const RunSpec> spec, bool canary) {
  auto inst = std::make_unique<Instance>();
  inst->id = s.name + "-" + random_suffix();
  inst->service = s.name;
  inst->spec = spec;
  inst->version = spec->version();
  inst->canary = canary;
  inst->generation = s.generation;
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
    std::function<void(std::string_view)> echo;
    if (options.echo)
      echo = [out = options.echo, id = inst->id](std::string_view text) { out->line(id, text); };
    inst->log = std::make_unique<InstanceLog>(loop, log_dir, s.name, inst->id, sp.stdout_fd, sp.stderr_fd,
                                              options.logs, [this] { notify(); }, std::move(echo));
  } catch (const std::exception& e) {
    if (!inst->cgroup.empty()) cgroup_remove(inst->cgroup);
    event(s.name, inst->id, "failed", std::string("cannot start: ") + e.what());
    on_crash(s, /*current_version=*/spec == s.spec && !canary,
             std::string("cannot start: ") + e.what());
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
  s.run_instances.push_back(ref.id);
  if (s.run_instances.size() > 50) s.run_instances.pop_front();
  if (ref.spec->healthcheck.kind == config::Healthcheck::Kind::none) {
    became_healthy(s, ref);
  } else {
    ref.probe_timer = std::make_unique<Timer>(loop);
    schedule_probe(s.name, ref.id, 0ms);
  }
}

void Supervisor::Impl::schedule_probe(const std::string& service, const std::string& id, Duration after) {
  auto* s = find(service);
  Instance* i = s ? instance(*s, id) : nullptr;
  if (!i || !i->probe_timer) return;
  i->probe_timer->arm(after, [this, service, id] { probe(service, id); });
}

void Supervisor::Impl::probe(const std::string& service, const std::string& id) {
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

void Supervisor::Impl::on_probe(const std::string& service, const std::string& id, bool ok, const std::string& output) {
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
        if (s->rollout && current(*s, *i)) {
          const bool restart = s->rollout->restart;
          roll_back_failed(*s, "an instance was not healthy within " + format_duration(s->section.deploy.healthy_timeout));
          int live = 0;
          for (const auto& other : s->instances)
            if (other.get() != i && other->live() && current(*s, *other)) ++live;
          if (restart && live >= s->desired()) {
            // The restart stopped and the instances it had not replaced are enough: this one
            // is not replaced, so its end is a planned stop, not a crash to back off from.
            stop_instance(*s, *i, "restart stopped");
            return;
          }
        }
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

void Supervisor::Impl::became_healthy(ServiceRuntime& s, Instance& i) {
  i.ever_healthy = true;
  s.last_crash = nullptr;  // a replacement is up: the crash is history (flotilla events has it)
  if (i.spec->port_mode == config::ServiceSection::PortMode::none) {
    i.state = Instance::State::ready;
    i.ready_at = Clock::now();
    event(s.name, i.id, "healthy", "running (no port: not routed)");
    // Not from here: start_instance (inside reconcile's loop of starts) may be what called this,
    // and a nested reconcile would start the same missing instances again.
    loop.post([this, alive = alive, service = s.name] {
      if (!*alive) return;
      if (auto* sv = find(service)) reconcile(*sv);
      start_waiting_dependents();
    });
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

void Supervisor::Impl::start_waiting_dependents() {
  for (const auto& name : std::vector<std::string>(order))
    if (auto* d = find(name); d && !d->started_once) reconcile(*d);
}

int Supervisor::Impl::weight_for(const ServiceRuntime& s, const Instance& i) const {
  if (!s.canary) return 1;
  if (i.canary) {
    int stable = 0;
    for (const auto& o : s.instances)
      if (!o->canary && o->state == Instance::State::ready) ++stable;
    return std::max(1, s.canary->percent * std::max(1, stable));
  }
  return std::max(1, 100 - s.canary->percent);
}

void Supervisor::Impl::register_instance(ServiceRuntime& s, Instance& i, std::function<void()> then) {
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
  // The supervisor's healthcheck, shown as the instance's check (Consul clients and UIs expect
  // one): passing while the instance is registered, since one that fails `retries` probes in a
  // row is deregistered. Status only: the supervisor probes, not the registry's checker.
  std::vector<registry::Check> checks;
  const auto& hc = i.spec->healthcheck;
  if (hc.kind != config::Healthcheck::Kind::none) {
    registry::Check c;
    c.id = "service:" + i.id;
    c.name = "flotilla healthcheck";
    c.status = registry::status::passing;
    c.output = i.last_probe;
    c.notes = (hc.kind == config::Healthcheck::Kind::http ? "HTTP GET " + hc.http_path : std::string("TCP connect")) +
              " every " + format_duration(hc.interval) + ", by the supervisor; after " + std::to_string(hc.retries) +
              " failures in a row the instance is deregistered and restarted";
    checks.push_back(std::move(c));
  }
  try {
    registry.register_service(std::move(svc), std::move(checks), true,
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

void Supervisor::Impl::deregister(Instance& i, std::function<void()> then) {
  if (!i.registered) {
    if (then) then();
    return;
  }
  i.registered = false;
  registry.deregister_service(i.id, [alive = alive, then = std::move(then)](const registry::WriteResult&) {
    if (*alive && then) then();
  });
}

void Supervisor::Impl::sync_weights(ServiceRuntime& s) {
  for (auto& i : s.instances) {
    if (i->state != Instance::State::ready || !i->registered) continue;
    if (weight_for(s, *i) != i->registered_weight) register_instance(s, *i, [] {});
  }
}

void Supervisor::Impl::fail_instance(ServiceRuntime& s, Instance& i) {
  deregister(i);
  if (i.probe_timer) i.probe_timer->cancel();
  i.state = Instance::State::stopping;
  kill_instance(i.shim);
  if (!i.cgroup.empty()) cgroup_kill(i.cgroup);
}

void Supervisor::Impl::stop_instance(ServiceRuntime& s, Instance& i, const std::string& why) {
  if (!i.live()) return;
  i.stop_requested = true;
  if (i.probe_timer) i.probe_timer->cancel();
  event(s.name, i.id, "stopping", why);
  if (!i.registered) {
    send_stop(s, i);
    return;
  }
  i.state = Instance::State::draining;  // before: the answer may come at once
  try {
    registry.set_maintenance(i.id, true, "flotilla: draining before stop",
                             [this, alive = alive, service = s.name, id = i.id](const registry::WriteResult&) {
                               if (!*alive) return;
                               auto* sv = find(service);
                               Instance* in = sv ? instance(*sv, id) : nullptr;
                               if (in && in->state == Instance::State::draining)
                                 wait_drained(service, id, Clock::now(), Clock::now() + in->spec->stop_grace_period);
                             });
  } catch (const ApiError&) {
    // Its registration is still being committed (or someone deregistered it). It leaves the
    // registry instead (applied after the registration), then drains what the gateway sent it
    // meanwhile, as any other instance.
    deregister(i, [this, service = s.name, id = i.id] {
      auto* sv = find(service);
      Instance* in = sv ? instance(*sv, id) : nullptr;
      if (in && in->state == Instance::State::draining)
        wait_drained(service, id, Clock::now(), Clock::now() + in->spec->stop_grace_period);
    });
  }
}

void Supervisor::Impl::wait_drained(const std::string& service, const std::string& id, Clock::time_point since, Clock::time_point until) {
  auto* s = find(service);
  Instance* i = s ? instance(*s, id) : nullptr;
  if (!i || i->state != Instance::State::draining) return;
  auto now = Clock::now();
  bool idle = true;
  if (gateway) {
    auto load = gateway->endpoint_load(service, i->address(), i->id);
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

void Supervisor::Impl::send_stop(ServiceRuntime& s, Instance& i) {
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

void Supervisor::Impl::on_exit(pid_t pid, ExitStatus status) {
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
  i->exit_ok = !status.signaled && status.code == 0;
  const bool wanted = i->stop_requested;
  const bool is_new = current(*s, *i);
  const bool canary = i->canary;
  bool no_restart = false;
  if (wanted) {
    // A planned stop that the stop signal ended is not a failure: say so plainly.
    event(service, id, "stopped",
          status.signaled && status.signal == signal_number(i->spec->stop_signal)
              ? "stopped (" + signal_name(status.signal) + ")"
              : status.describe());
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
    if (!wanted) {
      i->state = Instance::State::exited;
      s->last_crash = instance_json(*s, *i);
    }
    s->instances.erase(std::remove_if(s->instances.begin(), s->instances.end(),
                                      [&](const auto& p) { return p->id == id; }),
                       s->instances.end());
    if (!wanted) on_crash(*s, is_new, status.describe());
    // A canary that keeps crashing takes no traffic and would wait for a verdict forever: the
    // same 3 crashes that roll back a deploy end it.
    if (!wanted && canary && s->canary && ++s->canary->crashes >= kRolloutCrashLimit) {
      event(service, "", "canary-failed",
            "canary version " + s->canary->spec->version() + " crashed " + std::to_string(s->canary->crashes) +
                " times: rolling back");
      s->crash_count = 0;
      s->next_start_at = {};
      if (s->start_timer) s->start_timer->cancel();
      end_canary(*s, false);
    }
  }
  reconcile(*s);
  if (no_restart) start_waiting_dependents();  // one waiting for this one to complete
  maybe_finish_stop_all();
  if (s->removing && s->instances.empty()) {
    commit({store::Op::del(service_key(s->name))});
    services.erase(service);
    order.erase(std::remove(order.begin(), order.end(), service), order.end());
  }
}

void Supervisor::Impl::on_crash(ServiceRuntime& s, bool current_version, const std::string& why) {
  s.last_failure = why;
  // Counted per version, as a new Kubernetes pod starts at 0: a fixed version does not carry the
  // broken one's count.
  if (s.restarts_version != s.spec->version()) {
    s.restarts = 0;
    s.restarts_version = s.spec->version();
  }
  ++s.restarts;
  if (restarts_metric) restarts_metric->inc();
  auto now = Clock::now();
  ++s.crash_count;
  auto backoff = std::min<Duration>(kBackoffCap, kBackoffBase * (1LL << std::min(s.crash_count - 1, 20)));
  s.next_start_at = now + backoff;
  s.last_crash_at = now;
  bool rolled_back = false;
  if (current_version && s.rollout) {
    if (++s.rollout->crashes >= kRolloutCrashLimit) {
      roll_back_failed(s, std::string(s.rollout->rollback ? "the version rolled back to" : "the new version") +
                              " crashed " + std::to_string(s.rollout->crashes) + " times");
      rolled_back = true;
    }
  } else if (current_version && s.probation && s.probation->version == s.spec->version() && now < s.probation->until) {
    if (++s.probation->crashes >= kRolloutCrashLimit) {
      const int crashes = s.probation->crashes;
      s.probation.reset();
      roll_back_failed(s, "the new version crashed " + std::to_string(crashes) + " times within " +
                              format_duration(s.section.deploy.healthy_timeout) + " of its rollout");
      rolled_back = true;
    }
  }
  if (rolled_back) {
    // A rollback starts the previous version at once; a restart that stopped leaves the instances
    // it had not replaced, and nothing restarts unless they are too few.
    int live = 0;
    for (const auto& i : s.instances)
      if (i->live() && current(s, *i)) ++live;
    if (s.rollout || live >= s.desired()) {
      s.crash_count = 0;
      s.next_start_at = {};
      if (s.start_timer) s.start_timer->cancel();
      return;
    }
  }
  event(s.name, "", "backoff",
        "restarting in " + format_duration(backoff) + " (" + std::to_string(s.crash_count) +
            (s.crash_count == 1 ? " failure" : " failures in a row") + ")",
        {{"seconds", seconds(backoff)}, {"failures", s.crash_count}});
}

}  // namespace flotilla::supervisor
