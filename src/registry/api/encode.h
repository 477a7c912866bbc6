// Consul's JSON shapes for the registry's records, as Consul 1.x answers them.
#pragma once

#include <nlohmann/json.hpp>

#include "registry/state.h"
#include "registry/types.h"

namespace flotilla::registry::api {

using nlohmann::json;

json encode_agent_service(const Service& s, const Node& node);
json encode_health_check(const Check& c, const Node& node, bool with_definition);
json encode_node(const Node& node);
json encode_catalog_service(const Service& s, const Node& node);
json encode_service_entry(const Service& s, const State& state);  // /v1/health/service
json encode_kv(const KvEntry& e);
json encode_session(const Session& s);
std::string dump(const json& j);

}  // namespace flotilla::registry::api
