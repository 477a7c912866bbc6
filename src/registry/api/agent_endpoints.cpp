// /v1/agent/... and /v1/status/...: this agent's services and checks, its identity.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "health/runner.h"
#include "registry/api/decode.h"
#include "registry/api/encode.h"
#include "registry/api/endpoints.h"

namespace flotilla::registry::api {

namespace {

void require_id(const std::string& id, const char* what, const char* field) {
  if (id.empty()) throw bad_request(std::string("missing ") + what + " in the path", field);
}

void service_register(Context& ctx, const ExchangePtr& ex, const std::string&) {
  const auto& req = ex->request();
  auto reg = decode_service_registration(req.body);
  bool replace = bool_param(req, "replace-existing-checks", false);
  ctx.registry.register_service(std::move(reg.service), std::move(reg.checks), replace,
                                [ex](const WriteResult& r) { answer_write(ex, r, ""); });
}

void service_deregister(Context& ctx, const ExchangePtr& ex, const std::string& id) {
  require_id(id, "service ID", "service_id");
  ctx.registry.deregister_service(id, [ex](const WriteResult& r) { answer_write(ex, r, ""); });
}

void maintenance(Context& ctx, const ExchangePtr& ex, const std::string& id, bool node) {
  const auto& req = ex->request();
  if (!node) require_id(id, "service ID", "service_id");
  if (!req.has_param("enable")) throw bad_request("missing query parameter enable=true|false", "enable");
  bool enable = bool_param(req, "enable", false);
  std::string reason = text_param(req, "reason");
  ctx.registry.set_maintenance(node ? "" : id, enable, reason, [ex](const WriteResult& r) { answer_write(ex, r, ""); });
}

void service_maintenance(Context& ctx, const ExchangePtr& ex, const std::string& id) { maintenance(ctx, ex, id, false); }
void node_maintenance(Context& ctx, const ExchangePtr& ex, const std::string&) { maintenance(ctx, ex, "", true); }

void services(Context& ctx, const ExchangePtr& ex, const std::string&) {
  serve_read(ctx, ex, {"catalog"}, [&ctx] {
    const auto& st = ctx.registry.state();
    json out = json::object();
    for (const auto& [id, s] : st.services()) out[id] = encode_agent_service(s, st.node());
    return json_result(out, st.topic_index("catalog"));
  });
}

void service_one(Context& ctx, const ExchangePtr& ex, const std::string& id) {
  require_id(id, "service ID", "service_id");
  serve_read(ctx, ex, {"catalog"}, [&ctx, id] {
    const auto& st = ctx.registry.state();
    const Service* s = st.service(id);
    if (!s) {
      QueryResult q;
      q.status = 404;
      q.body = dump(json{{"error", "unknown service ID \"" + id + "\""}});
      q.index = st.topic_index("catalog");
      return q;
    }
    return json_result(encode_agent_service(*s, st.node()), s->modify_index);
  });
}

void checks(Context& ctx, const ExchangePtr& ex, const std::string&) {
  serve_read(ctx, ex, {"checks"}, [&ctx] {
    const auto& st = ctx.registry.state();
    json out = json::object();
    for (const auto& [id, c] : st.checks()) out[id] = encode_health_check(c, st.node(), true);
    return json_result(out, st.topic_index("checks"));
  });
}

void self(Context& ctx, const ExchangePtr& ex, const std::string&) {
  const auto& st = ctx.registry.state();
  const auto& n = st.node();
  json j{{"Config",
          {{"Datacenter", n.datacenter},
           {"NodeName", n.name},
           {"NodeID", n.id},
           {"Server", true},
           {"Revision", "flotilla"},
           {"Version", ctx.options.version},
           {"PrimaryDatacenter", n.datacenter}}},
         {"Member",
          {{"Name", n.name}, {"Addr", n.address}, {"Port", 8301}, {"Status", 1},
           {"Tags", {{"role", "consul"}, {"dc", n.datacenter}, {"build", ctx.options.version}}}}},
         {"Meta", json::object()},
         {"Flotilla", {{"Version", ctx.options.version}, {"Store", ctx.options.store},
                       {"API", ctx.options.api_address}, {"Index", st.revision()}}}};
  ex->respond(http::Response::json(200, dump(j)));
}

void members(Context& ctx, const ExchangePtr& ex, const std::string&) {
  const auto& n = ctx.registry.state().node();
  json j = json::array({{{"Name", n.name}, {"Addr", n.address}, {"Port", 8301}, {"Status", 1},
                         {"Tags", {{"role", "consul"}, {"dc", n.datacenter}}}}});
  ex->respond(http::Response::json(200, dump(j)));
}

void check_register(Context& ctx, const ExchangePtr& ex, const std::string&) {
  auto c = decode_check_registration(ex->request().body);
  ctx.registry.register_check(std::move(c), [ex](const WriteResult& r) { answer_write(ex, r, ""); });
}

void check_deregister(Context& ctx, const ExchangePtr& ex, const std::string& id) {
  require_id(id, "check ID", "check_id");
  if (id == "serfHealth" || id == "_node_maintenance" || id.rfind("_service_maintenance:", 0) == 0)
    throw bad_request("check \"" + id + "\" is managed by the agent and cannot be deregistered", "check_id");
  ctx.registry.deregister_check(id, [ex](const WriteResult& r) { answer_write(ex, r, ""); });
}

void ttl(Context& ctx, const ExchangePtr& ex, const std::string& id, const char* status) {
  require_id(id, "check ID", "check_id");
  ctx.health.ttl_update(id, status, text_param(ex->request(), "note"), [ex](const WriteResult& r) { answer_write(ex, r, ""); });
}
void check_pass(Context& ctx, const ExchangePtr& ex, const std::string& id) { ttl(ctx, ex, id, status::passing); }
void check_warn(Context& ctx, const ExchangePtr& ex, const std::string& id) { ttl(ctx, ex, id, status::warning); }
void check_fail(Context& ctx, const ExchangePtr& ex, const std::string& id) { ttl(ctx, ex, id, status::critical); }

void check_update(Context& ctx, const ExchangePtr& ex, const std::string& id) {
  require_id(id, "check ID", "check_id");
  auto [st, out] = decode_check_update(ex->request().body);
  ctx.health.ttl_update(id, st, out, [ex](const WriteResult& r) { answer_write(ex, r, ""); });
}

void leader(Context& ctx, const ExchangePtr& ex, const std::string&) {
  ex->respond(http::Response::json(200, dump(json(ctx.registry.identity().address + ":8300"))));
}

void peers(Context& ctx, const ExchangePtr& ex, const std::string&) {
  ex->respond(http::Response::json(200, dump(json::array({ctx.registry.identity().address + ":8300"}))));
}

}  // namespace

void add_agent_routes(std::vector<Route>& r) {
  // Consul 0.x accepted GET for these writes and python-consul 0.7 (Debian's) still sends GET.
  // They come first: "/v1/agent/service/" below would otherwise take the deregister path.
  r.push_back({"GET", "/v1/agent/service/deregister/", true, service_deregister, true});
  r.push_back({"GET", "/v1/agent/check/deregister/", true, check_deregister, true});
  r.push_back({"GET", "/v1/agent/check/pass/", true, check_pass, true});
  r.push_back({"GET", "/v1/agent/check/warn/", true, check_warn, true});
  r.push_back({"GET", "/v1/agent/check/fail/", true, check_fail, true});
  r.push_back({"PUT", "/v1/agent/service/register", false, service_register});
  r.push_back({"PUT", "/v1/agent/service/deregister/", true, service_deregister});
  r.push_back({"PUT", "/v1/agent/service/maintenance/", true, service_maintenance});
  r.push_back({"PUT", "/v1/agent/maintenance", false, node_maintenance});
  r.push_back({"GET", "/v1/agent/services", false, services});
  r.push_back({"GET", "/v1/agent/service/", true, service_one});
  r.push_back({"GET", "/v1/agent/checks", false, checks});
  r.push_back({"GET", "/v1/agent/self", false, self});
  r.push_back({"GET", "/v1/agent/members", false, members});
  r.push_back({"PUT", "/v1/agent/check/register", false, check_register});
  r.push_back({"PUT", "/v1/agent/check/deregister/", true, check_deregister});
  r.push_back({"PUT", "/v1/agent/check/pass/", true, check_pass});
  r.push_back({"PUT", "/v1/agent/check/warn/", true, check_warn});
  r.push_back({"PUT", "/v1/agent/check/fail/", true, check_fail});
  r.push_back({"PUT", "/v1/agent/check/update/", true, check_update});
  r.push_back({"GET", "/v1/status/leader", false, leader});
  r.push_back({"GET", "/v1/status/peers", false, peers});
}

}  // namespace flotilla::registry::api
