// flotilla.yaml: the user's one file (DESIGN.md §9). Loaded and validated up front: every error
// names file:line:column and says what would be right; unknown keys are errors. `name` and `agent`
// describe the agent, `gateway` the gateway; each entry of `services` holds the gateway's keys for
// that service (load balancing, circuit breaking, outlier detection) and, when it has a `command`,
// what the supervisor needs to run it (docker-compose's names where compose has the concept).
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "common/duration.h"

namespace flotilla::config {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;  // "FILE:LINE:COL: message"
};

struct AgentSection {
  std::string api = "127.0.0.1:7700";
  bool api_set = false;  // written in the file (a standalone gateway follows it)
  std::string data_dir = ".flotilla";  // resolved against the file's directory when loaded
  std::string store = "sqlite";        // sqlite | etcd://HOST:PORT[,HOST:PORT...]
};

struct RouteMatch {
  std::string path_prefix;  // one of path_prefix / path (neither: every path)
  std::string path;
  std::string host;  // exact, or "*.example.com" for any subdomain; empty: any host
  std::vector<std::string> methods;                          // empty: any method
  std::vector<std::pair<std::string, std::string>> headers;  // name (lower-case) -> exact value
  // Not from the file: the route of a service's own listener (<NAME>_URL); it matches only
  // requests that arrived there, and routes without it match only the `gateway.listen` ones.
  std::string listener_service;
  bool operator==(const RouteMatch&) const = default;
};

struct RetryPolicy {
  int attempts = 2;  // tries in all, including the first
  std::vector<std::string> on = {"connect-failure", "reset", "503"};
  Duration per_try_timeout{0};  // 0: only the route's timeout applies
  bool operator==(const RetryPolicy&) const = default;
};

struct RateLimit {
  double requests_per_second = 0;
  double burst = 0;             // 0: same as requests_per_second
  std::string key = "client_ip";  // client_ip | route | header:NAME
  bool operator==(const RateLimit&) const = default;
};

struct Route {
  std::string name;  // optional; names the route in metrics and the API instead of "INDEX:SERVICE"
  RouteMatch match;
  std::string service;
  bool strip_prefix = false;
  Duration timeout = std::chrono::seconds(15);
  // How long a body or tunnel of this route may stall (no byte either way it flows) before the
  // connection is closed; empty: gateway.timeouts.idle. For server-sent events, long streams.
  std::optional<Duration> idle_timeout;
  std::optional<RetryPolicy> retry;
  std::optional<RateLimit> rate_limit;
  uint64_t max_body_bytes = 0;  // 0: no limit
  // A client that closes its side (FIN) while its request waits for the answer: true abandons the
  // request (499), as nginx and Envoy do; false (`on_client_close: wait`) takes it for a
  // half-close and answers it, as HAProxy does by default.
  bool abort_on_client_close = true;
  int line = 0;                 // where it was written, for messages
  // The same route wherever it is written (`line` aside).
  bool same_as(const Route& o) const {
    Route a = *this;
    a.line = o.line;
    return a == o;
  }
  bool operator==(const Route&) const = default;
};

struct GatewayTimeouts {
  Duration connect = std::chrono::seconds(1);         // to an upstream
  Duration header = std::chrono::seconds(10);         // a request head must arrive in full (408)
  Duration idle = std::chrono::seconds(60);           // a downstream keep-alive connection between requests
  Duration upstream_idle = std::chrono::seconds(4);   // a pooled upstream connection (below backends' own)
  bool operator==(const GatewayTimeouts&) const = default;
};

struct GatewaySection {
  std::vector<std::string> listen = {"127.0.0.1:8080"};
  int workers = 0;  // 0: auto (one per core)
  int max_connections = 10000;  // downstream connections per worker; beyond them new ones are closed
  std::string access_log;       // "" or "off": none; "stdout", "stderr" or a file path (JSON lines)
  GatewayTimeouts timeouts;
  // Load balancers and proxies in front of the gateway whose X-Forwarded-For/-Proto it believes
  // and whose other X-Forwarded-* fields it passes on (anyone else's are dropped): addresses or
  // CIDR blocks, as written ("10.0.0.0/8", "::1"); validated by the reader.
  std::vector<std::string> trusted_proxies;
  std::vector<int> trusted_proxy_lines;  // parallel to trusted_proxies: where each was written
  std::vector<Route> routes;
  // Not from the file: services that get a listener of their own on 127.0.0.1 (automatic port)
  // that sends every request to them — the stable <NAME>_URL their dependents are given.
  std::vector<std::string> service_listeners;
};

// How the gateway treats one service (Envoy's cluster settings). Every key is optional.
struct CircuitBreaker {
  int64_t max_connections = 1024;       // upstream connections to the service, all workers
  int64_t max_pending_requests = 1024;  // requests waiting for an upstream connection
  int64_t max_requests = 1024;          // requests in flight to the service
  bool operator==(const CircuitBreaker&) const = default;
};

struct OutlierDetection {
  int consecutive_failures = 5;  // gateway failures (connect, reset, timeout) or 5xx in a row; 0: off
  Duration base_ejection_time = std::chrono::seconds(30);
  Duration max_ejection_time = std::chrono::seconds(300);
  int max_ejection_percent = 50;
  bool operator==(const OutlierDetection&) const = default;
};

// When an instance counts as healthy (compose's healthcheck, probing the instance's PORT).
struct Healthcheck {
  enum class Kind { tcp, http, none } kind = Kind::tcp;  // default: a TCP connect to PORT succeeds
  std::string http_path;                                  // kind http: GET http://127.0.0.1:PORT<path>, 2xx
  Duration interval = std::chrono::seconds(1);
  Duration timeout = std::chrono::seconds(1);
  int retries = 3;                    // consecutive failures that make a running instance unhealthy
  Duration start_period{0};           // failures during it do not count (slow starters)
  bool operator==(const Healthcheck&) const = default;
};

struct Dependency {
  std::string service;
  std::string condition = "service_started";  // service_started | service_healthy | service_completed_successfully
  int line = 0;
};

struct Autoscale {
  int min = 1;
  int max = 1;
  std::string metric;  // rps_per_instance | p95_ms | cpu_percent | inflight
  double target = 0;
  Duration scale_down_window = std::chrono::seconds(60);  // scale down to the highest recommendation in it
  bool operator==(const Autoscale&) const = default;
};

// Flagger-style automatic canary analysis: every `interval` the canary's error ratio and p95 are
// compared with the stable instances'; `iterations` passing checks in a row promote it, one
// failing check rolls it back.
struct CanaryAnalysis {
  Duration interval = std::chrono::seconds(10);
  int iterations = 5;
  double max_error_ratio_increase = 0.01;  // canary error ratio may exceed stable's by at most this
  double max_p95_ratio = 1.5;              // canary p95 at most this times stable's (+ 5 ms slack)
  int min_requests = 20;                   // fewer canary requests in an interval: no verdict yet
  bool operator==(const CanaryAnalysis&) const = default;
};

struct DeploySettings {
  Duration healthy_timeout = std::chrono::seconds(60);  // a new instance must be healthy within it
  std::optional<CanaryAnalysis> canary_analysis;
  bool operator==(const DeploySettings&) const = default;
};

struct ServiceSection {
  std::string name;
  std::string load_balancer = "round_robin";  // round_robin | least_request | random | ring_hash | maglev
  std::string hash_on;                        // header:NAME | cookie:NAME | client_ip | path
  CircuitBreaker circuit_breaker;
  OutlierDetection outlier_detection;
  int line = 0;

  // --- supervised services (those with a command) ---
  std::vector<std::string> command;  // exec'd directly; a string command becomes {"/bin/sh", "-c", it}
  std::string working_dir;           // absolute (resolved against the file's directory)
  // environment after env_file (file values first, `environment` wins), in key order.
  std::vector<std::pair<std::string, std::string>> environment;
  enum class PortMode { automatic, fixed, none } port_mode = PortMode::automatic;
  int port = 0;                      // PortMode::fixed
  int replicas = 1;
  Healthcheck healthcheck;
  std::string restart = "always";    // always | on-failure | no
  std::string stop_signal = "SIGTERM";
  Duration stop_grace_period = std::chrono::seconds(10);
  std::vector<Dependency> depends_on;
  uint64_t memory_bytes = 0;         // 0: no limit (needs cgroup v2)
  double cpus = 0;                   // 0: no limit (needs cgroup v2)
  std::optional<Autoscale> autoscale;
  DeploySettings deploy;

  bool supervised() const { return !command.empty(); }
};

struct File {
  std::string path;  // as given
  std::string dir;   // its directory (relative paths in the file are relative to it)
  std::string name;  // the application's name
  AgentSection agent;
  std::optional<GatewaySection> gateway;
  std::vector<ServiceSection> services;  // in file order
  // The section for a service name; nullptr when the file has none (defaults apply).
  const ServiceSection* service(const std::string& name) const;
  // Supervised services in start-up order: every service after what it depends on.
  std::vector<const ServiceSection*> start_order() const;
};

// Who reads the file: `flotilla up`/`agent` bind agent.api next to the gateway's listeners;
// the standalone `flotilla gateway` reads only the gateway section and binds no agent.api.
enum class Use { agent, gateway_alone };

// Throws ConfigError.
File load_file(const std::string& path, Use use = Use::agent);
// What is valid but probably a mistake, one message each ("FILE:LINE: …"): a route to a service
// the file does not run, when it runs others (a misspelt name answers 503 until something
// registers that name through the API), with the closest name it does run; a per-try timeout
// that no try can reach (at or above its route's timeout); a trusted proxy block that trusts
// everyone (/0) or has bits set past its prefix.
std::vector<std::string> warnings(const File& file);
File parse(const std::string& text, const std::string& path, Use use = Use::agent);

}  // namespace flotilla::config
