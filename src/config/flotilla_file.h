// flotilla.yaml: the user's one file (DESIGN.md §9). Loaded and validated up front: every error
// names file:line:column and says what would be right; unknown keys are errors. The sections the
// running code uses today are `name`, `agent` and `gateway`; `services` belongs to the supervisor.
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

struct GatewaySection {
  std::vector<std::string> listen = {"127.0.0.1:8080"};
  int workers = 0;  // 0: auto (one per core)
  std::vector<Route> routes;
};

struct File {
  std::string path;  // as given
  std::string dir;   // its directory (relative paths in the file are relative to it)
  std::string name;  // the application's name
  AgentSection agent;
  std::optional<GatewaySection> gateway;
};

// Throws ConfigError.
File load_file(const std::string& path);
File parse(const std::string& text, const std::string& path);

}  // namespace flotilla::config
