// Storage encoding of registry records: compact JSON, readable with the sqlite3 shell or etcdctl.
// KV values are stored raw after a one-line JSON header, so large values are not re-encoded.
#include <nlohmann/json.hpp>

#include <stdexcept>

#include "registry/types.h"

namespace flotilla::registry {

using nlohmann::json;

bool valid_status(const std::string& s) {
  return s == status::passing || s == status::warning || s == status::critical;
}

bool Service::operator==(const Service& o) const {
  return id == o.id && name == o.name && tags == o.tags && address == o.address && port == o.port &&
         meta == o.meta && weight_passing == o.weight_passing && weight_warning == o.weight_warning &&
         enable_tag_override == o.enable_tag_override;
}

std::string encode(const Service& s) {
  json j{{"id", s.id},     {"name", s.name}, {"tags", s.tags}, {"address", s.address},
         {"port", s.port}, {"meta", s.meta}, {"wp", s.weight_passing}, {"ww", s.weight_warning},
         {"eto", s.enable_tag_override}};
  return j.dump();
}

Service decode_service(const std::string& bytes) {
  try {
    auto j = json::parse(bytes);
    Service s;
    s.id = j.at("id");
    s.name = j.at("name");
    s.tags = j.at("tags").get<std::vector<std::string>>();
    s.address = j.at("address");
    s.port = j.at("port");
    s.meta = j.at("meta").get<std::map<std::string, std::string>>();
    s.weight_passing = j.at("wp");
    s.weight_warning = j.at("ww");
    s.enable_tag_override = j.at("eto");
    return s;
  } catch (const json::exception& e) {
    throw std::runtime_error(std::string("corrupt service record: ") + e.what());
  }
}

std::string encode(const Check& c) {
  const auto& d = c.definition;
  json def{{"http", d.http}, {"method", d.method}, {"header", d.header}, {"body", d.body},
           {"tls_skip_verify", d.tls_skip_verify}, {"tcp", d.tcp}, {"ttl", d.ttl.count()},
           {"interval", d.interval.count()}, {"timeout", d.timeout.count()},
           {"sbp", d.success_before_passing}, {"fbc", d.failures_before_critical},
           {"dcsa", d.deregister_critical_service_after.count()}};
  json j{{"id", c.id},       {"name", c.name},     {"service_id", c.service_id}, {"service_name", c.service_name},
         {"service_tags", c.service_tags}, {"status", c.status}, {"notes", c.notes}, {"output", c.output},
         {"kind", c.kind},   {"def", def}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

Check decode_check(const std::string& bytes) {
  try {
    auto j = json::parse(bytes);
    Check c;
    c.id = j.at("id");
    c.name = j.at("name");
    c.service_id = j.at("service_id");
    c.service_name = j.at("service_name");
    c.service_tags = j.at("service_tags").get<std::vector<std::string>>();
    c.status = j.at("status");
    c.notes = j.at("notes");
    c.output = j.at("output");
    c.kind = j.at("kind");
    const auto& d = j.at("def");
    auto& def = c.definition;
    def.http = d.at("http");
    def.method = d.at("method");
    def.header = d.at("header").get<std::map<std::string, std::vector<std::string>>>();
    def.body = d.at("body");
    def.tls_skip_verify = d.at("tls_skip_verify");
    def.tcp = d.at("tcp");
    def.ttl = Duration(d.at("ttl").get<int64_t>());
    def.interval = Duration(d.at("interval").get<int64_t>());
    def.timeout = Duration(d.at("timeout").get<int64_t>());
    def.success_before_passing = d.at("sbp");
    def.failures_before_critical = d.at("fbc");
    def.deregister_critical_service_after = Duration(d.at("dcsa").get<int64_t>());
    return c;
  } catch (const json::exception& e) {
    throw std::runtime_error(std::string("corrupt check record: ") + e.what());
  }
}

std::string encode(const KvEntry& e) {
  json j{{"flags", e.flags}, {"lock_index", e.lock_index}, {"session", e.session}};
  std::string out = j.dump();
  out += '\n';
  out += e.value;
  return out;
}

KvEntry decode_kv(const std::string& bytes) {
  auto nl = bytes.find('\n');
  if (nl == std::string::npos) throw std::runtime_error("corrupt kv record: no header");
  try {
    auto j = json::parse(std::string_view(bytes).substr(0, nl));
    KvEntry e;
    e.flags = j.at("flags");
    e.lock_index = j.at("lock_index");
    e.session = j.at("session");
    e.value = bytes.substr(nl + 1);
    return e;
  } catch (const json::exception& ex) {
    throw std::runtime_error(std::string("corrupt kv record: ") + ex.what());
  }
}

std::string encode(const Session& s) {
  json j{{"id", s.id},
         {"name", s.name},
         {"node", s.node},
         {"node_checks", s.node_checks},
         {"service_checks", s.service_checks},
         {"lock_delay", s.lock_delay.count()},
         {"behavior", s.behavior},
         {"ttl", s.ttl.count()},
         {"lease", s.lease}};
  return j.dump();
}

Session decode_session(const std::string& bytes) {
  try {
    auto j = json::parse(bytes);
    Session s;
    s.id = j.at("id");
    s.name = j.at("name");
    s.node = j.at("node");
    s.node_checks = j.at("node_checks").get<std::vector<std::string>>();
    s.service_checks = j.at("service_checks").get<std::vector<std::string>>();
    s.lock_delay = Duration(j.at("lock_delay").get<int64_t>());
    s.behavior = j.at("behavior");
    s.ttl = Duration(j.at("ttl").get<int64_t>());
    s.lease = j.at("lease");
    return s;
  } catch (const json::exception& e) {
    throw std::runtime_error(std::string("corrupt session record: ") + e.what());
  }
}

}  // namespace flotilla::registry
