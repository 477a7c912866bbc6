// The supervisor's 1 s tick: every instance's CPU and memory (one pass over /proc), what the gateway
// saw of each (requests, failures, latency, ejections), and the autoscaler's decisions.
#include "supervisor/supervisor_impl.h"

namespace flotilla::supervisor {

void Supervisor::Impl::on_tick() {
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

void Supervisor::Impl::sample(ServiceRuntime& s, Clock::time_point now) {
  Load total;
  int64_t inflight = 0;
  for (auto& i : s.instances) {
    if (!gateway || !i->port) continue;
    auto load = gateway->endpoint_load(s.name, i->address(), i->id);
    if (!load.known) continue;
    // The first time the gateway knows an instance, its counts are the instance's own from zero
    // (the gateway's state is per service, address and instance ID, created when the instance
    // is first routed): the requests, failures and ejections before this first tick count.
    gateway::EndpointLoad base = i->last_load;
    base.known = true;
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

Rates Supervisor::Impl::rates(const ServiceRuntime& s, Duration span) const {
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

void Supervisor::Impl::autoscale(ServiceRuntime& s, Clock::time_point now) {
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

void Supervisor::Impl::apply_autoscale(ServiceRuntime& s, const AutoscaleDecision& d) {
  const int from = s.autoscale_desired;
  s.autoscale_desired = d.desired;
  s.autoscale_reason = d.reason;
  event(s.name, "", "autoscaled", "autoscale " + std::to_string(from) + " -> " + std::to_string(d.desired) + ": " + d.reason,
        {{"from", from}, {"to", d.desired}, {"metric", d.metric}});
  reconcile(s);
}

}  // namespace flotilla::supervisor
