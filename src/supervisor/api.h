// The supervisor's part of the agent API, under /v1/flotilla/ (flotilla's own, not Consul's):
//   GET  status                      services: version, desired/ready/total, restarts, req/s, …
//   GET  instances[?service=NAME]    instances: id, pid, port, state, health, uptime, CPU, memory
//   GET  events[?after=SEQ&wait=30s&limit=N]        blocks until an event after SEQ exists
//   GET  logs/NAME[?since=…&tail=N&after=CURSOR&wait=30s]   merged instance logs (follow: after+wait)
//   POST services/NAME/scale     {"replicas": N}
//   POST services/NAME/deploy    {"set": ["environment.K=V", …], "canary": PERCENT}
//   POST services/NAME/promote | services/NAME/rollback
//   POST apply                   {"file": "/abs/path/flotilla.yaml"}  (flotilla up, again; routes too)
//   POST down                    stops every service, then the agent
// Every answer is JSON; errors are {"error", "field"} as elsewhere in the API.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "http/message.h"

namespace flotilla::config {
struct File;
}

namespace flotilla::supervisor {

class Supervisor;

struct ApiHooks {
  std::string token;            // empty: open (loopback)
  bool protect_reads = false;
  // `down`: called once every instance has stopped; the agent exits after answering.
  std::function<void()> on_down;
  // `apply`: before the services, what they will need of the rest of the agent (the gateway's
  // listeners behind new <NAME>_URL variables); may throw ApiError.
  std::function<void(const config::File&)> before_apply;
  // `apply`: after the services, the rest of the agent takes the file (the gateway's routes);
  // what it answers goes into the answer as "Gateway" (null: left out).
  std::function<nlohmann::json(const config::File&)> on_apply;
};

// `flotilla up` again with `file`: hooks.before_apply, the services change, then hooks.on_apply
// (the gateway); instances start after that. Returns
// POST apply's answer; throws ApiError. For the API and for a reload on SIGHUP.
nlohmann::json apply_file(Supervisor& supervisor, const ApiHooks& hooks, const config::File& file);

// Answers the request when it is one of the supervisor's; false otherwise (someone else's path).
bool serve_api(Supervisor& supervisor, const ApiHooks& hooks, const std::shared_ptr<http::Exchange>& exchange);

}  // namespace flotilla::supervisor
