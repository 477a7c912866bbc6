#include "registry/api/decode.h"

#include <nlohmann/json.hpp>

#include <cctype>
#include <charconv>

#include "common/error.h"
#include "common/json.h"

namespace flotilla::registry::api {

namespace fj = ::flotilla::json;  // not `json`: a unity build may see `using nlohmann::json` here
using fj::Json;
using namespace std::chrono_literals;

namespace {

constexpr size_t kMaxName = 512;
constexpr int kMaxPort = 65535;

// field: the request field the value came from (empty for a whole body).
void require_object(const Json& j, std::string_view what, std::string_view field = {}) {
  if (!j.is_object()) throw bad_request(std::string(what) + " must be a JSON object", std::string(field));
}

void check_text(const std::string& v, std::string_view field, size_t max = kMaxName) {
  if (v.size() > max)
    throw bad_request(std::string(field) + " is longer than " + std::to_string(max) + " bytes", std::string(field));
  if (v.find('\0') != std::string::npos) throw bad_request(std::string(field) + " contains a NUL byte", std::string(field));
}

bool valid_header_name(const std::string& name) {
  if (name.empty() || name.size() > 256) return false;
  for (unsigned char c : name) {
    if (std::isalnum(c)) continue;
    if (std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) == std::string_view::npos) return false;
  }
  return true;
}

Check decode_check(const Json& j, std::string_view path) {
  require_object(j, path.empty() ? "check" : path, path);
  Check c;
  auto field = [&](std::string_view k) { return path.empty() ? std::string(k) : std::string(path) + "." + std::string(k); };
  c.id = fj::get_string(j, "CheckID", path).value_or(fj::get_string(j, "ID", path).value_or(""));
  c.name = fj::get_string(j, "Name", path).value_or("");
  c.notes = fj::get_string(j, "Notes", path).value_or("");
  c.service_id = fj::get_string(j, "ServiceID", path).value_or("");
  check_text(c.id, field("CheckID"));
  check_text(c.name, field("Name"));
  check_text(c.notes, field("Notes"), 64 * 1024);
  auto& d = c.definition;
  d.http = fj::get_string(j, "HTTP", path).value_or("");
  d.tcp = fj::get_string(j, "TCP", path).value_or("");
  d.method = fj::get_string(j, "Method", path).value_or("");
  d.body = fj::get_string(j, "Body", path).value_or("");
  d.tls_skip_verify = fj::get_bool(j, "TLSSkipVerify", path).value_or(false);
  if (!d.method.empty()) {
    bool token = d.method.size() <= 16;
    for (char ch : d.method) token = token && ch >= 'A' && ch <= 'Z';
    if (!token) throw bad_request(field("Method") + " must be an HTTP method such as GET or HEAD", field("Method"));
  }
  check_text(d.body, field("Body"), 64 * 1024);
  if (const Json* h = fj::find(j, "Header")) {
    if (!h->is_object()) throw bad_request(field("Header") + " must be an object of string lists", field("Header"));
    if (h->size() > 64) throw bad_request(field("Header") + " has more than 64 names", field("Header"));
    for (auto it = h->begin(); it != h->end(); ++it) {
      if (!it->is_array()) throw bad_request(field("Header") + "." + it.key() + " must be a list of strings", field("Header"));
      if (!valid_header_name(it.key()))
        throw bad_request(field("Header") + ": \"" + it.key() + "\" is not a valid header name", field("Header"));
      for (const auto& v : *it) {
        if (!v.is_string()) throw bad_request(field("Header") + "." + it.key() + " must be a list of strings", field("Header"));
        const auto& value = v.get_ref<const std::string&>();
        if (value.size() > 8192 || value.find_first_of("\r\n", 0) != std::string::npos || value.find('\0') != std::string::npos)
          throw bad_request(field("Header") + "." + it.key() + ": values must be at most 8 KiB, without CR, LF or NUL",
                            field("Header"));
        d.header[it.key()].push_back(value);
      }
    }
  }
  d.ttl = fj::get_duration(j, "TTL", path).value_or(Duration::zero());
  d.interval = fj::get_duration(j, "Interval", path).value_or(Duration::zero());
  d.timeout = fj::get_duration(j, "Timeout", path).value_or(Duration::zero());
  d.deregister_critical_service_after =
      fj::get_duration(j, "DeregisterCriticalServiceAfter", path).value_or(Duration::zero());
  d.success_before_passing = static_cast<int>(fj::get_int(j, "SuccessBeforePassing", path, 0, 1000).value_or(0));
  d.failures_before_critical = static_cast<int>(fj::get_int(j, "FailuresBeforeCritical", path, 0, 1000).value_or(0));
  for (const char* unsupported : {"Args", "Script", "ScriptArgs", "DockerContainerID", "GRPC", "H2PING", "AliasService", "AliasNode", "OSService", "UDP"}) {
    if (fj::find(j, unsupported))
      throw bad_request(field(unsupported) + ": this kind of check is not supported (use HTTP, TCP or TTL)", field(unsupported));
  }
  // TTL matters only to a TTL check: clients that send every field give HTTP/TCP checks "" or "0s".
  if (fj::find(j, "TTL") && d.ttl.count() <= 0 && d.http.empty() && d.tcp.empty())
    throw bad_request(field("TTL") + " must be above 0, such as 30s", field("TTL"));
  int kinds = !d.http.empty() + !d.tcp.empty() + (d.ttl.count() > 0);
  if (kinds == 0)
    throw bad_request((path.empty() ? std::string("check") : std::string(path)) +
                          " needs one of HTTP, TCP or TTL", path.empty() ? "HTTP" : std::string(path));
  if (kinds > 1) throw bad_request(field("HTTP") + ": give only one of HTTP, TCP or TTL", field("HTTP"));
  if (d.ttl.count() < 0) throw bad_request(field("TTL") + " must be positive", field("TTL"));
  if (!d.http.empty()) {
    c.kind = "http";
    if (d.http.rfind("http://", 0) != 0 && d.http.rfind("https://", 0) != 0)
      throw bad_request(field("HTTP") + " must be an http:// or https:// URL", field("HTTP"));
    check_text(d.http, field("HTTP"), 4096);
  } else if (!d.tcp.empty()) {
    c.kind = "tcp";
    auto colon = d.tcp.rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == d.tcp.size())
      throw bad_request(field("TCP") + " must be HOST:PORT", field("TCP"));
    // A numeric port must be one (a name such as "http" is looked up when the check connects).
    const std::string_view port_text = std::string_view(d.tcp).substr(colon + 1);
    if (std::all_of(port_text.begin(), port_text.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      unsigned port = 0;
      auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
      if (ec != std::errc() || port == 0 || port > 65535)
        throw bad_request(field("TCP") + " must be HOST:PORT with a port from 1 to 65535", field("TCP"));
    }
    check_text(d.tcp, field("TCP"));
  } else {
    c.kind = "ttl";
  }
  if (c.kind != "ttl") {
    if (d.interval.count() <= 0) throw bad_request(field("Interval") + " is required for HTTP and TCP checks", field("Interval"));
    if (d.interval < 10ms) throw bad_request(field("Interval") + " must be at least 10ms", field("Interval"));
  }
  if (d.timeout.count() < 0) throw bad_request(field("Timeout") + " must be positive", field("Timeout"));
  if (d.deregister_critical_service_after.count() != 0 && d.deregister_critical_service_after < 1s)
    throw bad_request(field("DeregisterCriticalServiceAfter") + " must be at least 1s", field("DeregisterCriticalServiceAfter"));
  if (auto st = fj::get_string(j, "Status", path); st && !st->empty()) {
    if (!valid_status(*st))
      throw bad_request(field("Status") + " must be passing, warning or critical", field("Status"));
    c.status = *st;
  }
  return c;
}

}  // namespace

ServiceRegistration decode_service_registration(std::string_view body) {
  auto j = fj::parse_body(body);
  require_object(j, "service registration");
  ServiceRegistration r;
  auto& s = r.service;
  s.name = fj::get_string(j, "Name", "").value_or("");
  s.id = fj::get_string(j, "ID", "").value_or("");
  if (s.name.empty()) throw bad_request("Name is required", "Name");
  if (s.id.empty()) s.id = s.name;
  check_text(s.name, "Name");
  check_text(s.id, "ID");
  if (s.id.find('/') != std::string::npos) throw bad_request("ID must not contain '/'", "ID");
  s.tags = fj::get_string_list(j, "Tags", "").value_or(std::vector<std::string>{});
  for (const auto& t : s.tags) check_text(t, "Tags");
  s.address = fj::get_string(j, "Address", "").value_or("");
  check_text(s.address, "Address");
  s.port = static_cast<int>(fj::get_int(j, "Port", "", 0, kMaxPort).value_or(0));
  s.meta = fj::get_string_map(j, "Meta", "").value_or(std::map<std::string, std::string>{});
  if (s.meta.size() > 64) throw bad_request("Meta has more than 64 keys", "Meta");
  for (const auto& [k, v] : s.meta) {
    check_text(k, "Meta", 128);
    check_text(v, "Meta", 512);
    if (k.empty()) throw bad_request("Meta keys must not be empty", "Meta");
  }
  s.enable_tag_override = fj::get_bool(j, "EnableTagOverride", "").value_or(false);
  if (const Json* w = fj::find(j, "Weights")) {
    if (!w->is_object()) throw bad_request("Weights must be an object", "Weights");
    s.weight_passing = static_cast<int>(fj::get_int(*w, "Passing", "Weights", 1, 65535).value_or(1));
    s.weight_warning = static_cast<int>(fj::get_int(*w, "Warning", "Weights", 0, 65535).value_or(1));
  }
  if (const Json* c = fj::find(j, "Check")) {
    // null or {} is no check (as Consul reads it); anything else must be a check object.
    if (!c->is_null() && !(c->is_object() && c->empty())) r.checks.push_back(decode_check(*c, "Check"));
  }
  if (const Json* cs = fj::find(j, "Checks")) {
    if (!cs->is_array()) throw bad_request("Checks must be a list", "Checks");
    for (size_t i = 0; i < cs->size(); ++i) r.checks.push_back(decode_check((*cs)[i], "Checks[" + std::to_string(i) + "]"));
  }
  // Consul's IDs for embedded checks: "service:<id>", numbered when there are several.
  for (size_t i = 0; i < r.checks.size(); ++i) {
    auto& c = r.checks[i];
    if (c.id.empty()) c.id = r.checks.size() == 1 ? "service:" + s.id : "service:" + s.id + ":" + std::to_string(i + 1);
    if (c.name.empty()) c.name = "Service '" + s.name + "' check";
    c.service_id = s.id;
  }
  for (size_t i = 0; i < r.checks.size(); ++i)
    for (size_t k = i + 1; k < r.checks.size(); ++k)
      if (r.checks[i].id == r.checks[k].id) throw bad_request("two checks have the ID \"" + r.checks[i].id + "\"", "Checks");
  return r;
}

Check decode_check_registration(std::string_view body) {
  auto j = fj::parse_body(body);
  require_object(j, "check registration");
  auto c = decode_check(j, "");
  if (c.name.empty()) throw bad_request("Name is required", "Name");
  if (c.id.empty()) c.id = c.name;
  if (c.id.rfind("_service_maintenance:", 0) == 0 || c.id == "_node_maintenance" || c.id == "serfHealth")
    throw bad_request("check ID \"" + c.id + "\" is reserved", "CheckID");
  return c;
}

Session decode_session_create(std::string_view body) {
  Session s;
  s.node_checks = {"serfHealth"};
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return s;
  auto j = fj::parse_body(body);
  require_object(j, "session");
  s.name = fj::get_string(j, "Name", "").value_or("");
  check_text(s.name, "Name");
  if (auto b = fj::get_string(j, "Behavior", "")) {
    if (!b->empty() && *b != "release" && *b != "delete")
      throw bad_request("Behavior must be \"release\" or \"delete\"", "Behavior");
    if (!b->empty()) s.behavior = *b;
  }
  if (auto ttl = fj::get_duration(j, "TTL", "")) {
    if (ttl->count() != 0 && (*ttl < 1s || *ttl > 86400s))
      throw bad_request("TTL must be between 1s and 86400s", "TTL");
    s.ttl = *ttl;
  }
  if (auto d = fj::get_duration(j, "LockDelay", "")) {
    // Consul reads a bare number below 1000 as seconds ("LockDelay": 15 means 15s).
    if (const Json* raw = fj::find(j, "LockDelay"); raw && raw->is_number() && d->count() > 0 && d->count() < 1000)
      *d = std::chrono::seconds(d->count());
    if (d->count() < 0 || *d > 60s) throw bad_request("LockDelay must be between 0s and 60s", "LockDelay");
    s.lock_delay = *d;
  }
  auto checks = fj::get_string_list(j, "Checks", "");
  auto node_checks = fj::get_string_list(j, "NodeChecks", "");
  if (checks || node_checks) {
    s.node_checks.clear();
    // "Checks" (the older field) may name node or service checks; both are accepted.
    if (node_checks) s.node_checks = *node_checks;
    if (checks)
      for (const auto& c : *checks) s.node_checks.push_back(c);
  }
  if (const Json* sc = fj::find(j, "ServiceChecks")) {
    if (!sc->is_array()) throw bad_request("ServiceChecks must be a list of {\"ID\": ...}", "ServiceChecks");
    for (const auto& e : *sc) {
      auto id = fj::get_string(e, "ID", "ServiceChecks");
      if (!id || id->empty()) throw bad_request("ServiceChecks entries need an ID", "ServiceChecks");
      s.service_checks.push_back(*id);
    }
  }
  if (auto node = fj::get_string(j, "Node", "")) s.node = *node;
  return s;
}

void validate_kv_key(const std::string& key, bool allow_empty) {
  if (key.empty() && !allow_empty) throw bad_request("missing key name", "key");
  if (key.size() > 2048) throw bad_request("key is longer than 2048 bytes", "key");
  if (key.find('\0') != std::string::npos) throw bad_request("key contains a NUL byte", "key");
  if (!fj::valid_utf8(key)) throw bad_request("key is not valid UTF-8", "key");
}

std::optional<uint64_t> uint_param(const http::Request& request, std::string_view name) {
  const std::string* v = request.param(name);
  if (!v) return std::nullopt;
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (v->empty() || ec != std::errc() || p != v->data() + v->size())
    throw bad_request("query parameter " + std::string(name) + " must be a non-negative integer", std::string(name));
  return n;
}

bool bool_param(const http::Request& request, std::string_view name, bool absent_value) {
  const std::string* v = request.param(name);
  if (!v) return absent_value;
  if (v->empty() || fj::iequals(*v, "true") || *v == "1") return true;
  if (fj::iequals(*v, "false") || *v == "0") return false;
  throw bad_request("query parameter " + std::string(name) + " must be true or false", std::string(name));
}

KvPut decode_kv_put(const std::string& key, const http::Request& request) {
  validate_kv_key(key, false);
  KvPut p;
  p.key = key;
  p.value = request.body;
  if (p.value.size() > kMaxKvValue)
    throw ApiError(413, "value is " + std::to_string(p.value.size()) + " bytes; the limit is 524288 (512 KiB)", "value");
  p.flags = uint_param(request, "flags").value_or(0);
  p.cas = uint_param(request, "cas");
  if (auto* a = request.param("acquire")) {
    if (a->empty()) throw bad_request("acquire needs a session ID", "acquire");
    p.acquire = *a;
  }
  if (auto* r = request.param("release")) {
    if (r->empty()) throw bad_request("release needs a session ID", "release");
    p.release = *r;
  }
  if (!p.acquire.empty() && !p.release.empty())
    throw bad_request("acquire and release cannot be used together", "acquire");
  return p;
}

std::pair<std::string, std::string> decode_check_update(std::string_view body) {
  auto j = fj::parse_body(body);
  require_object(j, "check update");
  auto st = fj::get_string(j, "Status", "").value_or("");
  if (!valid_status(st)) throw bad_request("Status must be passing, warning or critical", "Status");
  auto out = fj::get_string(j, "Output", "").value_or("");
  check_text(out, "Output", 64 * 1024);
  return {st, out};
}

std::string text_param(const http::Request& request, std::string_view name) {
  const std::string* v = request.param(std::string(name));
  if (!v) return {};
  check_text(*v, name, 64 * 1024);
  return *v;
}

}  // namespace flotilla::registry::api
