// Envoy-style circuit breaking for one service: caps on upstream connections, requests waiting
// for a connection, and requests in flight, counted across all workers. Over a cap the proxy
// answers 503 at once with `x-flotilla-overloaded: <overload_reason>` instead of queueing
// without bound behind a slow service.
//
// The counts are plain shared atomics owned by the service's long-lived state (ClusterShared in
// gateway/snapshot.h), so they survive snapshot swaps and a limit change applies to the live
// counts. A CircuitBreaker is a cheap view (the limits plus pointers to the three counts); build
// one wherever convenient.
//
// try_acquire is a CAS loop: the count never exceeds the limit even when workers race (unlike
// fetch_add-then-undo, which can also refuse spuriously). O(1), lock-free.
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>
#include <utility>

#include "config/flotilla_file.h"

namespace flotilla::gateway::resilience {

inline constexpr std::string_view kOverloadedHeader = "x-flotilla-overloaded";

// Adds one to `count` if that keeps it <= `limit`; false (and no change) otherwise. Undo with
// count.fetch_sub(1). For code that tracks the unit itself (a pooled connection's `counted` flag);
// Slot below does the same with RAII.
bool try_increment(std::atomic<int64_t>& count, int64_t limit);

// One unit of a limited shared count, released when destroyed (or by release()). Move-only; an
// empty Slot (operator bool false) means the acquisition was refused. The count must outlive it.
class Slot {
 public:
  Slot() = default;
  // Takes one unit of `count` if that keeps it <= `limit`; an empty Slot otherwise.
  static Slot try_acquire(std::atomic<int64_t>& count, int64_t limit);
  ~Slot() { release(); }
  Slot(Slot&& other) noexcept : count_(std::exchange(other.count_, nullptr)) {}
  Slot& operator=(Slot&& other) noexcept {
    if (this != &other) {
      release();
      count_ = std::exchange(other.count_, nullptr);
    }
    return *this;
  }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;

  explicit operator bool() const { return count_ != nullptr; }
  void release() {
    if (count_) std::exchange(count_, nullptr)->fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  explicit Slot(std::atomic<int64_t>* count) : count_(count) {}
  std::atomic<int64_t>* count_ = nullptr;
};

enum class Limit : uint8_t { connections, pending_requests, requests };

// The x-flotilla-overloaded value naming the limit: "max_connections", "max_pending_requests",
// "max_requests".
std::string_view overload_reason(Limit limit);

class CircuitBreaker {
 public:
  // Defaults (config::CircuitBreaker): 1024 each, as Envoy's.
  CircuitBreaker(const config::CircuitBreaker& limits, std::atomic<int64_t>& connections,
                 std::atomic<int64_t>& pending_requests, std::atomic<int64_t>& requests)
      : limits_(limits), counts_{&connections, &pending_requests, &requests} {}

  // Hold the Slot for as long as the thing counted lasts: the upstream connection's life
  // (connections), the wait for a connection (pending_requests), the request until its response
  // is finished or it is abandoned (requests).
  Slot try_acquire(Limit limit) const { return Slot::try_acquire(count(limit), max(limit)); }
  int64_t max(Limit limit) const;
  std::atomic<int64_t>& count(Limit limit) const { return *counts_[static_cast<int>(limit)]; }

 private:
  config::CircuitBreaker limits_;
  std::atomic<int64_t>* counts_[3];
};

}  // namespace flotilla::gateway::resilience
