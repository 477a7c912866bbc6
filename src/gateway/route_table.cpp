#include "gateway/route_table.h"

#include "gateway/http1/syntax.h"

#include <algorithm>

namespace flotilla::gateway {

namespace {
using http1::syntax::iequals;  // (s, lower): patterns are lower-cased when the config is loaded

std::string_view strip_port(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    auto close = host.find(']');
    return close == std::string_view::npos ? host : host.substr(0, close + 1);
  }
  auto colon = host.rfind(':');
  return colon == std::string_view::npos ? host : host.substr(0, colon);
}
}  // namespace

bool path_prefix_matches(std::string_view prefix, std::string_view path) {
  if (path.compare(0, prefix.size(), prefix) != 0) return false;
  if (path.size() == prefix.size() || prefix.back() == '/') return true;
  return path[prefix.size()] == '/';
}

bool host_matches(std::string_view pattern, std::string_view host) {
  host = strip_port(host);
  // "shop.example." is the same fully qualified name as "shop.example" (RFC 1034 §3.1).
  if (host.size() > 1 && host.back() == '.') host.remove_suffix(1);
  if (pattern.rfind("*.", 0) == 0) {
    auto suffix = pattern.substr(1);  // ".example.com"
    return host.size() > suffix.size() && iequals(host.substr(host.size() - suffix.size()), suffix);
  }
  return iequals(host, pattern);
}

RouteTable::RouteTable(std::vector<config::Route> routes) : routes_(std::move(routes)) {}

int RouteTable::match(const RouteRequest& r) const {
  for (size_t i = 0; i < routes_.size(); ++i) {
    const auto& m = routes_[i].match;
    if (m.listener_service != r.listener_service) continue;
    if (!m.host.empty() && !host_matches(m.host, r.host)) continue;
    if (!m.path.empty() && r.path != m.path) continue;
    if (!m.path_prefix.empty() && !path_prefix_matches(m.path_prefix, r.path)) continue;
    if (!m.methods.empty() && std::find(m.methods.begin(), m.methods.end(), r.method) == m.methods.end()) continue;
    bool headers_ok = true;
    for (const auto& [name, value] : m.headers) {
      const std::string_view* v = r.header ? r.header(r.context, name) : nullptr;
      if (!v || *v != value) {
        headers_ok = false;
        break;
      }
    }
    if (!headers_ok) continue;
    return static_cast<int>(i);
  }
  return -1;
}

std::string RouteTable::upstream_path(int index, std::string_view path) const {
  const auto& route = routes_[static_cast<size_t>(index)];
  if (!route.strip_prefix || route.match.path_prefix.empty()) return std::string(path);
  std::string_view prefix = route.match.path_prefix;
  if (prefix.back() == '/') prefix.remove_suffix(1);  // keep the separator in what remains
  std::string out(path.substr(std::min(prefix.size(), path.size())));
  if (out.empty() || out[0] != '/') out.insert(out.begin(), '/');
  return out;
}

}  // namespace flotilla::gateway
