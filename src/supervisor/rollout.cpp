// reconcile(): what runs converges on what is desired, one step at a time — scaling, start-first
// rollouts and their automatic rollback, canaries and their analysis, and the order of a full stop.
#include "supervisor/supervisor_impl.h"

namespace flotilla::supervisor {

Supervisor::Impl::Finished Supervisor::Impl::finished(const ServiceRuntime& s) const {
  Finished f;
  for (const auto& i : s.instances)
    if (i->state == Instance::State::exited && i->no_restart && current(s, *i))
      ++(i->exit_ok ? f.completed : f.failed);
  return f;
}

std::vector<std::string> Supervisor::Impl::unmet_dependencies(const ServiceRuntime& s) const {
  std::vector<std::string> unmet;
  for (const auto& d : s.section.depends_on) {
    auto it = services.find(d.service);
    const ServiceRuntime* dep = it == services.end() ? nullptr : it->second.get();
    if (!dep || dep->desired() == 0) continue;
    int started = 0, ready = 0;
    for (const auto& i : dep->instances) {
      if (i->live()) ++started;
      if (i->state == Instance::State::ready) ++ready;
    }
    // As compose: service_completed_successfully waits for every instance (of the version the
    // file now asks for) to exit with 0.
    const bool met = d.condition == "service_healthy"                  ? ready > 0
                     : d.condition == "service_completed_successfully" ? finished(*dep).completed >= dep->desired()
                                                                       : started > 0;
    if (!met) unmet.push_back(d.service);
  }
  return unmet;
}

void Supervisor::Impl::roll_back_failed(ServiceRuntime& s, const std::string& why) {
  if (s.rollout && s.rollout->restart) {
    // Nothing to go back to: the same version's new processes fail (its files on disk changed,
    // say). The restart stops where it is; the instances started before it (start-first: all
    // still running) keep serving and count as current again.
    int kept = 0;
    for (auto& i : s.instances)
      if (i->live() && !i->canary && i->generation != s.generation) {
        i->generation = s.generation;
        ++kept;
      }
    event(s.name, "", "restart-failed",
          "restart stopped: " + why + "; " + std::to_string(kept) + " instance(s) started before it keep running",
          {{"version", s.spec->version()}, {"kept", kept}});
    s.rollout.reset();
    return;
  }
  if (s.rollout && s.rollout->rollback) {
    // The version rolled back to fails too. It ends here, as a rollout's failure does, rather
    // than crash-looping in "rolling back" for good: back to the version it left, whose
    // instances still run (start-first), and the target's instances stopped. After a rollback
    // asked for, the target stays the previous version (to try again once fixed). After one that
    // followed a failed rollout, both versions fail: nothing is kept to go back to and nothing
    // more is tried by itself (no ping-pong between two broken versions); crashes back off as
    // usual until a deploy fixes it.
    const std::string target = s.spec->version();
    std::string keeps = target;
    if (s.previous && s.previous->version() == s.rollout->from) {
      auto failed = s.spec;
      s.spec = s.previous;
      s.previous = s.rollout->automatic ? nullptr : failed;
      keeps = s.spec->version();
      for (auto& i : s.instances)
        if (i->live() && !i->canary && !current(s, *i)) stop_instance(s, *i, "rollback stopped");
    }
    event(s.name, "", "rollback-failed",
          "rollback to version " + target + " stopped: " + why + "; version " + keeps + " stays",
          {{"version", keeps}});
    s.rollout.reset();
    s.probation.reset();
    persist(s);
    return;
  }
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
  s.rollout->automatic = true;
  s.crash_count = 0;
  s.next_start_at = {};
  if (s.start_timer) s.start_timer->cancel();
  persist(s);
}

void Supervisor::Impl::reconcile(ServiceRuntime& s) {
  if (stopping_all) {
    for (auto& i : s.instances)
      if (i->live() && may_stop_now(s.name)) stop_instance(s, *i, "stopping the application");
    return;
  }
  const int want = s.desired();
  std::vector<Instance*> fresh_ready, fresh_starting, old, canaries;
  const Finished done = finished(s);
  const int exited_for_good = done.completed + done.failed;
  for (auto& i : s.instances) {
    if (!i->live()) continue;
    if (i->canary) canaries.push_back(i.get());
    else if (current(s, *i))
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
  // A fixed port: nothing starts while an instance that may still hold it drains or stops (its
  // exit calls reconcile again). A new instance would fail to bind, or worse pass its health check
  // against the old process.
  const bool fixed = s.spec->port_mode == config::ServiceSection::PortMode::fixed;
  if (fixed)
    for (auto& i : s.instances)
      if (i->state == Instance::State::draining || i->state == Instance::State::stopping) return;
  if (!old.empty()) {
    // Rollout: start-first, one at a time (maxSurge 1, maxUnavailable 0). A fixed port cannot
    // hold two instances: then stop-first.
    if (!s.rollout) s.rollout = Rollout{old.front()->version, s.spec->version(), now};
    if (!fresh_starting.empty()) {
      for (auto* i : fresh_starting)
        if (now - i->started_at > s.section.deploy.healthy_timeout + 5s) {
          roll_back_failed(s, "an instance was not healthy within " + format_duration(s.section.deploy.healthy_timeout));
          return reconcile(s);
        }
      return;
    }
    const int total = fresh + static_cast<int>(old.size());
    if (total > want || (fixed && total >= want && !old.empty())) {
      // Retire one old instance: a not-ready one first, else the oldest.
      Instance* victim = old.front();
      for (auto* o : old)
        if (o->state != Instance::State::ready) victim = o;
      stop_instance(s, *victim,
                    s.rollout->restart ? "replaced by a new process (restart)" : "replaced by version " + s.spec->version());
      if (!fixed) return;
      return;
    }
    if (can_start()) start_instance(s, s.spec, false);
    return;
  }
  // With the old instances gone, a rollout is over once the new ones are all up (stop-first,
  // with a fixed port, gets here before the new instance has even started).
  const bool all_up = fresh_starting.empty() && static_cast<int>(fresh_ready.size()) + exited_for_good >= want;
  if (s.rollout && !all_up) {
    for (auto* i : fresh_starting)
      if (now - i->started_at > s.section.deploy.healthy_timeout + 5s) {
        roll_back_failed(s, "an instance was not healthy within " + format_duration(s.section.deploy.healthy_timeout));
        return reconcile(s);
      }
    if (fresh < want && can_start())
      for (int n = fresh; n < want && Clock::now() >= s.next_start_at; ++n) start_instance(s, s.spec, false);
    sync_weights(s);
    return;
  }
  if (s.rollout && s.rollout->restart) {
    event(s.name, "", "restart-finished",
          "restarted: version " + s.spec->version() + " (" + std::to_string(fresh_ready.size()) + " instance(s))",
          {{"version", s.spec->version()}});
    s.rollout.reset();
  }
  if (s.rollout) {
    if (!s.rollout->rollback && s.previous)
      s.probation = Probation{s.spec->version(), now + s.section.deploy.healthy_timeout, s.rollout->crashes};
    else
      s.probation.reset();
    // After a failed rollout's rollback, the failed version is no version to return to: the one
    // that runs is the one before it, and `flotilla rollback` has nothing to go back to.
    if (s.rollout->automatic) {
      s.previous.reset();
      persist(s);
    }
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

bool Supervisor::Impl::may_stop_now(const std::string& name) {
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

void Supervisor::Impl::maybe_finish_stop_all() {
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

void Supervisor::Impl::analyse_canary(ServiceRuntime& s, Clock::time_point now) {
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

void Supervisor::Impl::end_canary(ServiceRuntime& s, bool promote) {
  if (!s.canary) return;
  auto spec = s.canary->spec;
  s.canary.reset();
  if (promote) {
    s.previous = s.spec;
    s.spec = spec;
    s.deployed_version = spec->version();
    for (auto& i : s.instances)
      if (i->canary) i->canary = false;  // the same version: counted as a new instance now
    s.rollout = Rollout{s.previous->version(), s.spec->version(), Clock::now()};
    s.crash_count = 0;
    s.next_start_at = {};
    if (s.start_timer) s.start_timer->cancel();
  }
  persist(s);
  reconcile(s);
  sync_weights(s);
}

}  // namespace flotilla::supervisor
