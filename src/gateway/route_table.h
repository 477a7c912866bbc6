// The gateway's route table: the `gateway.routes` of flotilla.yaml, compiled once into an immutable
// table that workers consult per request. Routes are tried in order; the first match wins.
// Matching is on the normalised path (gateway/path.h), so what is routed is what is forwarded.
//
// A table of more than kIndexFrom routes is indexed, so that thousands of routes cost about what
// a few do: routes are grouped by listener and host (exact names in a hash table, `*.suffix` by
// suffix, routes for any host apart), and within a group by exact path and by path prefix (looked
// up for each of the request path's segment boundaries); routes without a path key that match
// first on a header name several of them share are indexed by that header's value. A request's
// candidates come out of the few lists that can match it, in route order, and each is checked in
// full; the first that matches wins, as in a scan of the whole list (which the index must always
// agree with).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/flotilla_file.h"

namespace flotilla::gateway {

// What a request looks like to the router (views into the request, valid for the call).
struct RouteRequest {
  std::string_view method;
  std::string_view host;  // Host header or absolute-form authority; a port is ignored
  std::string_view path;  // normalised (normalize_path)
  // Header lookup by lower-case name; nullptr when absent.
  const std::string_view* (*header)(const void* context, std::string_view lower_name) = nullptr;
  const void* context = nullptr;
  std::string_view listener_service;  // the service of the listener it arrived on; empty: a public one
};

class RouteTable {
 public:
  // Routes up to this many are scanned in order; more are indexed.
  static constexpr size_t kIndexFrom = 8;

  explicit RouteTable(std::vector<config::Route> routes);
  ~RouteTable();
  RouteTable(RouteTable&&) noexcept;
  RouteTable& operator=(RouteTable&&) noexcept;

  // The index of the first matching route, or -1.
  int match(const RouteRequest& request) const;
  // The same answer, by scanning every route in order (what the index is checked against).
  int match_by_scan(const RouteRequest& request) const;
  bool indexed() const { return index_ != nullptr; }
  const config::Route& route(int index) const { return routes_[static_cast<size_t>(index)]; }
  size_t size() const { return routes_.size(); }

  // The path to forward for a request that matched `index` (strip_prefix applied; always
  // starts with '/').
  std::string upstream_path(int index, std::string_view normalized_path) const;

 private:
  struct Index;
  bool matches(size_t i, const RouteRequest& request) const;
  std::vector<config::Route> routes_;
  std::unique_ptr<const Index> index_;
};

// Path prefix matching is segment-aware: "/api" matches "/api", "/api/" and "/api/x", never
// "/apix"; "/api/" matches "/api/" and "/api/x".
bool path_prefix_matches(std::string_view prefix, std::string_view path);
// `pattern` is lower-case (as the config loader leaves it). "example.com" matches exactly,
// case-insensitively; "*.example.com" matches any subdomain, not
// the bare domain. A ":port" on the host is ignored; IPv6 literals keep their brackets.
bool host_matches(std::string_view pattern, std::string_view host);

}  // namespace flotilla::gateway
