// flotilla.yaml: the user's one file (DESIGN.md §9). Loaded and validated up front: every error
// names file:line:column and says what would be right; unknown keys are errors. The sections the
// running code uses today are `name`, `agent`, `gateway` and the gateway's keys of `services`
// (load balancing, circuit breaking, outlier detection); running processes belongs to the supervisor.
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
  std::string data_dir = ".flotilla";  // resolved against the file's directory when loaded
  std::string store = "sqlite";        // sqlite | etcd://HOST:PORT[,HOST:PORT...]
};

struct RouteMatch {
  std::string path_prefix;  // one of path_prefix / path (neither: every path)
  std::string path;
  std::string host;  // exact, or "*.example.com" for any subdomain; empty: any host
  std::vector<std::string> methods;                          // empty: any method
  std::vector<std::pair<std::string, std::string>> headers;  // name (lower-case) -> exact value
};

struct RetryPolicy {
  int attempts = 2;  // tries in all, including the first
  std::vector<std::string> on = {"connect-failure", "reset", "503"};
  Duration per_try_timeout{0};  // 0: only the route's timeout applies
};

struct RateLimit {
  double requests_per_second = 0;
  double burst = 0;             // 0: same as requests_per_second
  std::string key = "client_ip";  // client_ip | route | header:NAME
};

struct Route {
  RouteMatch match;
  std::string service;
  bool strip_prefix = false;
  Duration timeout = std::chrono::seconds(15);
  std::optional<RetryPolicy> retry;
  std::optional<RateLimit> rate_limit;
  uint64_t max_body_bytes = 0;  // 0: no limit
  int line = 0;                 // where it was written, for messages
};

struct GatewayTimeouts {
  Duration connect = std::chrono::seconds(1);         // to an upstream
  Duration header = std::chrono::seconds(10);         // a request head must arrive in full (408)
  Duration idle = std::chrono::seconds(60);           // a downstream keep-alive connection between requests
  Duration upstream_idle = std::chrono::seconds(4);   // a pooled upstream connection (below backends' own)
};

struct GatewaySection {
  std::vector<std::string> listen = {"127.0.0.1:8080"};
  int workers = 0;  // 0: auto (one per core)
  int max_connections = 10000;  // downstream connections per worker; beyond them new ones are closed
  std::string access_log;       // "" or "off": none; "stdout", "stderr" or a file path (JSON lines)
  GatewayTimeouts timeouts;
  std::vector<Route> routes;
};

// How the gateway treats one service (Envoy's cluster settings). Every key is optional.
struct CircuitBreaker {
  int64_t max_connections = 1024;       // upstream connections to the service, all workers
  int64_t max_pending_requests = 1024;  // requests waiting for an upstream connection
  int64_t max_requests = 1024;          // requests in flight to the service
};

struct OutlierDetection {
  int consecutive_failures = 5;  // gateway failures (connect, reset, timeout) or 5xx in a row; 0: off
  Duration base_ejection_time = std::chrono::seconds(30);
  Duration max_ejection_time = std::chrono::seconds(300);
  int max_ejection_percent = 50;
};

struct ServiceSection {
  std::string name;
  std::string load_balancer = "round_robin";  // round_robin | least_request | random | ring_hash | maglev
  std::string hash_on;                        // header:NAME | cookie:NAME | client_ip | path
  CircuitBreaker circuit_breaker;
  OutlierDetection outlier_detection;
  int line = 0;
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
};

// Throws ConfigError.
File load_file(const std::string& path);
File parse(const std::string& text, const std::string& path);

}  // namespace flotilla::config
