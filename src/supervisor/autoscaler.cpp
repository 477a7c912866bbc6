// The HPA rule with Kubernetes' stabilization: the scale-up recommendation is this sample's own,
// the scale-down limit the highest recommendation of the window, and the result is `current`
// moved to the nearer of the two (so it never scales down past what the window still wanted,
// and never scales up beyond what this sample asks for).
#include "supervisor/autoscaler.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace flotilla::supervisor {

namespace {

// Floating-point slack for the comparisons at the boundaries (2 × 0.3 / 0.1 is 6.000000000000001
// in doubles, which must not round up to 7; a ratio exactly at its limit must pass).
constexpr double kEpsilon = 1e-9;

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// 200 -> "200", 0.5 -> "0.5", 1.25 -> "1.25": targets and ratios as the user wrote them.
std::string plain(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

std::string instances(int n) { return std::to_string(n) + (n == 1 ? " instance" : " instances"); }

}  // namespace

Autoscaler::Autoscaler(config::Autoscale settings, double tolerance, Clock::duration scale_down_window)
    : settings_(std::move(settings)), tolerance_(tolerance), window_(scale_down_window) {}

AutoscaleDecision Autoscaler::evaluate(int current, double metric, Clock::time_point now) {
  AutoscaleDecision d;
  d.metric = metric;
  const int lo = settings_.min;
  const int hi = std::max(settings_.max, settings_.min);
  const double target = settings_.target;

  std::string note;
  double want = current;  // a double: an absurd metric must not overflow an int
  if (std::isnan(metric)) {
    note = " (no metric: kept)";
  } else if (current <= 0) {
    // Nothing to average over: any demand starts at least one instance.
    want = metric > 0 ? std::max(lo, 1) : lo;
  } else if (target > 0) {
    double ratio = metric / target;
    if (std::abs(ratio - 1.0) <= tolerance_ + kEpsilon)
      note = " (within tolerance " + plain(tolerance_) + ")";
    else
      want = std::ceil(static_cast<double>(current) * ratio - kEpsilon);
  }
  if (want > hi) {
    d.recommendation = hi;
    if (note.empty()) note = " (capped at max " + std::to_string(hi) + ")";
  } else if (want < lo) {
    d.recommendation = lo;
    if (note.empty()) note = " (raised to min " + std::to_string(lo) + ")";
  } else {
    d.recommendation = static_cast<int>(want);
  }

  // The window: drop what is older than it, then remember this sample.
  while (!history_.empty() && now - history_.front().first > window_) history_.pop_front();
  history_.emplace_back(now, d.recommendation);
  int highest = d.recommendation;
  for (const auto& [t, r] : history_) highest = std::max(highest, r);

  if (d.recommendation > current) {
    d.desired = d.recommendation;  // scale up at once
  } else {
    d.desired = std::min(current, highest);
    if (d.desired > d.recommendation) {
      auto secs = std::chrono::duration_cast<std::chrono::seconds>(window_).count();
      note += " (scale-down to " + std::to_string(d.recommendation) + " held: " + std::to_string(highest) +
              " recommended within the last " + std::to_string(secs) + "s)";
    }
  }
  d.changed = d.desired != current;
  d.reason = settings_.metric + " " + fixed(metric, 1) + " / target " + plain(target) + " at " + instances(current) +
             " -> " + std::to_string(d.desired) + note;
  return d;
}

CanaryCheck judge_canary(const config::CanaryAnalysis& analysis, const CanarySample& canary,
                         const CanarySample& stable) {
  CanaryCheck c;
  if (canary.requests < static_cast<uint64_t>(std::max(analysis.min_requests, 0)) || canary.requests == 0) {
    c.verdict = CanaryVerdict::wait;
    c.reason = std::to_string(canary.requests) + " requests < " + std::to_string(analysis.min_requests) +
               " (min_requests): no verdict yet";
    return c;
  }
  double canary_ratio = static_cast<double>(canary.failures) / static_cast<double>(canary.requests);
  double stable_ratio =
      stable.requests > 0 ? static_cast<double>(stable.failures) / static_cast<double>(stable.requests) : 0.0;
  double ratio_limit = stable_ratio + analysis.max_error_ratio_increase;
  std::string ratio_text = "error ratio " + fixed(canary_ratio, 3);
  std::string ratio_limit_text = "stable " + fixed(stable_ratio, 3) + " + " + fixed(analysis.max_error_ratio_increase, 3);
  if (canary_ratio > ratio_limit + kEpsilon) {
    c.verdict = CanaryVerdict::fail;
    c.reason = ratio_text + " > " + ratio_limit_text;
    return c;
  }
  std::string p95_text;
  if (stable.requests > 0) {
    double p95_limit = analysis.max_p95_ratio * stable.p95_ms + 5.0;
    std::string limit_text = plain(analysis.max_p95_ratio) + " × " + fixed(stable.p95_ms, 0) + "ms + 5ms";
    if (canary.p95_ms > p95_limit + kEpsilon) {
      c.verdict = CanaryVerdict::fail;
      c.reason = "p95 " + fixed(canary.p95_ms, 0) + "ms > " + limit_text;
      return c;
    }
    p95_text = "p95 " + fixed(canary.p95_ms, 0) + "ms <= " + limit_text;
  } else {
    p95_text = "p95 " + fixed(canary.p95_ms, 0) + "ms not compared (stable had no requests)";
  }
  c.verdict = CanaryVerdict::pass;
  c.reason = ratio_text + " <= " + ratio_limit_text + ", " + p95_text;
  return c;
}

}  // namespace flotilla::supervisor
