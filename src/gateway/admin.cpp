#include "gateway/admin.h"

#include <nlohmann/json.hpp>

#include "gateway/gateway.h"
#include "http/token.h"

namespace flotilla::gateway {

bool serve_admin(Gateway& gateway, const std::shared_ptr<http::Exchange>& ex, const std::string& read_token) {
  const auto& req = ex->request();
  if (req.path != "/v1/flotilla/gateway") return false;
  if (!http::token_allows(req, read_token, true, false)) {
    ex->respond(http::Response::error(403, "Permission denied: this read needs the agent's token", "token"));
    return true;
  }
  if (req.method != "GET" && req.method != "HEAD") {
    auto r = http::Response::error(405, "use GET");
    r.headers.emplace_back("Allow", "GET, HEAD");
    ex->respond(std::move(r));
    return true;
  }
  ex->respond(http::Response::json(200, gateway.status().dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"));
  return true;
}

}  // namespace flotilla::gateway
