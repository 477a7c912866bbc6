// What the gateway's workers route by: an immutable snapshot of routes and clusters (DESIGN §3).
// Built on the control thread whenever routes or a service's endpoints change, published through
// SnapshotSource, and picked up by each worker between requests. A snapshot is never changed
// after publication, so workers read it without locks; the state that must outlive snapshots
// (per-endpoint counters, ejections, breaker counts, rate-limit buckets) is held by shared_ptr
// and carried from one snapshot to the next.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/flotilla_file.h"
#include "gateway/endpoint.h"
#include "gateway/lb/load_balancer.h"
#include "gateway/resilience/retry.h"
#include "gateway/route_table.h"
#include "gateway/trusted_proxies.h"

namespace flotilla::metrics {
class Counter;
class Gauge;
class Histogram;
}  // namespace flotilla::metrics

namespace flotilla::gateway {

namespace resilience {
class RateLimiter;
}

// hash_on: where the hash policies' key comes from.
struct HashOn {
  enum class Source : uint8_t { none, header, cookie, client_ip, path } source = Source::none;
  std::string name;  // header name (lower case) or cookie name
};
HashOn parse_hash_on(const std::string& text);

// Per service, shared by every snapshot and worker: the limits' live counts and the metrics.
struct ClusterShared {
  explicit ClusterShared(std::string service_name) : name(std::move(service_name)) {}
  const std::string name;
  std::atomic<int64_t> connections{0};  // upstream connections, all workers (circuit breaker)
  std::atomic<int64_t> idle{0};         // of which idle in a worker's pool
  // circuit_breaker.max_connections as last published, for workers returning connections to
  // their pools (over it they close them instead).
  std::atomic<int64_t> connection_limit{1024};
  std::atomic<int64_t> pending{0};      // requests waiting for an upstream connection
  std::atomic<int64_t> active{0};       // requests in flight to the service
  std::atomic<int64_t> retries_active{0};  // retries in flight (retry budget)
  struct Metrics {
    metrics::Gauge* in_flight = nullptr;
    metrics::Gauge* connections = nullptr;
    metrics::Counter* retries = nullptr;
    metrics::Counter* ejections = nullptr;
    metrics::Counter* connect_failures = nullptr;
    metrics::Counter* stale_connections = nullptr;
    metrics::Counter* overloaded_connections = nullptr;
    metrics::Counter* overloaded_pending = nullptr;
    metrics::Counter* overloaded_requests = nullptr;
    metrics::Counter* retry_budget_exhausted = nullptr;
  } metrics;
};

struct Cluster {
  std::string name;
  std::vector<Endpoint> endpoints;  // passing (and warning) instances, not in maintenance
  uint64_t version = 0;             // new whenever endpoints change: workers rebuild their balancer
  lb::Policy policy = lb::Policy::round_robin;
  // The policy's ring or table for these endpoints (null for policies without one): built with
  // the cluster, off the workers, and shared by their balancers.
  std::shared_ptr<const lb::Table> lb_table;
  HashOn hash_on;
  config::CircuitBreaker limits;
  config::OutlierDetection outlier;
  std::shared_ptr<ClusterShared> shared;
};

// A route's compiled extras, by route index.
struct RouteInfo {
  std::string service;
  std::string label;  // metrics label: the route's index and service, "0:web"
  std::shared_ptr<resilience::RateLimiter> limiter;  // null: no rate limit
  enum class LimitKey : uint8_t { client_ip, route, header } limit_key = LimitKey::client_ip;
  std::string limit_header;  // lower case
  resilience::RetryOn retry_on;  // parsed from the route's retry.on (or the default)
  struct Metrics {
    metrics::Counter* by_class[6] = {};  // 1xx..5xx by first digit; [0] unused
    metrics::Histogram* duration = nullptr;
    metrics::Counter* rate_limited = nullptr;
  } metrics;
};

struct Snapshot {
  uint64_t version = 0;
  std::shared_ptr<const RouteTable> routes;
  std::vector<RouteInfo> route_info;  // parallel to routes
  TrustedProxies trusted_proxies;     // gateway.trusted_proxies
  std::unordered_map<std::string, std::shared_ptr<const Cluster>> clusters;  // by service name
  const Cluster* cluster(const std::string& name) const {
    auto it = clusters.find(name);
    return it == clusters.end() ? nullptr : it->second.get();
  }
};

// Publication point between the control thread and the workers. A worker checks version() (one
// relaxed load) before each request and takes the new snapshot only when it moved.
class SnapshotSource {
 public:
  void publish(std::shared_ptr<const Snapshot> snapshot) {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = std::move(snapshot);
    version_.store(current_->version, std::memory_order_release);
  }
  uint64_t version() const { return version_.load(std::memory_order_acquire); }
  std::shared_ptr<const Snapshot> get() const {
    std::lock_guard<std::mutex> lock(mu_);
    return current_;
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Snapshot> current_;
  std::atomic<uint64_t> version_{0};
};

}  // namespace flotilla::gateway
