// The remote registry feed (see registry_feed.h): one blocking query per service against
// /v1/health/service/NAME, as any Consul client would follow it. A registry that cannot be
// reached leaves the last known endpoints in place (stale routing beats no routing) and is
// retried with backoff.
#include <utility>  // before Asio: Boost 1.74 awaitable.hpp uses std::exchange without including it
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <map>
#include <set>

#include "common/event_loop.h"
#include "gateway/gateway.h"
#include "gateway/registry_feed.h"
#include "common/metrics.h"
#include "http/address.h"
#include "http/server.h"

namespace flotilla::gateway {

namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// How long one blocking query may wait at the registry. Short enough that a registry that stops
// answering (hung, or a connection a middlebox dropped without a word) is noticed within about
// a minute and a quarter (the wait, the registry's jitter of up to wait/16, and some slack); the
// TCP keepalive below notices a peer that is gone sooner.
constexpr auto kFollowWait = 60s;
constexpr auto kFollowDeadline = kFollowWait + kFollowWait / 16 + 10s;

// Keepalive probes after 10 s of silence, 5 s apart, 3 unanswered: a registry host that went
// away, or a NAT or firewall that forgot the connection, ends the query in about 25 s instead
// of at its deadline.
void keep_alive(tcp::socket& s) {
  const int fd = s.native_handle();
  int on = 1, idle = 10, interval = 5, count = 3;
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}


// /v1/health/service/NAME's answer → usable endpoints. Throws on a malformed answer.
std::vector<EndpointSpec> parse_health(const std::string& body) {
  auto j = nlohmann::json::parse(body);
  if (!j.is_array()) throw std::runtime_error("expected a JSON array");
  std::vector<InstanceHealth> list;
  std::string node_address = "127.0.0.1";
  for (const auto& e : j) {
    const auto& svc = e.at("Service");
    InstanceHealth h;
    h.id = svc.at("ID").get<std::string>();
    h.address = svc.value("Address", "");
    if (h.address.empty() && e.contains("Node")) h.address = e["Node"].value("Address", "");
    // A port outside 1–65535 (another registry's bug) is no endpoint, not a wrapped one.
    const auto port = svc.contains("Port") && svc["Port"].is_number_integer() ? svc["Port"].get<int64_t>() : 0;
    h.port = port > 0 && port <= 65535 ? static_cast<uint16_t>(port) : 0;
    if (svc.contains("Weights") && svc["Weights"].is_object()) {
      h.weight_passing = svc["Weights"].value("Passing", 1);
      h.weight_warning = svc["Weights"].value("Warning", 1);
    }
    const char* status = "passing";
    if (e.contains("Checks"))
      for (const auto& c : e["Checks"]) {
        status = worse_status(status, c.value("Status", "critical"));
        const std::string sid = c.contains("ServiceID") && c["ServiceID"].is_string() ? c["ServiceID"].get<std::string>() : "";
        const std::string cid = c.contains("CheckID") && c["CheckID"].is_string() ? c["CheckID"].get<std::string>() : "";
        if (!sid.empty() && cid.rfind("_service_maintenance:", 0) != 0) h.checked = true;
      }
    h.status = status;
    list.push_back(std::move(h));
  }
  return usable_endpoints(list, node_address);
}
}  // namespace

struct RemoteRegistryFeed::Impl : std::enable_shared_from_this<RemoteRegistryFeed::Impl> {
  Impl(EventLoop& l, std::string h, std::string p, std::string t, Gateway& g)
      : loop(l),
        host(std::move(h)),
        port(std::move(p)),
        token(std::move(t)),
        where(host.find(':') != std::string::npos ? "[" + host + "]:" + port : host + ":" + port),
        gateway(g) {}
  EventLoop& loop;
  std::string host, port, token;
  const std::string where;  // host:port for messages ([v6]:port)
  Gateway& gateway;
  // One per service followed. stop() ends its blocking query or backoff at once.
  struct Follower {
    bool stopped = false;
    bool synced = false;  // had its first answer
    // Followed since (a service a reload added: its answer age counts from then, not the start).
    const std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point answered{};  // its last answer (none: epoch)
    std::set<std::string> checked_host;  // "instance@address" looked at by check_own_host
    beast::tcp_stream* stream = nullptr;  // the query in progress
    asio::steady_timer* timer = nullptr;  // the backoff in progress
    void stop() {
      stopped = true;
      if (stream) stream->cancel();
      if (timer) timer->cancel();
    }
  };
  std::map<std::string, std::shared_ptr<Follower>> followers;

  void follow(const std::set<std::string>& services) {
    for (auto it = followers.begin(); it != followers.end();) {
      if (services.count(it->first)) {
        ++it;
        continue;
      }
      it->second->stop();
      it = followers.erase(it);
    }
    for (const auto& s : services) {
      if (followers.count(s)) continue;
      auto f = std::make_shared<Follower>();
      followers[s] = f;
      asio::co_spawn(loop.io(), run(s, f), asio::detached);
    }
  }

  // An instance at one of this host's own addresses (loopback, or an interface's: a container
  // bridge such as docker0's 172.17.0.1 exists on many hosts) reached through a registry on
  // another host: this gateway sends its requests to itself, not to the instance. Said once per
  // instance; the endpoint stays (a host may run the same service locally on purpose).
  // Each (instance, address) is looked at once: the host's addresses are read (getifaddrs, a
  // netlink dump) only when an answer brings one not seen before.
  void check_own_host(const std::string& service, Follower& f, const std::vector<EndpointSpec>& endpoints) {
    if (f.checked_host.size() > 100000) f.checked_host.clear();  // churn of instance IDs: start over
    std::vector<const EndpointSpec*> fresh;
    for (const auto& e : endpoints)
      if (f.checked_host.insert(e.instance_id + "@" + e.host).second) fresh.push_back(&e);
    if (fresh.empty()) return;
    const auto own = http::own_addresses();
    for (const auto* e : fresh) {
      boost::system::error_code ec;
      const auto address = asio::ip::make_address(e->host, ec);
      if (ec || (!address.is_loopback() && !own.count(address.to_string()))) continue;
      spdlog::warn("gateway: instance {} of service {} is at {}:{} (its Address, or its node's when it has none), "
                   "an address of this host, but the registry at {} is on another host: this gateway sends its "
                   "requests to itself (register the instance with an address other hosts reach it at; for one "
                   "registered without an Address, start its agent with --advertise IP)",
                   e->instance_id, service, e->host, e->port, where);
    }
  }

  asio::awaitable<void> run(std::string service, std::shared_ptr<Follower> f) {
    auto self = shared_from_this();
    uint64_t index = 0;
    auto backoff = 250ms;
    bool warned = false;
    bool warned_index = false;
    bool registry_here = true;  // the registry is on this host (loopback, or one of its addresses)
    while (!f->stopped) {
      const auto sent_at = std::chrono::steady_clock::now();
      const uint64_t sent_index = index;
      bool progressed = true;
      beast::error_code ec;
      std::string error;
      bool connected = false;  // a timeout before it: no connection; after it: no answer
      try {
        beast::tcp_stream stream(loop.io());
        f->stream = &stream;
        struct Forget {
          Follower& f;
          ~Forget() { f.stream = nullptr; }
        } forget{*f};
        tcp::resolver resolver(loop.io());
        auto results = co_await resolver.async_resolve(host, port, asio::use_awaitable);
        if (f->stopped) break;  // stop() could not cancel the lookup
        stream.expires_after(5s);
        co_await stream.async_connect(results, asio::use_awaitable);
        if (f->stopped) break;
        connected = true;
        keep_alive(stream.socket());
        {
          // To one of its own addresses, the kernel picks that address as the source.
          boost::system::error_code e1, e2;
          auto remote = stream.socket().remote_endpoint(e1).address();
          auto local = stream.socket().local_endpoint(e2).address();
          registry_here = e1 || e2 || remote.is_loopback() || remote == local;
        }
        std::string target = "/v1/health/service/" + service + "?index=" + std::to_string(index) +
                             "&wait=" + std::to_string(kFollowWait.count()) + "s";
        beast::http::request<beast::http::empty_body> req{beast::http::verb::get, target, 11};
        req.set(beast::http::field::host, where);
        req.set(beast::http::field::user_agent, "flotilla-gateway");
        if (!token.empty()) req.set("X-Consul-Token", token);
        co_await beast::http::async_write(stream, req, asio::use_awaitable);
        stream.expires_after(kFollowDeadline);  // the server answers within wait + its jitter
        beast::flat_buffer buffer;
        beast::http::response_parser<beast::http::string_body> parser;
        parser.body_limit(64 * 1024 * 1024);
        co_await beast::http::async_read(stream, buffer, parser, asio::use_awaitable);
        if (f->stopped) break;
        auto& res = parser.get();
        if (res.result_int() != 200) {
          // One log line: the body's line ends and control bytes become spaces.
          std::string said = res.body().substr(0, 200);
          for (char& c : said)
            if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
          while (!said.empty() && said.back() == ' ') said.pop_back();
          error = "HTTP " + std::to_string(res.result_int()) + ": " + said;
        } else {
          auto endpoints = parse_health(res.body());
          if (!registry_here) check_own_host(service, *f, endpoints);
          uint64_t next = 0;
          auto h = res.find("X-Consul-Index");
          if (h != res.end()) next = std::strtoull(std::string(h->value()).c_str(), nullptr, 10);
          if (h == res.end() && !warned_index) {
            spdlog::warn("gateway: {} answers service {} without X-Consul-Index: polling it once a second", where,
                         service);
            warned_index = true;
          }
          // Consul's rules for following an index: reset when it goes backwards, never 0.
          index = next < index ? 0 : std::max<uint64_t>(next, 1);
          progressed = next > sent_index;
          gateway.set_endpoints(service, std::move(endpoints));
          f->synced = true;
          f->answered = std::chrono::steady_clock::now();
          backoff = 250ms;
          if (warned) spdlog::info("gateway: registry {} reachable again (service {})", where, service);
          warned = false;
        }
      } catch (const boost::system::system_error& e) {
        // Beast's "The socket was closed due to a timeout" says neither which wait ran out.
        const auto deadline_s = std::chrono::duration_cast<std::chrono::seconds>(kFollowDeadline).count();
        error = e.code() != beast::error::timeout ? e.what()
                : connected ? "no answer within " + std::to_string(deadline_s) + " s"
                            : "no connection within 5 s";
      } catch (const std::exception& e) {
        error = e.what();
      }
      if (f->stopped) break;
      if (error.empty()) {
        // An answer that did not move the index past the one asked with, sooner than a second:
        // the registry is not blocking (no index, an index gone backwards, a proxy in between).
        // Ask again no more than once a second, as Consul asks of its clients.
        auto since = std::chrono::steady_clock::now() - sent_at;
        // An index that moves on every answer at once (a registry or proxy that never blocks
        // while its index runs on) is asked no more than 20 times a second: a change still
        // arrives within 50 ms.
        const auto pause = !progressed ? 1000ms : 50ms;
        if (since < pause) {
          asio::steady_timer t(loop.io(), pause - since);
          f->timer = &t;
          co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
          f->timer = nullptr;
        }
        continue;
      }
      if (!warned) {
        if (f->synced)
          spdlog::warn("gateway: following service {} at {} failed ({}); keeping its last known endpoints, retrying",
                       service, where, error);
        else
          spdlog::warn("gateway: following service {} at {} failed ({}); no endpoints known for it yet (its "
                       "routes answer 503), retrying",
                       service, where, error);
        warned = true;
      }
      asio::steady_timer t(loop.io(), backoff);
      f->timer = &t;
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      f->timer = nullptr;
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, 5s);
      index = 0;
    }
  }
};

RemoteRegistryFeed::RemoteRegistryFeed(EventLoop& loop, std::string url, std::string token, Gateway& gateway) {
  const std::string usage = "--registry \"" + url + "\" must be http://HOST:PORT, such as http://127.0.0.1:7700";
  std::string hp = url;
  if (hp.rfind("http://", 0) == 0) {
    hp = hp.substr(7);
  } else if (hp.find("://") != std::string::npos) {
    // https:// would otherwise be read as a host named "https" and retried forever.
    throw std::runtime_error(usage + " (the agent's API speaks plain HTTP; put a TLS proxy in front if it must cross an untrusted network)");
  } else {
    throw std::runtime_error(usage);
  }
  while (!hp.empty() && hp.back() == '/') hp.pop_back();
  std::string host;
  uint16_t port;
  if (hp.find_first_of("/?#@ \t") != std::string::npos || !http::split_host_port(hp, host, port) || port == 0)
    throw std::runtime_error(usage);
  impl_ = std::make_shared<Impl>(loop, host, std::to_string(port), std::move(token), gateway);
}

RemoteRegistryFeed::~RemoteRegistryFeed() { impl_->follow({}); }

void RemoteRegistryFeed::start() { impl_->follow(impl_->gateway.services()); }

void RemoteRegistryFeed::follow(const std::set<std::string>& services) { impl_->follow(services); }

void RemoteRegistryFeed::register_metrics(metrics::Registry& registry) {
  std::weak_ptr<Impl> weak = impl_;
  registry.gauge_callback(
      "flotilla_gateway_registry_answer_age_seconds",
      "Seconds since the registry last answered about the followed service it answered longest ago "
      "(blocking queries return within about 64 s; more means routing on endpoints that may be old).",
      {}, [weak] {
        auto im = weak.lock();
        if (!im) return 0.0;
        const auto now = std::chrono::steady_clock::now();
        std::chrono::steady_clock::duration oldest{};
        for (const auto& [service, f] : im->followers) {
          const auto since = f->answered == std::chrono::steady_clock::time_point{} ? f->since : f->answered;
          oldest = std::max(oldest, now - since);
        }
        return std::chrono::duration<double>(oldest).count();
      });
}

bool RemoteRegistryFeed::synced() const {
  for (const auto& [s, f] : impl_->followers)
    if (!f->synced) return false;
  return true;
}

std::vector<std::string> RemoteRegistryFeed::unsynced() const {
  std::vector<std::string> out;
  for (const auto& [s, f] : impl_->followers)
    if (!f->synced) out.push_back(s);
  return out;
}

bool RemoteRegistryFeed::synced(const std::set<std::string>& services) const {
  for (const auto& s : services)
    if (auto it = impl_->followers.find(s); it != impl_->followers.end() && !it->second->synced) return false;
  return true;
}

}  // namespace flotilla::gateway
