// /v1/catalog/... and /v1/health/...: where services are and which instances are healthy.
// One node (this agent) until the etcd store lets many agents share a catalog.
#include <nlohmann/json.hpp>

#include <algorithm>

#include "common/error.h"
#include "registry/api/decode.h"
#include "registry/api/encode.h"
#include "registry/api/endpoints.h"

namespace flotilla::registry::api {

namespace {

bool has_tags(const Service& s, const std::vector<std::string>& tags) {
  for (const auto& t : tags)
    if (std::find(s.tags.begin(), s.tags.end(), t) == s.tags.end()) return false;
  return true;
}

std::vector<std::string> tag_filter(const http::Request& req) {
  std::vector<std::string> tags;
  for (const auto& [k, v] : req.query)
    if (k == "tag") tags.push_back(v);
  return tags;
}

void check_service_name(const std::string& name) {
  if (name.empty()) throw bad_request("missing service name in the path", "service");
}

void catalog_services(Context& ctx, const ExchangePtr& ex, const std::string&) {
  serve_read(ctx, ex, {"catalog"}, [&ctx] {
    const auto& st = ctx.registry.state();
    std::map<std::string, std::set<std::string>> by_name;
    for (const auto& [id, s] : st.services()) by_name[s.name].insert(s.tags.begin(), s.tags.end());
    json out = json::object();
    for (const auto& [name, tags] : by_name) out[name] = json(std::vector<std::string>(tags.begin(), tags.end()));
    return json_result(out, st.topic_index("catalog"));
  });
}

void catalog_service(Context& ctx, const ExchangePtr& ex, const std::string& name) {
  check_service_name(name);
  auto tags = tag_filter(ex->request());
  serve_read(ctx, ex, {"svc:" + name}, [&ctx, name, tags] {
    const auto& st = ctx.registry.state();
    json out = json::array();
    for (const Service* s : st.instances(name))
      if (has_tags(*s, tags)) out.push_back(encode_catalog_service(*s, st.node()));
    return json_result(out, st.topic_index("svc:" + name));
  });
}

void catalog_nodes(Context& ctx, const ExchangePtr& ex, const std::string&) {
  serve_read(ctx, ex, {"node"}, [&ctx] {
    const auto& st = ctx.registry.state();
    return json_result(json::array({encode_node(st.node())}), st.topic_index("node"));
  });
}

void catalog_node(Context& ctx, const ExchangePtr& ex, const std::string& node) {
  serve_read(ctx, ex, {"node", "catalog"}, [&ctx, node] {
    const auto& st = ctx.registry.state();
    uint64_t index = std::max(st.topic_index("node"), st.topic_index("catalog"));
    if (node != st.node().name) return json_result(nullptr, index);
    json services = json::object();
    for (const auto& [id, s] : st.services()) {
      auto j = encode_agent_service(s, st.node());
      j.erase("Datacenter");
      services[id] = j;
    }
    return json_result(json{{"Node", encode_node(st.node())}, {"Services", services}}, index);
  });
}

void catalog_datacenters(Context& ctx, const ExchangePtr& ex, const std::string&) {
  ex->respond(http::Response::json(200, dump(json::array({ctx.registry.state().node().datacenter}))));
}

bool all_passing(const Service& s, const State& st) {
  for (const Check* c : st.node_checks())
    if (c->status != status::passing) return false;
  for (const Check* c : st.checks_of_service(s.id))
    if (c->status != status::passing) return false;
  return true;
}

void health_service(Context& ctx, const ExchangePtr& ex, const std::string& name) {
  check_service_name(name);
  const auto& req = ex->request();
  bool passing = bool_param(req, "passing", false);
  auto tags = tag_filter(req);
  serve_read(ctx, ex, {"svc:" + name, "node"}, [&ctx, name, tags, passing] {
    const auto& st = ctx.registry.state();
    json out = json::array();
    for (const Service* s : st.instances(name)) {
      if (!has_tags(*s, tags)) continue;
      if (passing && !all_passing(*s, st)) continue;
      out.push_back(encode_service_entry(*s, st));
    }
    return json_result(out, std::max(st.topic_index("svc:" + name), st.topic_index("node")));
  });
}

void health_checks(Context& ctx, const ExchangePtr& ex, const std::string& name) {
  check_service_name(name);
  serve_read(ctx, ex, {"svc:" + name}, [&ctx, name] {
    const auto& st = ctx.registry.state();
    json out = json::array();
    for (const Service* s : st.instances(name))
      for (const Check* c : st.checks_of_service(s->id)) out.push_back(encode_health_check(*c, st.node(), false));
    return json_result(out, st.topic_index("svc:" + name));
  });
}

void health_state(Context& ctx, const ExchangePtr& ex, const std::string& state) {
  if (state != "any" && !valid_status(state))
    throw bad_request("state must be any, passing, warning or critical", "state");
  serve_read(ctx, ex, {"checks"}, [&ctx, state] {
    const auto& st = ctx.registry.state();
    json out = json::array();
    for (const auto& [id, c] : st.checks())
      if (state == "any" || c.status == state) out.push_back(encode_health_check(c, st.node(), false));
    return json_result(out, st.topic_index("checks"));
  });
}

void health_node(Context& ctx, const ExchangePtr& ex, const std::string& node) {
  serve_read(ctx, ex, {"checks"}, [&ctx, node] {
    const auto& st = ctx.registry.state();
    json out = json::array();
    if (node == st.node().name)
      for (const auto& [id, c] : st.checks()) out.push_back(encode_health_check(c, st.node(), false));
    return json_result(out, st.topic_index("checks"));
  });
}

}  // namespace

void add_catalog_routes(std::vector<Route>& r) {
  r.push_back({"GET", "/v1/catalog/services", false, catalog_services});
  r.push_back({"GET", "/v1/catalog/service/", true, catalog_service});
  r.push_back({"GET", "/v1/catalog/nodes", false, catalog_nodes});
  r.push_back({"GET", "/v1/catalog/node/", true, catalog_node});
  r.push_back({"GET", "/v1/catalog/datacenters", false, catalog_datacenters});
  r.push_back({"GET", "/v1/health/service/", true, health_service});
  r.push_back({"GET", "/v1/health/checks/", true, health_checks});
  r.push_back({"GET", "/v1/health/state/", true, health_state});
  r.push_back({"GET", "/v1/health/node/", true, health_node});
}

}  // namespace flotilla::registry::api
