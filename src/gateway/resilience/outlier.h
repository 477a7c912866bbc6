// Passive outlier detection (Envoy's consecutive_5xx / consecutive gateway failure): an endpoint
// that fails `consecutive_failures` times in a row is ejected (left out by the balancers) for
// base_ejection_time × times_ejected, capped at max_ejection_time. Works from any worker on the
// shared atomics of EndpointState (gateway/endpoint.h); there is no per-cluster state.
//
// Rules, and where they differ from Envoy:
// - A failure is a connect failure, a reset, a timeout, and (count_5xx) a 5xx answer. Any other
//   outcome is a success and resets the consecutive count.
// - The call whose failure makes the count reach the threshold is the only one that decides (the
//   fetch_add tells exactly one caller), and it resets the count whether or not the ejection is
//   allowed, as Envoy does. Failures reported while the endpoint is ejected (requests sent before)
//   are ignored, so it comes back with a clean count.
// - Ejection n lasts min(base × n, max): 30 s, 60 s, 90 s ... 300 s by default.
// - times_ejected decays: when the endpoint is ejected again, it first drops by one for every full
//   base_ejection_time the endpoint spent un-ejected since its last ejection ended (Envoy drops it
//   by one per 10 s detection interval without an ejection). Computed lazily from
//   ejected_until_ns, which keeps the end of the last ejection: a past value means "not ejected".
//   So the field reads stale between ejections.
// - max_ejection_percent is enforced as Envoy enforces it (without always_eject_one_host): an
//   ejection is allowed only if afterwards at most that share of the cluster is ejected,
//   (ejected + 1) × 100 <= endpoints × percent. With 50 %: never the only endpoint of a cluster,
//   1 of 2, 1 of 3, 2 of 4.
//
// Counting "ejected right now" across threads: counted over the caller's endpoint list when an
// ejection is decided, not kept in a per-cluster counter. Ejections end by time with nobody to
// decrement a counter, and endpoints leave a cluster while ejected; a counter drifts on both, a
// count over the current list cannot. To make count-then-eject atomic without a lock, a decider
// first publishes its ejection (CAS of ejected_until_ns), then counts the others, and withdraws
// when over the cap. All of it is sequentially consistent, so of two racing deciders at least one
// sees the other, and the last to publish sees every other: the cap is never exceeded. Two racing
// deciders may both withdraw (conservative; they try again after the next run of failures), and a
// withdrawn ejection is visible to the balancers for the microseconds it existed.
// While workers hold different snapshots, each counts over its own list.
//
// Cost: on_success and a failure below the threshold are one atomic op; a deciding failure is
// O(endpoints in the cluster) loads.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>

#include "config/flotilla_file.h"
#include "gateway/endpoint.h"
#include "gateway/resilience/outcome.h"

namespace flotilla::gateway::resilience {

struct OutlierConfig {
  uint32_t consecutive_failures = 5;  // 0: detection off
  bool count_5xx = true;              // a 5xx answer is a failure (else: connect failures, resets, timeouts)
  std::chrono::nanoseconds base_ejection_time = std::chrono::seconds(30);
  std::chrono::nanoseconds max_ejection_time = std::chrono::seconds(300);
  uint32_t max_ejection_percent = 50;
};
OutlierConfig outlier_config(const config::OutlierDetection& c);

class OutlierDetector {
 public:
  explicit OutlierDetector(const OutlierConfig& config = {}) : config_(config) {}

  bool is_failure(const Outcome& outcome) const;
  // on_success or on_failure by is_failure(outcome). True when this call ejected the endpoint.
  bool report(EndpointState& endpoint, std::span<const Endpoint> cluster, const Outcome& outcome,
              int64_t now_ns) const;

  void on_success(EndpointState& endpoint) const;
  // `cluster`: the endpoint list of the caller's snapshot (normally including `endpoint`). True when
  // this call ejected the endpoint; then the caller counts an ejection in its metrics and logs it.
  bool on_failure(EndpointState& endpoint, std::span<const Endpoint> cluster, int64_t now_ns) const;

  static bool ejected(const EndpointState& endpoint, int64_t now_ns) {
    return endpoint.ejected_until_ns.load(std::memory_order_relaxed) > now_ns;
  }
  // Endpoints of `cluster` ejected at `now_ns` (for a gauge; O(n)).
  static size_t ejected_count(std::span<const Endpoint> cluster, int64_t now_ns);
  // How long ejection number `n` (1-based) lasts.
  std::chrono::nanoseconds ejection_time(uint32_t n) const;

 private:
  bool try_eject(EndpointState& endpoint, std::span<const Endpoint> cluster, int64_t now_ns) const;

  OutlierConfig config_;
};

}  // namespace flotilla::gateway::resilience
