#include "health/runner.h"

#include <spdlog/spdlog.h>


#include "common/error.h"
#include "common/event_loop.h"
#include "common/metrics.h"
#include "common/random.h"
#include "health/probe.h"

namespace flotilla::health {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {
constexpr Duration kDefaultTimeout = 10s;
constexpr Duration kDefaultInterval = 10s;
constexpr Duration kReapEvery = 250ms;

Duration jitter(Duration upto) {
  thread_local Random rng;
  if (upto.count() <= 0) return Duration::zero();
  return Duration(static_cast<int64_t>(rng() % static_cast<uint64_t>(upto.count())));
}
}  // namespace

struct Runner::Job {
  explicit Job(EventLoop& loop) : timer(loop) {}
  registry::Check check;  // as last seen in the registry
  Timer timer;            // next probe, or the TTL deadline
  Clock::time_point next{};
  int successes = 0;
  int failures = 0;
  uint64_t generation = 0;  // bumped when the definition changes; older probes' results are ignored
  bool in_flight = false;
  Clock::time_point critical_since{};  // for DeregisterCriticalServiceAfter
  bool reaping = false;
};

Runner::Runner(EventLoop& loop, registry::Registry& registry, metrics::Registry& metrics)
    : loop_(loop), registry_(registry), reaper_(std::make_unique<Timer>(loop)) {
  probes_ = &metrics.counter("flotilla_health_probes_total", "HTTP and TCP health probes run.");
  reaped_ = &metrics.counter("flotilla_health_reaped_total",
                             "Services deregistered after DeregisterCriticalServiceAfter.");
}

Runner::~Runner() = default;

void Runner::start() {
  for (const auto& [id, c] : registry_.state().checks()) on_check(id, &c);
  registry_.on_check_change([this](const std::string& id, const registry::Check* c) { on_check(id, c); });
  reap();
}

void Runner::on_check(const std::string& id, const registry::Check* c) {
  if (!c) {
    jobs_.erase(id);
    return;
  }
  auto it = jobs_.find(id);
  bool fresh = it == jobs_.end();
  if (fresh) it = jobs_.emplace(id, std::make_unique<Job>(loop_)).first;
  Job& job = *it->second;
  bool changed = fresh || job.check.kind != c->kind || !(job.check.definition == c->definition);
  job.check = *c;
  // Critical-since tracking for the reaper.
  if (c->status == registry::status::critical) {
    if (job.critical_since == Clock::time_point{}) job.critical_since = Clock::now();
  } else {
    job.critical_since = {};
    job.reaping = false;
  }
  if (!changed) return;
  job.successes = job.failures = 0;
  job.generation = ++next_generation_;  // unique across jobs: a re-created check never matches
  job.in_flight = false;  // a probe of the old definition may still run; its result will be ignored
  const auto& def = c->definition;
  if (c->kind == "http" || c->kind == "tcp") {
    // Stagger the first run so that thousands of checks do not fire together, but start at
    // once-ish: a restarted agent must learn the truth quickly.
    auto interval = def.interval.count() > 0 ? def.interval : kDefaultInterval;
    schedule(job, jitter(std::min<Duration>(interval, 1s)));
  } else if (c->kind == "ttl") {
    arm_ttl(job);
  } else {
    job.timer.cancel();
  }
}

void Runner::arm_ttl(Job& job) {
  auto id = job.check.id;
  job.timer.arm(job.check.definition.ttl, [this, id] {
    registry_.update_check(id, registry::status::critical, "TTL expired", [id](const registry::WriteResult& r) {
      if (!r.ok) spdlog::warn("recording the TTL expiry of check {} failed: {}", id, r.error);
    });
  });
}

void Runner::schedule(Job& job, Duration delay) {
  job.next = Clock::now() + delay;
  auto id = job.check.id;
  job.timer.arm(delay, [this, id] { run_probe(id); });
}

void Runner::run_probe(const std::string& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = *it->second;
  const auto& def = job.check.definition;
  auto interval = def.interval.count() > 0 ? def.interval : kDefaultInterval;
  // Fixed-rate schedule: the next run is due one interval after this one was due, so probe
  // latency does not accumulate into drift.
  auto due = job.next + interval;
  auto now = Clock::now();
  if (due < now) due = now + interval / 10;
  job.next = due;
  job.timer.arm(std::chrono::duration_cast<Duration>(due - now), [this, id] { run_probe(id); });
  if (job.in_flight) return;  // the previous probe still runs (timeout > interval)
  job.in_flight = true;
  probes_->inc();
  auto timeout = def.timeout.count() > 0 ? def.timeout : kDefaultTimeout;
  auto done = [this, id, generation = job.generation](ProbeResult&& r) {
    auto it = jobs_.find(id);
    // The check was removed, re-added or redefined since this probe started.
    if (it == jobs_.end() || it->second->generation != generation) return;
    it->second->in_flight = false;
    on_result(id, r.status, std::move(r.output));
  };
  try {
    if (job.check.kind == "http") probe_http(loop_, def, timeout, done);
    else probe_tcp(loop_, def.tcp, timeout, done);
  } catch (const std::exception& e) {
    // A definition the probe cannot even send must not take the agent down with it.
    done(ProbeResult{registry::status::critical, std::string("cannot run the check: ") + e.what()});
  }
}

void Runner::on_result(const std::string& id, const std::string& status, std::string output) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return;
  Job& job = *it->second;
  const auto& def = job.check.definition;
  if (status == registry::status::passing || status == registry::status::warning) {
    ++job.successes;
    job.failures = 0;
    if (job.successes < def.success_before_passing) return;
  } else {
    ++job.failures;
    job.successes = 0;
    if (job.failures < def.failures_before_critical) return;
  }
  registry_.update_check(id, status, output, [id](const registry::WriteResult& r) {
    if (!r.ok) spdlog::warn("recording the result of check {} failed: {}", id, r.error);
  });
}

void Runner::ttl_update(const std::string& id, const std::string& status, const std::string& output,
                        registry::Registry::Done done) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) throw ApiError(404, "unknown check ID \"" + id + "\"", "check_id");
  Job& job = *it->second;
  if (job.check.kind != "ttl")
    throw bad_request("check \"" + id + "\" is not a TTL check; only TTL checks take updates", "check_id");
  arm_ttl(job);
  registry_.update_check(id, status, output, std::move(done));
}

void Runner::reap() {
  auto now = Clock::now();
  for (auto& [id, job] : jobs_) {
    auto after = job->check.definition.deregister_critical_service_after;
    if (after.count() <= 0 || job->check.service_id.empty() || job->reaping) continue;
    if (job->critical_since == Clock::time_point{} || now - job->critical_since < after) continue;
    job->reaping = true;
    reaped_->inc();
    spdlog::info("deregistering service {}: check {} critical for more than {}", job->check.service_id, id,
                 format_duration(after));
    registry_.deregister_service(job->check.service_id, [this, id](const registry::WriteResult& r) {
      if (r.ok) return;
      spdlog::warn("deregistering a critical service failed (will retry): {}", r.error);
      if (auto it = jobs_.find(id); it != jobs_.end()) it->second->reaping = false;
    });
  }
  reaper_->arm(kReapEvery, [this] { reap(); });
}

}  // namespace flotilla::health
