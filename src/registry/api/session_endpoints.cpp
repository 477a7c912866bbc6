// /v1/session/...: sessions for locks and leader election, with TTLs backed by store leases.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "registry/api/decode.h"
#include "registry/api/encode.h"
#include "registry/api/endpoints.h"

namespace flotilla::registry::api {

namespace {

void require_session_id(const std::string& id) {
  if (id.empty()) throw bad_request("missing session ID in the path", "session");
}

void create(Context& ctx, const ExchangePtr& ex, const std::string&) {
  auto s = decode_session_create(ex->request().body);
  if (!s.node.empty() && s.node != ctx.registry.state().node().name)
    throw bad_request("unknown node \"" + s.node + "\"; this agent is \"" + ctx.registry.state().node().name + "\"",
                      "Node");
  ctx.registry.session_create(std::move(s), [ex](const WriteResult& r) {
    answer_write(ex, r, dump(json{{"ID", r.id}}));
  });
}

void destroy(Context& ctx, const ExchangePtr& ex, const std::string& id) {
  require_session_id(id);
  ctx.registry.session_destroy(id, [ex](const WriteResult& r) { answer_write(ex, r, "true"); });
}

void renew(Context& ctx, const ExchangePtr& ex, const std::string& id) {
  require_session_id(id);
  if (!ctx.registry.session_renew(id)) {
    ex->respond(http::Response::error(404, "session \"" + id + "\" not found (it expired or was destroyed)", "session"));
    return;
  }
  const Session* s = ctx.registry.state().session(id);
  ex->respond(http::Response::json(200, dump(json::array({encode_session(*s)}))));
}

void info(Context& ctx, const ExchangePtr& ex, const std::string& id) {
  require_session_id(id);
  serve_read(ctx, ex, {"sessions"}, [&ctx, id] {
    const auto& st = ctx.registry.state();
    json out = json::array();
    if (const Session* s = st.session(id)) out.push_back(encode_session(*s));
    return json_result(out, st.topic_index("sessions"));
  });
}

void list(Context& ctx, const ExchangePtr& ex, const std::string&) {
  serve_read(ctx, ex, {"sessions"}, [&ctx] {
    const auto& st = ctx.registry.state();
    json out = json::array();
    for (const auto& [id, s] : st.sessions()) out.push_back(encode_session(s));
    return json_result(out, st.topic_index("sessions"));
  });
}

void node(Context& ctx, const ExchangePtr& ex, const std::string& node) {
  serve_read(ctx, ex, {"sessions"}, [&ctx, node] {
    const auto& st = ctx.registry.state();
    json out = json::array();
    for (const auto& [id, s] : st.sessions())
      if (s.node == node) out.push_back(encode_session(s));
    return json_result(out, st.topic_index("sessions"));
  });
}

}  // namespace

void add_session_routes(std::vector<Route>& r) {
  r.push_back({"PUT", "/v1/session/create", false, create});
  r.push_back({"PUT", "/v1/session/destroy/", true, destroy});
  r.push_back({"PUT", "/v1/session/renew/", true, renew});
  r.push_back({"GET", "/v1/session/info/", true, info});
  r.push_back({"GET", "/v1/session/list", false, list});
  r.push_back({"GET", "/v1/session/node/", true, node});
}

}  // namespace flotilla::registry::api
