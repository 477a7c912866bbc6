// Retries (a route's `retry:`): which outcomes are worth another attempt, whether the request
// may be sent again at all, how long to wait first, and the service-wide budget that keeps
// retries from multiplying load on a service that is already failing (a retry storm).
//
// The proxy's sequence after a failed attempt number `n` (1-based) of `attempts`:
//   n < attempts && should_retry(on, method, outcome)   -- the outcome and the method allow it
//   && (slot = budget.try_acquire(active requests))     -- the service's retry budget has room
//   -> wait backoff_delay(backoff, n - 1, rng()), then try again (another endpoint when one is
//      usable), holding `slot` until that attempt ends.
// Everything here is O(1) and lock-free.
#pragma once

#include <atomic>
#include <bitset>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/resilience/circuit_breaker.h"  // Slot
#include "gateway/resilience/outcome.h"

namespace flotilla::gateway::resilience {

// The `on:` list compiled. Conditions expand as Envoy's do: "5xx" and "gateway-error" also cover
// resets, timeouts and connect failures (each ends in a 5xx from the gateway), "reset" also covers
// timeouts and connect failures, "connect-failure" covers only those. Exact codes ("503") and
// "retriable-4xx" (409) match only answers from the upstream, never the gateway's own 503/504.
struct RetryOn {
  bool connect_failure = false;
  bool reset = false;          // reset or timeout after connecting
  std::bitset<600> status;     // answers worth retrying, by code
};

// Throws std::invalid_argument for an entry that is not connect-failure, reset, 5xx,
// gateway-error, retriable-4xx or a status 400-599 (the config loader already refuses
// those, naming file:line).
RetryOn parse_retry_on(const std::vector<std::string>& on);

// Whether `outcome` is one the route's `on:` list retries.
bool retryable(const RetryOn& on, const Outcome& outcome);

// RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE (case-sensitive, as methods are).
bool is_idempotent(std::string_view method);
// Whether the request may be sent again after `outcome`: always for an idempotent method; for any
// other method (POST, PATCH, ...) only when no byte of it was handed to the upstream (a connect
// failure, or a reset/timeout with request_sent false), since the upstream may have acted on it.
bool may_resend(std::string_view method, const Outcome& outcome);
// retryable(on, outcome) && may_resend(method, outcome).
bool should_retry(const RetryOn& on, std::string_view method, const Outcome& outcome);

// Full-jitter exponential backoff: a uniform wait in [0, min(cap, base * 2^retry)], where retry is
// 0 before the first retry. `random` is a uniform 64-bit value from the caller's (worker's) own
// generator: no shared state.
struct Backoff {
  std::chrono::nanoseconds base = std::chrono::milliseconds(25);
  std::chrono::nanoseconds cap = std::chrono::milliseconds(250);
};
std::chrono::nanoseconds backoff_delay(const Backoff& backoff, int retry, uint64_t random);

// Envoy's retry_budget: retries in flight to a service may not exceed
// max(min_retry_concurrency, budget_percent % of its active requests). A view over the service's
// shared count of active retries (ClusterShared::retries_active), like CircuitBreaker.
struct RetryBudgetConfig {
  double budget_percent = 20.0;
  int64_t min_retry_concurrency = 3;
};

class RetryBudget {
 public:
  RetryBudget(const RetryBudgetConfig& config, std::atomic<int64_t>& active_retries)
      : config_(config), active_retries_(&active_retries) {}
  // The cap for `active_requests` (requests in flight to the service, plus those waiting for a
  // connection, as Envoy counts them).
  int64_t max_retries(int64_t active_requests) const;
  // An empty Slot when the budget is spent: answer with the failed attempt's result instead.
  Slot try_acquire(int64_t active_requests) const {
    return Slot::try_acquire(*active_retries_, max_retries(active_requests));
  }

 private:
  RetryBudgetConfig config_;
  std::atomic<int64_t>* active_retries_;
};

}  // namespace flotilla::gateway::resilience
