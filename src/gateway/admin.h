// The gateway's admin endpoints, served on the agent's API port (or on --admin when the gateway
// runs alone): GET /v1/flotilla/gateway (clusters, endpoints, live counts, ejections).
#pragma once

#include <memory>
#include <string>

#include "http/message.h"

namespace flotilla::gateway {

class Gateway;

// Answers the request and returns true when it is one of the gateway's admin paths.
// read_token: when not empty, the request must carry it (X-Consul-Token, or ?token=).
bool serve_admin(Gateway& gateway, const std::shared_ptr<http::Exchange>& exchange, const std::string& read_token = {});

}  // namespace flotilla::gateway
