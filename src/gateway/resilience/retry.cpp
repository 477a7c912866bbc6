#include "gateway/resilience/retry.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace flotilla::gateway::resilience {

RetryOn parse_retry_on(const std::vector<std::string>& on) {
  RetryOn r;
  for (const auto& entry : on) {
    if (entry == "connect-failure") {
      r.connect_failure = true;
    } else if (entry == "reset") {
      r.connect_failure = r.reset = true;
    } else if (entry == "5xx") {
      r.connect_failure = r.reset = true;
      for (int s = 500; s < 600; ++s) r.status.set(static_cast<size_t>(s));
    } else if (entry == "gateway-error") {
      r.connect_failure = r.reset = true;
      r.status.set(502).set(503).set(504);
    } else if (entry == "retriable-4xx") {
      r.status.set(409);
    } else if (entry.size() == 3 && entry[0] >= '4' && entry[0] <= '5' &&
               std::all_of(entry.begin(), entry.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      r.status.set(static_cast<size_t>(std::stoi(entry)));
    } else {
      throw std::invalid_argument("retry.on: unknown condition \"" + entry +
                                  "\" (connect-failure, reset, 5xx, gateway-error, retriable-4xx, or a 4xx or 5xx "
                                  "status such as \"503\")");
    }
  }
  return r;
}

bool retryable(const RetryOn& on, const Outcome& outcome) {
  switch (outcome.kind) {
    case Outcome::Kind::connect_failure: return on.connect_failure;
    case Outcome::Kind::reset:
    case Outcome::Kind::timeout: return on.reset;
    case Outcome::Kind::response:
      return outcome.status >= 0 && outcome.status < static_cast<int>(on.status.size()) &&
             on.status.test(static_cast<size_t>(outcome.status));
  }
  return false;
}

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "TRACE" || method == "PUT" ||
         method == "DELETE";
}

bool may_resend(std::string_view method, const Outcome& outcome) {
  if (outcome.kind == Outcome::Kind::connect_failure) return true;
  return is_idempotent(method) || !outcome.request_sent;
}

bool should_retry(const RetryOn& on, std::string_view method, const Outcome& outcome) {
  return retryable(on, outcome) && may_resend(method, outcome);
}

std::chrono::nanoseconds backoff_delay(const Backoff& backoff, int retry, uint64_t random) {
  int64_t base = std::max<int64_t>(backoff.base.count(), 0);
  int64_t cap = std::max<int64_t>(backoff.cap.count(), 0);
  int64_t ceiling = base;
  // Doubling stops at the cap, so no shift can overflow whatever `retry` is.
  for (int i = 0; i < retry && ceiling > 0 && ceiling < cap; ++i) ceiling *= 2;
  ceiling = std::min(ceiling, cap);
  return std::chrono::nanoseconds(static_cast<int64_t>(random % (static_cast<uint64_t>(ceiling) + 1)));
}

int64_t RetryBudget::max_retries(int64_t active_requests) const {
  auto share = static_cast<int64_t>(std::floor(config_.budget_percent / 100.0 * static_cast<double>(active_requests)));
  return std::max(config_.min_retry_concurrency, share);
}

}  // namespace flotilla::gateway::resilience
