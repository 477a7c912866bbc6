// An endpoint of a cluster (one passing instance of a service) and the state the gateway keeps
// about it. EndpointState is keyed by service and address and shared by consecutive snapshots and
// by every worker, so in-flight counts and outlier-detection state survive snapshot swaps
// (DESIGN §3); the same address under another service is another endpoint.
// Every field a worker touches on the request path is a relaxed atomic: no locks.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace flotilla::gateway {

struct EndpointState {
  explicit EndpointState(std::string addr) : address(std::move(addr)) {}
  const std::string address;  // "IP:PORT" ("[v6]:PORT"); with the service, the key

  // Requests sent to this endpoint and not yet finished, across all workers (least_request).
  std::atomic<int64_t> active{0};
  // Open upstream connections to it, across all workers.
  std::atomic<int64_t> connections{0};

  // Passive outlier detection (gateway/resilience/outlier.h owns the rules).
  std::atomic<uint32_t> consecutive_failures{0};
  std::atomic<uint32_t> times_ejected{0};
  // steady_clock nanoseconds since epoch until which the endpoint is ejected; 0 = not ejected.
  std::atomic<int64_t> ejected_until_ns{0};
  std::atomic<uint64_t> ejections_total{0};

  // Totals for metrics, and for the supervisor's canary analysis and autoscaler (which read
  // differences between two samples).
  std::atomic<uint64_t> requests_total{0};
  std::atomic<uint64_t> failures_total{0};  // gateway failures and 5xx answers (outlier detection's rule)
  // Tries answered with a response head, by time from the try's start to the head (upper bounds
  // in kLatencyBoundsMs; the last bucket is everything above).
  static constexpr std::array<double, 13> kLatencyBoundsMs = {1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
  std::array<std::atomic<uint64_t>, kLatencyBoundsMs.size() + 1> latency{};
  void observe_latency(int64_t ns) {
    const double ms = static_cast<double>(ns) / 1e6;
    size_t i = 0;
    while (i < kLatencyBoundsMs.size() && ms > kLatencyBoundsMs[i]) ++i;
    latency[i].fetch_add(1, std::memory_order_relaxed);
  }
};

struct Endpoint {
  std::string instance_id;  // the registry's service ID
  std::string host;         // an IP literal (v6 without brackets)
  uint16_t port = 0;
  uint32_t weight = 1;      // Weights.Passing, or Weights.Warning for a warning instance
  std::shared_ptr<EndpointState> state;
};

}  // namespace flotilla::gateway
