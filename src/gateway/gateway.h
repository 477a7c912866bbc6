// The gateway as the rest of the program sees it: built from flotilla.yaml's `gateway:` and
// `services:` sections, fed with each service's endpoints by a registry follower (in-process or
// remote), and run by N worker threads. Everything here is called from the control thread; the
// workers only read published snapshots. Asio stays out of this header.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "config/flotilla_file.h"
#include "gateway/endpoint.h"

namespace flotilla::metrics {
class Registry;
}

namespace flotilla::gateway {

// What the gateway has seen of one endpoint (cumulative; callers take differences), for the
// supervisor's drain, canary analysis and autoscaler.
struct EndpointLoad {
  static constexpr size_t kBuckets = EndpointState::kLatencyBoundsMs.size() + 1;
  bool known = false;   // false: no snapshot holds this address
  int64_t active = 0;   // requests in flight to it now, all workers
  uint64_t requests = 0;
  uint64_t failures = 0;  // gateway failures and 5xx answers
  uint64_t ejections = 0;  // times outlier detection ejected it
  std::array<uint64_t, kBuckets> latency{};  // by EndpointState::kLatencyBoundsMs
  // The q-quantile (0..1) of a latency histogram (e.g. a difference of two samples), in ms.
  static double quantile_ms(const std::array<uint64_t, kBuckets>& counts, double q);
};

struct EndpointSpec {
  std::string instance_id;
  std::string host;  // IP literal
  uint16_t port = 0;
  uint32_t weight = 1;
  // The instance has health checks of its own (not only maintenance or node checks): its coming
  // back to the endpoints says its checks pass again, which ends an outlier ejection it left with
  // (Envoy un-ejects a host on a successful active health check).
  bool checked = false;
  bool operator==(const EndpointSpec&) const = default;
};

// What Gateway::reconfigure changed.
struct GatewayChange {
  size_t routes = 0;           // routes in the new file
  bool routes_changed = false;  // added, removed, reordered or edited
  std::vector<std::string> services_added;    // routed to now and not before
  std::vector<std::string> services_removed;  // no longer routed to
  std::vector<std::string> services_changed;  // load_balancer, hash_on, circuit_breaker or outlier_detection
  bool trusted_proxies_changed = false;  // gateway.trusted_proxies
  // Keys that changed but take effect only when the process restarts ("gateway.listen", …); the
  // running gateway keeps their old values.
  std::vector<std::string> restart_needed;
  bool changed() const {
    return routes_changed || !services_added.empty() || !services_removed.empty() || !services_changed.empty() ||
           trusted_proxies_changed;
  }
  nlohmann::json to_json() const;
  // One line for logs: "routes 3 -> 4 (changed); now routing to: api; restart needed for: gateway.listen".
  std::string summary() const;
};

class Gateway {
 public:
  Gateway(config::File file, metrics::Registry& metrics);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Binds every listen address for every worker (SO_REUSEPORT); throws std::runtime_error with a
  // message naming the address. Nothing is accepted until start().
  void listen();
  void start();
  // Stops accepting, lets requests in flight finish (up to `grace`), then stops the workers.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(5000));

  // The services the routes send to: the ones a follower must watch.
  std::set<std::string> services() const;
  // The services a file's routes send to (its own listeners' services included).
  static std::set<std::string> services_of(const config::File& file);
  // Applies a new version of the file (control thread): routes and the services' gateway keys
  // (and gateway.trusted_proxies) change at once for new requests, without closing a connection; requests in flight finish
  // on the routes they started with. Rate-limit buckets of unchanged routes and every
  // endpoint's state (in-flight counts, ejections) carry over. Listen addresses, workers,
  // max_connections, access_log and timeouts keep their running values (reported in
  // restart_needed). Endpoints of a newly routed service should be set first (set_endpoints
  // keeps those of services not routed yet), or its requests get 503 until they are.
  GatewayChange reconfigure(config::File file);
  // A service's usable endpoints changed (control thread). Publishes a new snapshot when they
  // differ from what the workers have. For a service no route sends to (yet), they are kept
  // for when one does.
  void set_endpoints(const std::string& service, std::vector<EndpointSpec> endpoints);
  // Listening ports, in the order of `gateway.listen` (after listen()).
  std::vector<uint16_t> ports() const;
  // The port of a service's own listener (GatewaySection::service_listeners); 0: none.
  uint16_t service_port(const std::string& service) const;
  // Opens a service's own listener on 127.0.0.1 while the gateway runs (control thread), for a
  // service that `flotilla up` again made a dependency; its port when it has one already. Its
  // route comes with the next reconfigure() that lists it in service_listeners (until then a
  // request there gets 404). Throws std::runtime_error when the socket cannot be opened.
  uint16_t add_service_listener(const std::string& service);
  // Live counters of a service's endpoint at "IP:PORT" registered as `instance_id` (control
  // thread). Known while the gateway keeps its state: routed now, in flight, or departed a
  // short while ago (a draining instance's requests still count). Another instance's state at
  // that address is not this one's.
  EndpointLoad endpoint_load(const std::string& service, const std::string& address,
                             const std::string& instance_id) const;
  int workers() const;
  size_t connections() const;
  // Clusters, endpoints and their live state (in-flight, ejections), for the agent API.
  nlohmann::json status() const;
  // Opens the access log file again (SIGUSR1, after logrotate moved it). Any thread.
  void reopen_logs();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// From a registry's view of one service's instances: the Consul rule (an instance is as healthy as
// its worst check, node checks included), passing ones at Weights.Passing, warning ones at
// Weights.Warning (left out at 0), critical and maintenance ones left out.
struct InstanceHealth {
  std::string id;
  std::string address;  // the instance's Address (empty: the node's)
  uint16_t port = 0;
  std::string status;   // the worst of its checks and the node's: passing | warning | critical
  int weight_passing = 1;
  int weight_warning = 1;
  bool checked = false;  // it has checks of its own (EndpointSpec::checked)
};
// Consul's aggregation step: the worse of an instance's status so far and one more check's
// (passing < warning < critical; anything unknown counts as critical).
const char* worse_status(const char* so_far, const std::string& check_status);
std::vector<EndpointSpec> usable_endpoints(const std::vector<InstanceHealth>& instances,
                                           const std::string& node_address);

}  // namespace flotilla::gateway
