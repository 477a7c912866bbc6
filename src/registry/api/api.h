// The agent's HTTP API: Consul's /v1/... endpoints (agent, catalog, health, kv, session, status)
// plus /metrics, answered from the registry's view. The one entry point the server calls.
#pragma once

#include <memory>
#include <string>

#include "http/message.h"

namespace flotilla {
namespace metrics {
class Registry;
}
namespace health {
class Runner;
}
}  // namespace flotilla

namespace flotilla::registry {
class Registry;
}

namespace flotilla::registry::api {

struct ApiOptions {
  std::string token;           // empty: everything open (loopback only)
  bool protect_reads = false;  // with a token: reads need it too
  std::string version;
  std::string store;           // what backs the registry, for /v1/agent/self
  std::string api_address;     // where this API listens
};

class Api {
 public:
  Api(Registry& registry, health::Runner& health, metrics::Registry& metrics, ApiOptions options);
  ~Api();
  void handle(const std::shared_ptr<http::Exchange>& exchange);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::registry::api
