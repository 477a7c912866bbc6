#include "gateway/resilience/outlier.h"

#include <algorithm>

namespace flotilla::gateway::resilience {

OutlierConfig outlier_config(const config::OutlierDetection& c) {
  OutlierConfig o;
  o.consecutive_failures = static_cast<uint32_t>(std::max(c.consecutive_failures, 0));
  o.base_ejection_time = c.base_ejection_time;
  o.max_ejection_time = c.max_ejection_time;
  o.max_ejection_percent = static_cast<uint32_t>(std::clamp(c.max_ejection_percent, 0, 100));
  return o;
}

bool OutlierDetector::is_failure(const Outcome& outcome) const {
  if (outcome.kind != Outcome::Kind::response) return true;
  return config_.count_5xx && outcome.status >= 500 && outcome.status <= 599;
}

bool OutlierDetector::report(EndpointState& endpoint, std::span<const Endpoint> cluster, const Outcome& outcome,
                             int64_t now_ns) const {
  if (!is_failure(outcome)) {
    on_success(endpoint);
    return false;
  }
  return on_failure(endpoint, cluster, now_ns);
}

void OutlierDetector::on_success(EndpointState& endpoint) const {
  // Skip the store when already 0: the common case stays a read of a shared line, not a write.
  if (endpoint.consecutive_failures.load(std::memory_order_relaxed) != 0)
    endpoint.consecutive_failures.store(0, std::memory_order_relaxed);
}

bool OutlierDetector::on_failure(EndpointState& endpoint, std::span<const Endpoint> cluster, int64_t now_ns) const {
  if (config_.consecutive_failures == 0 || ejected(endpoint, now_ns)) return false;
  uint32_t n = endpoint.consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1;
  // At or past the threshold, not just at it: a reload may lower the threshold below a count that
  // endpoints already have (their state outlives the change). Racing failures may both try; the
  // ejection's compare-and-swap lets one through.
  if (n < config_.consecutive_failures) return false;
  endpoint.consecutive_failures.store(0, std::memory_order_relaxed);
  return try_eject(endpoint, cluster, now_ns);
}

std::chrono::nanoseconds OutlierDetector::ejection_time(uint32_t n) const {
  auto base = config_.base_ejection_time.count();
  auto max = std::max(config_.max_ejection_time.count(), base);
  if (n == 0) return {};
  return std::chrono::nanoseconds(base > 0 && n > max / base ? max : std::min<int64_t>(base * n, max));
}

bool OutlierDetector::try_eject(EndpointState& endpoint, std::span<const Endpoint> cluster, int64_t now_ns) const {
  // The cap first: cheap, and it settles the single-endpoint cluster.
  const uint64_t allowed = cluster.size() * config_.max_ejection_percent;  // (ejected + 1) * 100 <= this
  if (allowed < 100) return false;

  int64_t previous = endpoint.ejected_until_ns.load();
  if (previous > now_ns) return false;  // ejected meanwhile
  uint32_t times = endpoint.times_ejected.load(std::memory_order_relaxed);
  const int64_t base = config_.base_ejection_time.count();
  if (previous != 0 && base > 0) {  // decay: one step per full base_ejection_time back in service
    int64_t steps = (now_ns - previous) / base;
    times = steps >= static_cast<int64_t>(times) ? 0 : times - static_cast<uint32_t>(steps);
  }
  uint32_t nth = times + 1;
  int64_t until = now_ns + std::max<int64_t>(ejection_time(nth).count(), 1);

  // Publish, then count the others, then keep or withdraw (see the header for why this is exact).
  if (!endpoint.ejected_until_ns.compare_exchange_strong(previous, until)) return false;
  uint64_t others = 0;
  for (const auto& e : cluster)
    if (e.state && e.state.get() != &endpoint && e.state->ejected_until_ns.load() > now_ns) ++others;
  if ((others + 1) * 100 > allowed) {
    endpoint.ejected_until_ns.compare_exchange_strong(until, previous);
    return false;
  }
  endpoint.times_ejected.store(nth, std::memory_order_relaxed);
  endpoint.ejections_total.fetch_add(1, std::memory_order_relaxed);
  return true;
}

size_t OutlierDetector::ejected_count(std::span<const Endpoint> cluster, int64_t now_ns) {
  size_t n = 0;
  for (const auto& e : cluster)
    if (e.state && ejected(*e.state, now_ns)) ++n;
  return n;
}

}  // namespace flotilla::gateway::resilience
