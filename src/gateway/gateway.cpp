#include "gateway/gateway.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <tuple>

#include "common/metrics.h"
#include "gateway/access_log.h"
#include "gateway/resilience/outlier.h"
#include "gateway/resilience/rate_limiter.h"
#include "gateway/worker.h"
#include "http/server.h"

namespace flotilla::gateway {

HashOn parse_hash_on(const std::string& text) {
  HashOn h;
  if (text == "client_ip") h.source = HashOn::Source::client_ip;
  else if (text == "path") h.source = HashOn::Source::path;
  else if (text.rfind("header:", 0) == 0) {
    h.source = HashOn::Source::header;
    h.name = text.substr(7);
    std::transform(h.name.begin(), h.name.end(), h.name.begin(), [](unsigned char c) { return std::tolower(c); });
  } else if (text.rfind("cookie:", 0) == 0) {
    h.source = HashOn::Source::cookie;
    h.name = text.substr(7);
  }
  return h;
}

const char* worse_status(const char* so_far, const std::string& check) {
  auto rank = [](std::string_view s) { return s == "passing" ? 0 : s == "warning" ? 1 : 2; };
  return rank(check) > rank(so_far) ? (check == "warning" ? "warning" : "critical") : so_far;
}

std::vector<EndpointSpec> usable_endpoints(const std::vector<InstanceHealth>& instances,
                                           const std::string& node_address) {
  std::vector<EndpointSpec> out;
  for (const auto& i : instances) {
    int weight = i.status == "passing" ? i.weight_passing : i.status == "warning" ? i.weight_warning : 0;
    if (weight <= 0 || i.port == 0) continue;
    std::string host = i.address.empty() ? node_address : i.address;
    if (host == "localhost") host = "127.0.0.1";
    if (!host.empty() && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    boost::system::error_code ec;
    asio::ip::make_address(host, ec);
    if (ec) {
      // Resolving names would block the control thread; instances register with addresses.
      // Said once per instance and address (this runs on every change of the service): otherwise
      // the only sign would be a 503 for a service whose instance looks healthy.
      static std::mutex warned_mu;
      static std::set<std::string> warned;
      std::lock_guard lock(warned_mu);
      if (warned.size() > 10000) warned.clear();
      if (warned.insert(i.id + '\n' + host).second)
        spdlog::warn("gateway: instance {} has address \"{}\", a name, not an IP address: the gateway skips it "
                     "(register it with an IP address)", i.id, host);
      continue;
    }
    out.push_back({i.id, host, i.port, static_cast<uint32_t>(weight), i.checked});
  }
  std::sort(out.begin(), out.end(), [](const EndpointSpec& a, const EndpointSpec& b) { return a.instance_id < b.instance_id; });
  return out;
}

namespace {
// `routes` behind one route per service listener: a service's own listener sends every request
// to it (retries on the defaults).
std::vector<config::Route> with_listener_routes(const std::vector<std::string>& listeners,
                                                const std::vector<config::Route>& routes) {
  std::vector<config::Route> out;
  out.reserve(listeners.size() + routes.size());
  for (const auto& service : listeners) {
    config::Route r;
    r.service = service;
    r.match.listener_service = service;
    out.push_back(std::move(r));
  }
  out.insert(out.end(), routes.begin(), routes.end());
  return out;
}
}  // namespace

struct Gateway::Impl {
  Impl(config::File f, metrics::Registry& m) : file(std::move(f)), metrics(m) {}

  config::File file;
  metrics::Registry& metrics;
  WorkerShared shared;
  SnapshotSource source;
  std::unique_ptr<AccessLog> access_log;
  std::vector<std::unique_ptr<Worker>> workers;
  std::vector<uint16_t> ports;
  std::map<std::string, uint16_t> service_ports;
  uint64_t next_version = 0;
  // Live across snapshots.
  // By service, address and instance ID: a backend registered under two services is two
  // endpoints, each with its own in-flight count and outlier state (Envoy's hosts are per cluster
  // too); another instance at an address (a restarted process registered again under a new ID, on
  // a reused port) starts afresh, and two registrations sharing one address keep one state each.
  using StateKey = std::tuple<std::string, std::string, std::string>;  // service, address, instance ID
  std::map<StateKey, std::weak_ptr<EndpointState>> endpoint_states;
  // Endpoints that left their service's endpoints (maintenance, a failing check, deregistered)
  // keep their state for kKeepDeparted, and while still ejected: one that comes back (the same
  // instance ID at the same address) comes back with its outlier state and counters, so a
  // flapping instance is neither let in again unjudged nor forgiven its ejections.
  static constexpr int64_t kKeepDeparted = 600'000'000'000;  // 10 min
  struct Departed {
    std::shared_ptr<EndpointState> state;
    int64_t since = 0;
  };
  std::map<StateKey, Departed> departed;
  std::map<std::string, std::shared_ptr<ClusterShared>> cluster_shared;  // by service
  std::map<std::string, std::vector<EndpointSpec>> endpoints;            // by service, as last set
  std::map<std::string, std::shared_ptr<const Cluster>> clusters;        // by service
  std::vector<RouteInfo> route_info;
  TrustedProxies trusted;  // gateway.trusted_proxies, parsed once per file (publish runs per endpoint change)
  std::shared_ptr<const RouteTable> routes;

  std::shared_ptr<ClusterShared> shared_for(const std::string& service) {
    auto& cs = cluster_shared[service];
    if (cs) return cs;
    cs = std::make_shared<ClusterShared>(service);
    metrics::Labels l{{"service", service}};
    auto& m = cs->metrics;
    m.in_flight = &metrics.gauge("flotilla_gateway_upstream_requests_in_flight", "Requests in flight to a service.", l);
    m.connections = &metrics.gauge("flotilla_gateway_upstream_connections", "Open upstream connections to a service.", l);
    m.retries = &metrics.counter("flotilla_gateway_retries_total", "Retries made, by service.", l);
    m.ejections = &metrics.counter("flotilla_gateway_ejections_total", "Endpoints ejected by outlier detection.", l);
    m.connect_failures =
        &metrics.counter("flotilla_gateway_upstream_connect_failures_total", "Failed connects to a service's endpoints.", l);
    m.stale_connections = &metrics.counter(
        "flotilla_gateway_upstream_stale_connections_total",
        "Pooled connections the service had closed, found on reuse; the request was sent again (not a retry).", l);
    const char* over = "flotilla_gateway_overloaded_total";
    const char* over_help = "Requests answered 503 at once by a circuit breaker, by the limit that was full.";
    m.overloaded_connections = &metrics.counter(over, over_help, {{"service", service}, {"limit", "max_connections"}});
    m.overloaded_pending = &metrics.counter(over, over_help, {{"service", service}, {"limit", "max_pending_requests"}});
    m.overloaded_requests = &metrics.counter(over, over_help, {{"service", service}, {"limit", "max_requests"}});
    m.retry_budget_exhausted = &metrics.counter("flotilla_gateway_retry_budget_exhausted_total",
                                                "Retries not made because the retry budget was spent.", l);
    // Scraped on the control thread, where `clusters` lives.
    metrics.gauge_callback("flotilla_gateway_ejected_endpoints", "Endpoints of a service ejected right now.", l,
                           [this, service] {
                             auto it = clusters.find(service);
                             if (it == clusters.end()) return 0.0;
                             return static_cast<double>(
                                 resilience::OutlierDetector::ejected_count(it->second->endpoints, now_ns()));
                           });
    return cs;
  }

  std::shared_ptr<const Cluster> build_cluster(const std::string& service) {
    auto c = std::make_shared<Cluster>();
    c->name = service;
    c->version = ++next_version;
    const config::ServiceSection* s = file.service(service);
    config::ServiceSection defaults;
    if (!s) s = &defaults;
    c->policy = lb::parse_policy(s->load_balancer).value_or(lb::Policy::round_robin);
    c->hash_on = parse_hash_on(s->hash_on);
    c->limits = s->circuit_breaker;
    c->outlier = s->outlier_detection;
    c->shared = shared_for(service);
    c->shared->connection_limit.store(c->limits.max_connections, std::memory_order_relaxed);
    const int64_t now = now_ns();
    for (auto it = departed.begin(); it != departed.end();)
      it = now - it->second.since > kKeepDeparted && !resilience::OutlierDetector::ejected(*it->second.state, now)
               ? departed.erase(it)
               : std::next(it);
    auto address_of = [](const EndpointSpec& e) {
      return e.host.find(':') != std::string::npos ? "[" + e.host + "]:" + std::to_string(e.port)
                                                  : e.host + ":" + std::to_string(e.port);
    };
    std::set<StateKey> staying;
    for (const auto& e : endpoints[service]) staying.emplace(service, address_of(e), e.instance_id);
    if (auto old = clusters.find(service); old != clusters.end())
      for (const auto& oe : old->second->endpoints)
        if (StateKey k{service, oe.state->address, oe.instance_id}; !staying.count(k)) departed[k] = {oe.state, now};
    for (const auto& e : endpoints[service]) {
      std::string address = address_of(e);
      const StateKey key{service, address, e.instance_id};
      std::shared_ptr<EndpointState> state;
      bool returned = false;
      if (auto d = departed.find(key); d != departed.end()) {
        state = d->second.state;
        returned = true;
        departed.erase(d);
      }
      auto& weak = endpoint_states[key];
      if (!state) state = weak.lock();
      if (!state) state = std::make_shared<EndpointState>(address);
      weak = state;
      if (returned && e.checked) {
        // Back because its checks pass again: the registry's checks are this gateway's active
        // health checks, and a passing one ends an ejection (times_ejected stays, so a relapse is
        // ejected for longer; its decay counts from now).
        int64_t until = state->ejected_until_ns.load();
        if (until > now && state->ejected_until_ns.compare_exchange_strong(until, now))
          spdlog::info("gateway: {} ({} of {}) is back with passing checks: its outlier ejection ends", address,
                       e.instance_id, service);
      }
      c->endpoints.push_back({e.instance_id, e.host, e.port, std::max<uint32_t>(1, e.weight), state});
    }
    c->lb_table = lb::build_table(c->policy, c->endpoints);
    return c;
  }

  // The compiled extras of `routes`. A route also in `old` (the same definition, anywhere in
  // the list) keeps its rate-limit buckets, so editing one route does not reset the others'.
  std::vector<RouteInfo> build_route_info(const std::vector<config::Route>& routes, const std::vector<config::Route>& old,
                                          const std::vector<RouteInfo>& old_info) {
    std::vector<bool> taken(old.size(), false);
    std::vector<RouteInfo> out;
    for (size_t i = 0; i < routes.size(); ++i) {
      const auto& r = routes[i];
      RouteInfo ri;
      ri.service = r.service;
      ri.label = r.name.empty() ? std::to_string(i) + ":" + r.service : r.name;
      ri.retry_on = resilience::parse_retry_on(r.retry ? r.retry->on : config::RetryPolicy{}.on);
      metrics::Labels base{{"route", ri.label}, {"service", r.service}};
      for (int cls = 1; cls <= 5; ++cls) {
        auto l = base;
        l.emplace_back("code", std::to_string(cls) + "xx");
        ri.metrics.by_class[cls] = &metrics.counter("flotilla_gateway_requests_total",
                                                    "Requests answered, by route, service and status class.", l);
      }
      ri.metrics.duration = &metrics.histogram("flotilla_gateway_request_duration_seconds",
                                               "Time from a request's head to the end of its answer's head write.",
                                               metrics::latency_buckets(), base);
      if (r.rate_limit) {
        for (size_t j = 0; j < old.size() && j < old_info.size() && !ri.limiter; ++j)
          if (!taken[j] && old[j].same_as(r) && old_info[j].limiter) {
            taken[j] = true;
            ri.limiter = old_info[j].limiter;
          }
        if (!ri.limiter)
          ri.limiter = std::make_shared<resilience::RateLimiter>(
              r.rate_limit->requests_per_second,
              r.rate_limit->burst > 0 ? r.rate_limit->burst : r.rate_limit->requests_per_second);
        if (r.rate_limit->key == "route") ri.limit_key = RouteInfo::LimitKey::route;
        else if (r.rate_limit->key.rfind("header:", 0) == 0) {
          ri.limit_key = RouteInfo::LimitKey::header;
          ri.limit_header = r.rate_limit->key.substr(7);
          std::transform(ri.limit_header.begin(), ri.limit_header.end(), ri.limit_header.begin(),
                         [](unsigned char c) { return std::tolower(c); });
        }
        ri.metrics.rate_limited = &metrics.counter("flotilla_gateway_rate_limited_total",
                                                   "Requests answered 429 by a route's rate limit.", base);
      }
      out.push_back(std::move(ri));
    }
    return out;
  }

  static TrustedProxies trusted_proxies_of(const config::GatewaySection& g) {
    std::vector<Cidr> blocks;
    for (const auto& text : g.trusted_proxies)
      if (auto b = parse_cidr(text)) blocks.push_back(*b);  // the reader refused any other
    return TrustedProxies(std::move(blocks));
  }

  void publish() {
    auto snap = std::make_shared<Snapshot>();
    snap->version = ++next_version;
    snap->routes = routes;
    snap->route_info = route_info;
    snap->trusted_proxies = trusted;
    for (const auto& [name, c] : clusters) snap->clusters.emplace(name, c);
    source.publish(std::move(snap));
    // Forget states no snapshot holds.
    for (auto it = endpoint_states.begin(); it != endpoint_states.end();)
      it = it->second.expired() ? endpoint_states.erase(it) : std::next(it);
  }
};

Gateway::Gateway(config::File file, metrics::Registry& metrics) : impl_(std::make_unique<Impl>(std::move(file), metrics)) {
  auto& im = *impl_;
  if (!im.file.gateway) im.file.gateway = config::GatewaySection{};
  const auto& g = *im.file.gateway;
  im.shared.config = g;
  im.shared.config.routes.clear();  // the snapshots hold them
  im.shared.source = &im.source;
  auto& gm = im.shared.metrics;
  gm.connections = &metrics.gauge("flotilla_gateway_downstream_connections", "Open client connections.");
  gm.connections_total = &metrics.counter("flotilla_gateway_downstream_connections_total", "Client connections accepted.");
  gm.connections_rejected = &metrics.counter("flotilla_gateway_downstream_connections_rejected_total",
                                             "Client connections closed at once: the worker's max_connections was reached.");
  gm.connections_handed_over = &metrics.counter(
      "flotilla_gateway_downstream_connections_handed_over_total",
      "Client connections accepted by one worker and handed to a less loaded one (connection balancing).");
  gm.no_route = &metrics.counter("flotilla_gateway_no_route_total", "Requests no route matched (404).");
  gm.no_endpoint = &metrics.counter("flotilla_gateway_no_healthy_endpoint_total",
                                    "Requests for a service without a healthy instance (503).");
  for (int cls = 4; cls <= 5; ++cls)
    gm.refused[cls] = &metrics.counter("flotilla_gateway_refused_requests_total",
                                       "Requests refused before reaching a service (malformed, too large, too slow).",
                                       {{"code", std::to_string(cls) + "xx"}});
  gm.upstream_timeouts = &metrics.counter("flotilla_gateway_upstream_timeouts_total", "Tries that timed out.");
  gm.upstream_resets = &metrics.counter("flotilla_gateway_upstream_resets_total",
                                        "Tries whose upstream connection closed before a full answer.");
  if (!g.access_log.empty()) {
    im.access_log = std::make_unique<AccessLog>(
        g.access_log, &metrics.counter("flotilla_gateway_access_log_lost_lines_total",
                                       "Access log lines lost: the writer fell 16 MiB behind, or a write failed "
                                       "(a full disk)."));
    im.shared.access_log = im.access_log.get();
  }
  im.file.gateway->routes = with_listener_routes(g.service_listeners, im.file.gateway->routes);
  const auto& routes = im.file.gateway->routes;
  im.routes = std::make_shared<RouteTable>(routes);
  im.route_info = im.build_route_info(routes, {}, {});
  im.trusted = Impl::trusted_proxies_of(*im.file.gateway);
  for (const auto& s : services()) im.clusters[s] = im.build_cluster(s);
  im.publish();
  int n = g.workers > 0 ? g.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 0; i < n; ++i) im.workers.push_back(std::make_unique<Worker>(i, im.shared));
  for (auto& w : im.workers) im.shared.workers.push_back(w.get());
}

Gateway::~Gateway() {
  for (auto& w : impl_->workers) w->stop_and_join();
  impl_->workers.clear();
}

void Gateway::listen() {
  auto& im = *impl_;
  for (const auto& address : im.file.gateway->listen) {
    uint16_t port = 0;
    for (auto& w : im.workers) port = w->listen(address, port);
    im.ports.push_back(port);
  }
  for (const auto& service : im.file.gateway->service_listeners) {
    uint16_t port = 0;
    for (auto& w : im.workers) port = w->listen("127.0.0.1:0", port, service);
    im.service_ports[service] = port;
  }
}

uint16_t Gateway::add_service_listener(const std::string& service) {
  auto& im = *impl_;
  if (auto it = im.service_ports.find(service); it != im.service_ports.end()) return it->second;
  // Every worker's socket first (the first one picks the port), then hand them over: a failure
  // leaves no worker with a listener the others lack.
  std::vector<UniqueFd> fds;
  uint16_t port = 0;
  for (size_t i = 0; i < im.workers.size(); ++i) {
    fds.push_back(open_listening_socket(tcp::endpoint(asio::ip::address_v4::loopback(), port)));
    if (port == 0) {
      sockaddr_in a{};
      socklen_t len = sizeof a;
      if (::getsockname(fds.back().get(), reinterpret_cast<sockaddr*>(&a), &len) != 0)
        throw std::runtime_error(std::string("gateway: getsockname: ") + std::strerror(errno));
      port = ntohs(a.sin_port);
    }
  }
  im.shared.listeners.push_back({service, tcp::v4()});
  for (size_t i = 0; i < im.workers.size(); ++i) im.workers[i]->add_listener(std::move(fds[i]), &im.shared.listeners.back());
  im.service_ports[service] = port;
  return port;
}

uint16_t Gateway::service_port(const std::string& service) const {
  auto it = impl_->service_ports.find(service);
  return it == impl_->service_ports.end() ? 0 : it->second;
}

EndpointLoad Gateway::endpoint_load(const std::string& service, const std::string& address,
                                    const std::string& instance_id) const {
  EndpointLoad out;
  auto it = impl_->endpoint_states.find({service, address, instance_id});
  if (it == impl_->endpoint_states.end()) return out;
  auto s = it->second.lock();
  if (!s) return out;
  out.known = true;
  out.active = s->active.load(std::memory_order_relaxed);
  out.requests = s->requests_total.load(std::memory_order_relaxed);
  out.failures = s->failures_total.load(std::memory_order_relaxed);
  out.ejections = s->ejections_total.load(std::memory_order_relaxed);
  for (size_t i = 0; i < out.latency.size(); ++i) out.latency[i] = s->latency[i].load(std::memory_order_relaxed);
  return out;
}

double EndpointLoad::quantile_ms(const std::array<uint64_t, kBuckets>& counts, double q) {
  uint64_t total = 0;
  for (auto c : counts) total += c;
  if (total == 0) return 0;
  const double rank = q * static_cast<double>(total);
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] == 0) continue;
    const double lower = i == 0 ? 0 : EndpointState::kLatencyBoundsMs[i - 1];
    const double upper = i < EndpointState::kLatencyBoundsMs.size() ? EndpointState::kLatencyBoundsMs[i] : lower * 2;
    if (static_cast<double>(seen + counts[i]) >= rank) {
      // Linear within the bucket, as Prometheus' histogram_quantile.
      return lower + (upper - lower) * (rank - static_cast<double>(seen)) / static_cast<double>(counts[i]);
    }
    seen += counts[i];
  }
  return EndpointState::kLatencyBoundsMs.back();
}

void Gateway::start() {
  for (auto& w : impl_->workers) w->start();
}

void Gateway::stop(std::chrono::milliseconds grace) {
  auto& im = *impl_;
  im.shared.draining.store(true);
  for (auto& w : im.workers) w->drain();
  auto until = std::chrono::steady_clock::now() + grace;
  while (connections() > 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // Time is up: what is still in progress is cut (reset, logged), and given a moment to end on
  // its own coroutine before the workers stop.
  if (connections() > 0) {
    for (auto& w : im.workers) w->cut();
    auto cut_until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (connections() > 0 && std::chrono::steady_clock::now() < cut_until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (auto& w : im.workers) w->stop_and_join();
}

std::set<std::string> Gateway::services() const {
  std::set<std::string> out;
  for (const auto& r : impl_->file.gateway->routes) out.insert(r.service);
  return out;
}

std::set<std::string> Gateway::services_of(const config::File& file) {
  std::set<std::string> out;
  if (!file.gateway) return out;
  for (const auto& r : file.gateway->routes) out.insert(r.service);
  out.insert(file.gateway->service_listeners.begin(), file.gateway->service_listeners.end());
  return out;
}

namespace {
// The keys of a service that the gateway uses (its cluster settings).
bool same_cluster_settings(const config::ServiceSection* a, const config::ServiceSection* b) {
  const config::ServiceSection defaults;
  if (!a) a = &defaults;
  if (!b) b = &defaults;
  return a->load_balancer == b->load_balancer && a->hash_on == b->hash_on && a->circuit_breaker == b->circuit_breaker &&
         a->outlier_detection == b->outlier_detection;
}
}  // namespace

GatewayChange Gateway::reconfigure(config::File next) {
  auto& im = *impl_;
  const config::GatewaySection& now = *im.file.gateway;
  if (!next.gateway) {
    next.gateway = config::GatewaySection{};
    next.gateway->listen.clear();
  }
  config::GatewaySection& g = *next.gateway;
  GatewayChange out;
  out.routes = g.routes.size();
  // What only a restart can change keeps its running value.
  auto keep = [&out](const char* key, auto& field, const auto& running) {
    if (!(field == running)) out.restart_needed.push_back(key);
    field = running;
  };
  keep("gateway.listen", g.listen, now.listen);
  keep("gateway.workers", g.workers, now.workers);
  keep("gateway.max_connections", g.max_connections, now.max_connections);
  // A relative path was resolved against the file's directory as given (`-f flotilla.yaml` at
  // start, an absolute path from `flotilla up` again): the same file either way.
  auto log_path = [](const std::string& p) {
    return p.empty() || p == "off" || p == "stdout" || p == "stderr" ? p
                                                                        : std::filesystem::absolute(p).lexically_normal().string();
  };
  if (log_path(g.access_log) != log_path(now.access_log)) out.restart_needed.push_back("gateway.access_log");
  g.access_log = now.access_log;
  keep("gateway.timeouts", g.timeouts, now.timeouts);
  // A service's own listener opened while running (add_service_listener) joins the running
  // ones; one no longer depended on stays until a restart (its <NAME>_URL may still be in use).
  std::vector<std::string> listeners = now.service_listeners;
  for (const auto& s : g.service_listeners) {
    if (std::find(listeners.begin(), listeners.end(), s) != listeners.end()) continue;
    if (im.service_ports.count(s)) listeners.push_back(s);
    else out.restart_needed.push_back("depends_on: " + s + " (its own gateway listener)");
  }
  g.service_listeners = listeners;
  std::vector<config::Route> routes = with_listener_routes(listeners, g.routes);
  out.routes_changed = routes.size() != now.routes.size() ||
                       !std::equal(routes.begin(), routes.end(), now.routes.begin(),
                                   [](const config::Route& a, const config::Route& b) { return a.same_as(b); });
  const std::set<std::string> before = services();
  std::set<std::string> after;
  for (const auto& r : routes) after.insert(r.service);
  for (const auto& s : after) {
    if (!before.count(s)) out.services_added.push_back(s);
    else if (!same_cluster_settings(im.file.service(s), next.service(s))) out.services_changed.push_back(s);
  }
  for (const auto& s : before)
    if (!after.count(s)) out.services_removed.push_back(s);

  // By what the entries mean: 10.0.0.7 and 10.0.0.7/32 are one block.
  TrustedProxies trusted = Impl::trusted_proxies_of(g);
  out.trusted_proxies_changed = trusted.blocks() != im.trusted.blocks();
  auto route_info = im.build_route_info(routes, now.routes, im.route_info);
  g.routes = std::move(routes);
  im.file = std::move(next);
  im.routes = std::make_shared<RouteTable>(im.file.gateway->routes);
  im.route_info = std::move(route_info);
  im.trusted = std::move(trusted);
  for (const auto& s : out.services_removed) im.clusters.erase(s);
  // Endpoints kept for services no route uses (set while they were followed ahead of a change
  // that did not come, or before a route went away) would be stale if one came back.
  std::erase_if(im.endpoints, [&after](const auto& e) { return !after.count(e.first); });
  for (const auto& s : out.services_added) im.clusters[s] = im.build_cluster(s);
  for (const auto& s : out.services_changed) im.clusters[s] = im.build_cluster(s);
  im.publish();
  return out;
}

nlohmann::json GatewayChange::to_json() const {
  return {{"Routes", routes},
          {"RoutesChanged", routes_changed},
          {"ServicesAdded", services_added},
          {"ServicesRemoved", services_removed},
          {"ServicesChanged", services_changed},
          {"TrustedProxiesChanged", trusted_proxies_changed},
          {"RestartNeeded", restart_needed}};
}

std::string GatewayChange::summary() const {
  auto list = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
    return out;
  };
  std::string out = std::to_string(routes) + " route(s)" + (routes_changed ? " (changed)" : " (unchanged)");
  if (!services_added.empty()) out += "; now routing to " + list(services_added);
  if (!services_removed.empty()) out += "; no longer routing to " + list(services_removed);
  if (!services_changed.empty()) out += "; settings changed for " + list(services_changed);
  if (trusted_proxies_changed) out += "; trusted_proxies changed";
  if (!restart_needed.empty()) out += "; needs a restart to change " + list(restart_needed);
  return out;
}

void Gateway::set_endpoints(const std::string& service, std::vector<EndpointSpec> endpoints) {
  auto& im = *impl_;
  auto& current = im.endpoints[service];
  if (current == endpoints && im.clusters.count(service)) return;
  current = std::move(endpoints);
  spdlog::debug("gateway: service {} now has {} endpoint(s)", service, current.size());
  if (!services().count(service)) return;  // kept for when a route sends to it
  im.clusters[service] = im.build_cluster(service);
  im.publish();
}

std::vector<uint16_t> Gateway::ports() const { return impl_->ports; }
int Gateway::workers() const { return static_cast<int>(impl_->workers.size()); }

size_t Gateway::connections() const {
  size_t n = 0;
  for (const auto& w : impl_->workers) n += w->connections();
  return n;
}

void Gateway::reopen_logs() {
  if (impl_->access_log) impl_->access_log->reopen();
}

nlohmann::json Gateway::status() const {
  auto& im = *impl_;
  using nlohmann::json;
  json services = json::object();
  int64_t now = now_ns();
  for (const auto& [name, c] : im.clusters) {
    json eps = json::array();
    for (const auto& e : c->endpoints) {
      const auto& s = *e.state;
      int64_t until = s.ejected_until_ns.load(std::memory_order_relaxed);
      bool ejected = resilience::OutlierDetector::ejected(s, now);
      eps.push_back({{"ID", e.instance_id},
                     {"Address", s.address},
                     {"Weight", e.weight},
                     {"ActiveRequests", s.active.load(std::memory_order_relaxed)},
                     {"Connections", s.connections.load(std::memory_order_relaxed)},
                     {"Requests", s.requests_total.load(std::memory_order_relaxed)},
                     {"Failures", s.failures_total.load(std::memory_order_relaxed)},
                     {"ConsecutiveFailures", s.consecutive_failures.load(std::memory_order_relaxed)},
                     {"Ejected", ejected},
                     {"EjectedForSeconds", ejected ? static_cast<double>(until - now) / 1e9 : 0.0},
                     {"TimesEjected", s.times_ejected.load(std::memory_order_relaxed)},
                     {"Ejections", s.ejections_total.load(std::memory_order_relaxed)}});
    }
    const auto& od = c->outlier;
    services[name] = {{"LoadBalancer", std::string(lb::policy_name(c->policy))},
                      {"CircuitBreaker", {{"MaxConnections", c->limits.max_connections},
                                          {"MaxPendingRequests", c->limits.max_pending_requests},
                                          {"MaxRequests", c->limits.max_requests}}},
                      {"OutlierDetection", {{"ConsecutiveFailures", od.consecutive_failures},
                                            {"BaseEjectionTimeSeconds", std::chrono::duration<double>(od.base_ejection_time).count()},
                                            {"MaxEjectionTimeSeconds", std::chrono::duration<double>(od.max_ejection_time).count()},
                                            {"MaxEjectionPercent", od.max_ejection_percent}}},
                      {"Endpoints", eps},
                      {"ActiveRequests", c->shared->active.load(std::memory_order_relaxed)},
                      {"UpstreamConnections", c->shared->connections.load(std::memory_order_relaxed)},
                      {"IdleUpstreamConnections", c->shared->idle.load(std::memory_order_relaxed)}};
    if (const config::ServiceSection* sv = im.file.service(name); sv && !sv->hash_on.empty())
      services[name]["HashOn"] = sv->hash_on;
  }
  json listen = json::array();
  for (size_t i = 0; i < im.ports.size(); ++i) {
    std::string host;
    uint16_t port;
    http::split_host_port(im.file.gateway->listen[i], host, port);
    listen.push_back(host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(im.ports[i])
                                                         : host + ":" + std::to_string(im.ports[i]));
  }
  json per_worker = json::array();
  for (const auto& w : im.workers) per_worker.push_back(w->connections());
  // The routes in force, in the order they are tried; "Route" is their metrics label.
  json routes = json::array();
  for (size_t i = 0; i < im.routes->size(); ++i) {
    const config::Route& r = im.routes->route(static_cast<int>(i));
    json match = json::object();
    if (!r.match.listener_service.empty()) match["Listener"] = r.match.listener_service;
    if (!r.match.host.empty()) match["Host"] = r.match.host;
    if (!r.match.path_prefix.empty()) match["PathPrefix"] = r.match.path_prefix;
    if (!r.match.path.empty()) match["Path"] = r.match.path;
    if (!r.match.methods.empty()) match["Methods"] = r.match.methods;
    if (!r.match.headers.empty()) {
      json h = json::object();
      for (const auto& [name, value] : r.match.headers) h[name] = value;
      match["Headers"] = h;
    }
    json route = {{"Route", im.route_info[i].label}, {"Service", r.service}, {"Match", match},
                  {"TimeoutSeconds", std::chrono::duration<double>(r.timeout).count()}};
    if (r.line > 0) route["Line"] = r.line;
    if (r.strip_prefix) route["StripPrefix"] = true;
    if (r.idle_timeout) route["IdleTimeoutSeconds"] = std::chrono::duration<double>(*r.idle_timeout).count();
    {
      const config::RetryPolicy retry = r.retry.value_or(config::RetryPolicy{});  // what the route does
      route["Retry"] = {{"Attempts", retry.attempts}, {"On", retry.on},
                        {"PerTryTimeoutSeconds", std::chrono::duration<double>(retry.per_try_timeout).count()}};
    }
    route["MaxBodyBytes"] = r.max_body_bytes;
    route["OnClientClose"] = r.abort_on_client_close ? "abort" : "wait";
    if (r.rate_limit)
      route["RateLimit"] = {{"RequestsPerSecond", r.rate_limit->requests_per_second},
                            {"Burst", r.rate_limit->burst > 0 ? r.rate_limit->burst : r.rate_limit->requests_per_second},
                            {"Key", r.rate_limit->key}};
    routes.push_back(std::move(route));
  }
  json out = {{"Listen", listen},
              {"Workers", im.workers.size()},
              {"Connections", connections()},
              {"WorkerConnections", per_worker},
              {"Routes", routes},
              {"Services", services}};
  if (!im.file.gateway->trusted_proxies.empty()) out["TrustedProxies"] = im.file.gateway->trusted_proxies;
  return out;
}

}  // namespace flotilla::gateway
