// Internal to the API: the context each endpoint gets, the route table pieces, and the helpers
// shared by endpoints (blocking reads, write answers).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "http/message.h"
#include "registry/api/api.h"
#include "registry/registry.h"
#include "registry/watch.h"

namespace flotilla::registry::api {

struct Context {
  Registry& registry;
  health::Runner& health;
  metrics::Registry& metrics;
  const ApiOptions& options;
};

using ExchangePtr = std::shared_ptr<http::Exchange>;
// `rest` is what follows a prefix route's path ("web" for /v1/health/service/web).
using Endpoint = void (*)(Context& ctx, const ExchangePtr& ex, const std::string& rest);

struct Route {
  const char* method;
  const char* path;
  bool prefix;  // path ends with '/', and rest is the remainder
  Endpoint endpoint;
  // Writes need the token. Every non-GET route is a write; a few GET routes are too (python-consul
  // 0.7 and Consul 0.x clients send TTL updates and deregistrations as GET).
  bool get_is_write = false;
};

void add_agent_routes(std::vector<Route>& routes);
void add_catalog_routes(std::vector<Route>& routes);  // catalog and health
void add_kv_routes(std::vector<Route>& routes);
void add_session_routes(std::vector<Route>& routes);

// Answers a read now, or parks it when the request carries ?index= and the result has not moved
// past it. topics: what the result depends on (see State). compute must be callable later.
void serve_read(Context& ctx, const ExchangePtr& ex, std::vector<std::string> topics,
                std::function<QueryResult()> compute);
// The answer to a write: 500 with the store's error, else `body`.
void answer_write(const ExchangePtr& ex, const WriteResult& r, std::string body);
QueryResult json_result(const nlohmann::json& j, uint64_t index);

}  // namespace flotilla::registry::api
