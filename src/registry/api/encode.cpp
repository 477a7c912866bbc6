#include "registry/api/encode.h"

#include "common/base64.h"
#include "common/duration.h"

namespace flotilla::registry::api {

namespace {
json tags_of(const std::vector<std::string>& tags) { return tags.empty() ? json::array() : json(tags); }
json meta_of(const std::map<std::string, std::string>& m) { return m.empty() ? json::object() : json(m); }
}  // namespace

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json encode_agent_service(const Service& s, const Node& node) {
  return json{{"ID", s.id},
              {"Service", s.name},
              {"Tags", tags_of(s.tags)},
              {"Meta", meta_of(s.meta)},
              {"Port", s.port},
              {"Address", s.address},
              {"Weights", {{"Passing", s.weight_passing}, {"Warning", s.weight_warning}}},
              {"EnableTagOverride", s.enable_tag_override},
              {"Datacenter", node.datacenter},
              {"CreateIndex", s.create_index},
              {"ModifyIndex", s.modify_index}};
}

json encode_health_check(const Check& c, const Node& node, bool with_definition) {
  json j{{"Node", node.name},
         {"CheckID", c.id},
         {"Name", c.name},
         {"Status", c.status},
         {"Notes", c.notes},
         {"Output", c.output},
         {"ServiceID", c.service_id},
         {"ServiceName", c.service_name},
         {"ServiceTags", tags_of(c.service_tags)},
         {"Type", c.kind == status::maintenance ? std::string() : c.kind},
         {"CreateIndex", c.create_index},
         {"ModifyIndex", c.modify_index}};
  if (with_definition) {
    const auto& d = c.definition;
    json def = json::object();
    if (!d.http.empty()) {
      def["HTTP"] = d.http;
      if (!d.method.empty()) def["Method"] = d.method;
      if (!d.header.empty()) def["Header"] = d.header;
      if (!d.body.empty()) def["Body"] = d.body;
      def["TLSSkipVerify"] = d.tls_skip_verify;
    }
    if (!d.tcp.empty()) def["TCP"] = d.tcp;
    if (d.interval.count()) def["Interval"] = format_duration(d.interval);
    if (d.timeout.count()) def["Timeout"] = format_duration(d.timeout);
    if (d.ttl.count()) def["TTL"] = format_duration(d.ttl);
    if (d.deregister_critical_service_after.count())
      def["DeregisterCriticalServiceAfter"] = format_duration(d.deregister_critical_service_after);
    j["Definition"] = def;
    j["Interval"] = d.interval.count() ? format_duration(d.interval) : "";
    j["Timeout"] = d.timeout.count() ? format_duration(d.timeout) : "";
  }
  return j;
}

json encode_node(const Node& node) {
  return json{{"ID", node.id},
              {"Node", node.name},
              {"Address", node.address},
              {"Datacenter", node.datacenter},
              {"TaggedAddresses", {{"lan", node.address}, {"wan", node.address}}},
              {"Meta", json::object()},
              {"CreateIndex", node.create_index},
              {"ModifyIndex", node.modify_index}};
}

json encode_catalog_service(const Service& s, const Node& node) {
  return json{{"ID", node.id},
              {"Node", node.name},
              {"Address", node.address},
              {"Datacenter", node.datacenter},
              {"TaggedAddresses", {{"lan", node.address}, {"wan", node.address}}},
              {"NodeMeta", json::object()},
              {"ServiceKind", ""},
              {"ServiceID", s.id},
              {"ServiceName", s.name},
              {"ServiceTags", tags_of(s.tags)},
              {"ServiceAddress", s.address},
              {"ServicePort", s.port},
              {"ServiceMeta", meta_of(s.meta)},
              {"ServiceWeights", {{"Passing", s.weight_passing}, {"Warning", s.weight_warning}}},
              {"ServiceEnableTagOverride", s.enable_tag_override},
              {"CreateIndex", s.create_index},
              {"ModifyIndex", s.modify_index}};
}

json encode_service_entry(const Service& s, const State& state) {
  json checks = json::array();
  for (const Check* c : state.node_checks()) checks.push_back(encode_health_check(*c, state.node(), false));
  for (const Check* c : state.checks_of_service(s.id)) checks.push_back(encode_health_check(*c, state.node(), false));
  json svc = encode_agent_service(s, state.node());
  svc.erase("Datacenter");
  return json{{"Node", encode_node(state.node())}, {"Service", svc}, {"Checks", checks}};
}

json encode_kv(const KvEntry& e) {
  json j{{"LockIndex", e.lock_index},
         {"Key", e.key},
         {"Flags", e.flags},
         {"Value", e.value.empty() ? json(nullptr) : json(base64_encode(e.value))},
         {"CreateIndex", e.create_index},
         {"ModifyIndex", e.modify_index}};
  if (!e.session.empty()) j["Session"] = e.session;
  return j;
}

json encode_session(const Session& s) {
  json service_checks = json::array();
  for (const auto& id : s.service_checks) service_checks.push_back({{"ID", id}, {"Namespace", ""}});
  return json{{"ID", s.id},
              {"Name", s.name},
              {"Node", s.node},
              {"LockDelay", s.lock_delay.count()},
              {"Behavior", s.behavior},
              {"TTL", s.ttl.count() ? format_duration(s.ttl) : ""},
              {"NodeChecks", s.node_checks},
              {"ServiceChecks", s.service_checks.empty() ? json(nullptr) : service_checks},
              {"Checks", s.node_checks},
              {"CreateIndex", s.create_index},
              {"ModifyIndex", s.modify_index}};
}

}  // namespace flotilla::registry::api
