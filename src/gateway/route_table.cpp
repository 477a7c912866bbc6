#include "gateway/route_table.h"

#include "gateway/http1/syntax.h"

#include <algorithm>
#include <functional>
#include <unordered_map>

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

// The host as host_matches() compares it: port and one trailing dot dropped.
std::string_view comparable_host(std::string_view host) {
  host = strip_port(host);
  // "shop.example." is the same fully qualified name as "shop.example" (RFC 1034 §3.1).
  if (host.size() > 1 && host.back() == '.') host.remove_suffix(1);
  return host;
}

struct RouteKeyHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using RouteKeyMap = std::unordered_map<std::string, V, RouteKeyHash, std::equal_to<>>;

using RouteList = std::vector<uint32_t>;  // route indices, ascending

// Lengths present among a map's keys: lookups are made only for those.
void mark_length(std::vector<bool>& lengths, size_t n) {
  if (lengths.size() <= n) lengths.resize(n + 1);
  lengths[n] = true;
}

// A header name that at least this many routes without a path key match on first: those routes
// are indexed by its value (tenant routing: `headers: {x-tenant: t1}`, ...).
constexpr size_t kHeaderIndexFrom = 4;

// The routes of one listener and host group, by what they require of the path.
struct RoutePathGroup {
  RouteKeyMap<RouteList> exact;   // `path`
  RouteKeyMap<RouteList> prefix;  // `path_prefix`, as written
  std::vector<bool> prefix_lengths;
  struct ByHeader {
    std::string name;                 // lower-case, as the config loader leaves it
    RouteKeyMap<RouteList> by_value;  // the exact value the route wants
  };
  std::vector<ByHeader> by_header;  // routes with neither path key, by their first header
  RouteList any;                    // the others with neither path key

  void add(uint32_t i, const config::RouteMatch& m) {
    if (!m.path.empty()) {
      exact[m.path].push_back(i);
    } else if (!m.path_prefix.empty()) {
      prefix[m.path_prefix].push_back(i);
      mark_length(prefix_lengths, m.path_prefix.size());
    } else {
      any.push_back(i);
    }
  }

  // Once every route is added: moves the routes of `any` whose first header name is shared by
  // enough of them into by_header (in order, so every list stays ascending).
  void index_headers(const std::vector<config::Route>& routes) {
    RouteKeyMap<size_t> count;
    for (uint32_t i : any)
      if (const auto& h = routes[i].match.headers; !h.empty()) ++count[h.front().first];
    RouteKeyMap<size_t> slot;
    RouteList rest;
    for (uint32_t i : any) {
      const auto& h = routes[i].match.headers;
      if (h.empty() || count[h.front().first] < kHeaderIndexFrom) {
        rest.push_back(i);
        continue;
      }
      auto [at, added] = slot.try_emplace(h.front().first, by_header.size());
      if (added) by_header.push_back({h.front().first, {}});
      by_header[at->second].by_value[h.front().second].push_back(i);
    }
    any = std::move(rest);
  }
};

struct RouteHostGroups {
  RouteKeyMap<RoutePathGroup> exact;     // `host: name`
  RouteKeyMap<RoutePathGroup> wildcard;  // `host: "*.suffix"`, keyed by ".suffix"
  std::vector<bool> wildcard_lengths;
  RoutePathGroup any;  // no `host`
};
}  // namespace

struct RouteTable::Index {
  RouteKeyMap<RouteHostGroups> by_listener;
};

bool path_prefix_matches(std::string_view prefix, std::string_view path) {
  if (path.compare(0, prefix.size(), prefix) != 0) return false;
  if (path.size() == prefix.size() || prefix.back() == '/') return true;
  return path[prefix.size()] == '/';
}

bool host_matches(std::string_view pattern, std::string_view host) {
  host = comparable_host(host);
  if (pattern.rfind("*.", 0) == 0) {
    auto suffix = pattern.substr(1);  // ".example.com"
    return host.size() > suffix.size() && iequals(host.substr(host.size() - suffix.size()), suffix);
  }
  return iequals(host, pattern);
}

RouteTable::RouteTable(std::vector<config::Route> routes) : routes_(std::move(routes)) {
  if (routes_.size() <= kIndexFrom) return;
  auto index = std::make_unique<Index>();
  for (size_t i = 0; i < routes_.size(); ++i) {
    const auto& m = routes_[i].match;
    RouteHostGroups& hosts = index->by_listener[m.listener_service];
    RoutePathGroup* group = &hosts.any;
    if (m.host.rfind("*.", 0) == 0) {
      group = &hosts.wildcard[m.host.substr(1)];
      mark_length(hosts.wildcard_lengths, m.host.size() - 1);
    } else if (!m.host.empty()) {
      group = &hosts.exact[m.host];
    }
    group->add(static_cast<uint32_t>(i), m);
  }
  for (auto& [listener, hosts] : index->by_listener) {
    hosts.any.index_headers(routes_);
    for (auto& [name, group] : hosts.exact) group.index_headers(routes_);
    for (auto& [suffix, group] : hosts.wildcard) group.index_headers(routes_);
  }
  index_ = std::move(index);
}

RouteTable::~RouteTable() = default;
RouteTable::RouteTable(RouteTable&&) noexcept = default;
RouteTable& RouteTable::operator=(RouteTable&&) noexcept = default;

bool RouteTable::matches(size_t i, const RouteRequest& r) const {
  const auto& m = routes_[i].match;
  if (m.listener_service != r.listener_service) return false;
  if (!m.host.empty() && !host_matches(m.host, r.host)) return false;
  if (!m.path.empty() && r.path != m.path) return false;
  if (!m.path_prefix.empty() && !path_prefix_matches(m.path_prefix, r.path)) return false;
  if (!m.methods.empty() && std::find(m.methods.begin(), m.methods.end(), r.method) == m.methods.end()) return false;
  for (const auto& [name, value] : m.headers) {
    const std::string_view* v = r.header ? r.header(r.context, name) : nullptr;
    if (!v || *v != value) return false;
  }
  return true;
}

int RouteTable::match_by_scan(const RouteRequest& r) const {
  for (size_t i = 0; i < routes_.size(); ++i)
    if (matches(i, r)) return static_cast<int>(i);
  return -1;
}

int RouteTable::match(const RouteRequest& r) const {
  if (!index_) return match_by_scan(r);
  auto listener = index_->by_listener.find(r.listener_service);
  if (listener == index_->by_listener.end()) return -1;
  const RouteHostGroups& hosts = listener->second;

  // Host patterns are lower-case, so the host is looked up lower-cased (host_matches() compares
  // case-insensitively). The request parser refuses names over 255 bytes; a longer one given to
  // the table some other way is lower-cased on the heap, still looked up, not scanned.
  const std::string_view host = comparable_host(r.host);
  char short_host[256];
  std::string long_host;
  char* lower = short_host;
  if (host.size() > sizeof short_host) {
    long_host.resize(host.size());
    lower = long_host.data();
  }
  for (size_t i = 0; i < host.size(); ++i) {
    const char c = host[i];
    lower[i] = c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c;
  }
  const std::string_view h(lower, host.size());

  // The candidate lists: each ascending, each route in exactly one list of the whole index.
  constexpr size_t kMaxLists = 64;
  const RouteList* lists[kMaxLists];
  size_t next[kMaxLists];
  size_t n = 0;
  bool too_many = false;
  auto add_list = [&](const RouteList& list) {
    if (list.empty()) return;
    if (n == kMaxLists) {
      too_many = true;
      return;
    }
    lists[n] = &list;
    next[n++] = 0;
  };
  const std::string_view path = r.path;
  auto add_group = [&](const RoutePathGroup& g) {
    if (!g.exact.empty())
      if (auto it = g.exact.find(path); it != g.exact.end()) add_list(it->second);
    // A prefix of `len` bytes can match (path_prefix_matches) when it is the path's start and is
    // the whole path, ends with '/', or is followed by '/'.
    const size_t longest = std::min(path.size(), g.prefix_lengths.empty() ? 0 : g.prefix_lengths.size() - 1);
    for (size_t len = 1; len <= longest; ++len) {
      if (!g.prefix_lengths[len]) continue;
      if (len != path.size() && path[len - 1] != '/' && path[len] != '/') continue;
      if (auto it = g.prefix.find(path.substr(0, len)); it != g.prefix.end()) add_list(it->second);
    }
    for (const auto& indexed : g.by_header) {
      const std::string_view* value = r.header ? r.header(r.context, indexed.name) : nullptr;
      if (!value) continue;
      if (auto it = indexed.by_value.find(*value); it != indexed.by_value.end()) add_list(it->second);
    }
    add_list(g.any);
  };
  if (!hosts.exact.empty())
    if (auto it = hosts.exact.find(h); it != hosts.exact.end()) add_group(it->second);
  // "*.example.com" (key ".example.com") matches names that end with the key and are longer.
  for (size_t i = 1; i < h.size() && !hosts.wildcard.empty(); ++i) {
    if (h[i] != '.' || h.size() - i >= hosts.wildcard_lengths.size() || !hosts.wildcard_lengths[h.size() - i]) continue;
    if (auto it = hosts.wildcard.find(h.substr(i)); it != hosts.wildcard.end()) add_group(it->second);
  }
  add_group(hosts.any);
  if (too_many) return match_by_scan(r);

  // Merge the lists in route order; the first candidate that matches in full wins.
  for (;;) {
    size_t best = n;
    uint32_t best_route = UINT32_MAX;
    for (size_t k = 0; k < n; ++k) {
      if (next[k] < lists[k]->size() && (*lists[k])[next[k]] < best_route) {
        best_route = (*lists[k])[next[k]];
        best = k;
      }
    }
    if (best == n) return -1;
    ++next[best];
    if (matches(best_route, r)) return static_cast<int>(best_route);
  }
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
