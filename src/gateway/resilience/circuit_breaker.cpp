#include "gateway/resilience/circuit_breaker.h"

namespace flotilla::gateway::resilience {

bool try_increment(std::atomic<int64_t>& count, int64_t limit) {
  int64_t n = count.load(std::memory_order_relaxed);
  do {
    if (n >= limit) return false;
  } while (!count.compare_exchange_weak(n, n + 1, std::memory_order_relaxed));
  return true;
}

Slot Slot::try_acquire(std::atomic<int64_t>& count, int64_t limit) {
  return try_increment(count, limit) ? Slot(&count) : Slot();
}

std::string_view overload_reason(Limit limit) {
  switch (limit) {
    case Limit::connections: return "max_connections";
    case Limit::pending_requests: return "max_pending_requests";
    case Limit::requests: return "max_requests";
  }
  return "max_requests";
}

int64_t CircuitBreaker::max(Limit limit) const {
  switch (limit) {
    case Limit::connections: return limits_.max_connections;
    case Limit::pending_requests: return limits_.max_pending_requests;
    case Limit::requests: return limits_.max_requests;
  }
  return 0;
}

}  // namespace flotilla::gateway::resilience
