// The autoscaler's decision rule (Kubernetes' HPA algorithm, evaluated every second instead of
// every 15): desired = ceil(current × metric / target), no change while metric/target is within
// the tolerance of 1, clamped to [min, max]; a scale-up takes effect at once, a scale-down only
// to the highest recommendation of the last `scale_down_window` (so a short dip never removes
// instances that the next burst needs). Pure logic: the supervisor feeds it samples.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <utility>

#include "config/flotilla_file.h"

namespace flotilla::supervisor {

struct AutoscaleDecision {
  int desired = 0;           // what the service should run now
  int recommendation = 0;    // this sample's own recommendation (before the scale-down window)
  double metric = 0;         // the metric value used
  bool changed = false;      // desired differs from `current`
  std::string reason;        // for the event: "rps_per_instance 412.0 / target 200 at 2 instances -> 5"
};

class Autoscaler {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Autoscaler(config::Autoscale settings, double tolerance = 0.1,
                      Clock::duration scale_down_window = std::chrono::seconds(60));

  // current: instances counted for the metric (ready ones); metric: the per-instance average for
  // rps_per_instance / cpu_percent / inflight, the service's p95 for p95_ms. With current == 0,
  // any positive demand recommends min (at least 1 when metric > 0); a NaN metric (no data)
  // recommends current. The window holds the recommendations made at most `scale_down_window`
  // before `now` (this one included); a scale-down goes to min(current, their highest). `now`
  // must not go backwards between calls.
  AutoscaleDecision evaluate(int current, double metric, Clock::time_point now);
  const config::Autoscale& settings() const { return settings_; }

 private:
  config::Autoscale settings_;
  double tolerance_;
  Clock::duration window_;
  std::deque<std::pair<Clock::time_point, int>> history_;  // recommendations inside the window
};

// Flagger-style canary verdict for one analysis interval, from the canary's and the stable
// instances' counts in that interval.
struct CanarySample {
  uint64_t requests = 0;
  uint64_t failures = 0;
  double p95_ms = 0;
};
enum class CanaryVerdict { wait, pass, fail };
struct CanaryCheck {
  CanaryVerdict verdict = CanaryVerdict::wait;
  std::string reason;  // "error ratio 0.120 > stable 0.000 + 0.010", "p95 812ms > 1.5 × 40ms + 5ms", "12 requests < 20 …"
};
// wait: fewer than min_requests canary requests (or none); fail: canary error ratio above the
// stable one + max_error_ratio_increase (stable counts 0 without requests), or, when stable had
// requests, canary p95 above max_p95_ratio × stable p95 + 5 ms; else pass. Limits are inclusive.
CanaryCheck judge_canary(const config::CanaryAnalysis& analysis, const CanarySample& canary, const CanarySample& stable);

}  // namespace flotilla::supervisor
