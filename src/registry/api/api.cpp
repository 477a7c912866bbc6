#include "registry/api/api.h"
#include "http/token.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <map>

#include "common/duration.h"
#include "common/error.h"
#include "common/metrics.h"
#include "common/random.h"
#include "registry/api/decode.h"
#include "registry/api/encode.h"
#include "registry/api/endpoints.h"

namespace flotilla::registry::api {

using namespace std::chrono_literals;

namespace {
constexpr Duration kDefaultWait = 5min;
constexpr Duration kMaxWait = 10min;


void add_read_headers(http::Response& r, uint64_t index) {
  r.headers.emplace_back("X-Consul-Index", std::to_string(index));
  r.headers.emplace_back("X-Consul-KnownLeader", "true");
  r.headers.emplace_back("X-Consul-LastContact", "0");
}

http::Response to_response(QueryResult&& q) {
  http::Response r;
  r.status = q.status;
  r.body = std::move(q.body);
  r.content_type = q.content_type;
  add_read_headers(r, q.index);
  return r;
}
}  // namespace

QueryResult json_result(const nlohmann::json& j, uint64_t index) {
  QueryResult q;
  q.body = dump(j);
  q.index = index;
  return q;
}

void answer_write(const ExchangePtr& ex, const WriteResult& r, std::string body) {
  if (!r.ok) {
    ex->respond(http::Response::error(500, r.error));
    return;
  }
  ex->respond(http::Response::json(200, std::move(body)));
}

void serve_read(Context& ctx, const ExchangePtr& ex, std::vector<std::string> topics,
                std::function<QueryResult()> compute) {
  const auto& req = ex->request();
  auto index = uint_param(req, "index");
  Duration wait = kDefaultWait;
  if (const std::string* w = req.param("wait")) {
    auto d = parse_duration(*w);
    // Consul also takes a bare number of seconds here; anything above the cap is the cap.
    uint64_t seconds = 0;
    auto [end, ec] = std::from_chars(w->data(), w->data() + w->size(), seconds);
    if (!d && !w->empty() && end == w->data() + w->size() && (ec == std::errc() || ec == std::errc::result_out_of_range))
      d = ec == std::errc() && seconds < 3600 ? Duration(std::chrono::seconds(seconds)) : kMaxWait;
    if (!d || d->count() < 0) throw bad_request("query parameter wait must be a duration such as 30s", "wait");
    // 0 is "no wait given" to Consul (its blocking query falls back to the default wait), and
    // Consul clients send it when their wait option is unset: answering at once would turn
    // their watch into a busy loop.
    if (d->count() > 0) wait = std::min<Duration>(*d, kMaxWait);
  }
  QueryResult first = compute();
  if (!index || *index == 0 || first.index > *index || (first.status >= 400 && first.status != 404)) {
    ex->respond(to_response(std::move(first)));
    return;
  }
  // Jitter (up to wait/16, as Consul) spreads the answers of many watchers that started together.
  thread_local Random rng;
  auto jitter = wait.count() / 16 > 0 ? Duration(static_cast<int64_t>(rng() % static_cast<uint64_t>(wait.count() / 16)))
                                      : Duration::zero();
  // An index above every index this registry has given (from before a restore, or another
  // agent): no change can carry the result past it, and an early answer would have to make one
  // up, which the client would pass back and then miss the changes below it. As Consul does,
  // such a query waits for `wait` and gets the real, lower index, which tells the client to
  // start again from it.
  // (Parked on a topic no write names: the hub holds its waiters through their topics.)
  if (*index > ctx.registry.state().revision()) topics = {"index-from-the-future"};
  first.index = std::max(first.index, *index);
  // Queries that differ only in index, wait or token have the same result: one key, so a change
  // recomputes that result once however many clients wait on it.
  std::string key = req.path;
  for (const auto& [k, v] : req.query) {
    if (k == "index" || k == "wait" || k == "token" || k == "stale" || k == "consistent") continue;
    key += '\n' + k + '=' + v;
  }
  auto handle = ctx.registry.watches().park(
      std::move(key), std::move(topics), first, wait + jitter, std::move(compute),
      [weak = std::weak_ptr<http::Exchange>(ex)](QueryResult&& q) {
        if (auto e = weak.lock()) e->respond(to_response(std::move(q)));
      });
  auto& hub = ctx.registry.watches();
  ex->on_cancel([&hub, handle] { hub.cancel(handle); });
}

struct Api::Impl {
  Impl(Registry& r, health::Runner& h, metrics::Registry& m, ApiOptions o)
      : options(std::move(o)), ctx{r, h, m, options} {
    add_agent_routes(routes);
    add_catalog_routes(routes);
    add_kv_routes(routes);
    add_session_routes(routes);
  }

  metrics::Counter& counter(const std::string& method, int status) {
    auto key = method + " " + std::to_string(status);
    auto it = counters.find(key);
    if (it != counters.end()) return *it->second;
    auto& c = ctx.metrics.counter("flotilla_api_requests_total", "Agent API requests by method and status code.",
                                  {{"method", method}, {"code", std::to_string(status)}});
    counters.emplace(key, &c);
    return c;
  }

  bool authorized(const http::Request& req, bool write) const {
    return http::token_allows(req, options.token, options.protect_reads, write);
  }

  void dispatch(const ExchangePtr& ex) {
    const auto& req = ex->request();
    if (req.path == "/metrics" || req.path == "/v1/agent/metrics") {
      if (req.method != "GET" && req.method != "HEAD") {
        auto r = http::Response::error(405, "method " + req.method + " not allowed on " + req.path + "; use GET");
        r.headers.emplace_back("Allow", "GET");
        ex->respond(std::move(r));
        return;
      }
      const std::string* format = req.param("format");
      if (req.path != "/metrics" && (!format || *format != "prometheus"))
        throw bad_request("only ?format=prometheus is supported here (or GET /metrics)", "format");
      if (!authorized(req, false)) throw ApiError(403, http::token_refusal(req, false));
      http::Response r;
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      r.body = ctx.metrics.render();
      ex->respond(std::move(r));
      return;
    }
    bool path_matched = false;
    std::string allowed;
    for (const auto& route : routes) {
      std::string_view p = route.path;
      std::string rest;
      if (route.prefix) {
        if (req.path.compare(0, p.size(), p) != 0) continue;
        rest = req.path.substr(p.size());
      } else if (req.path != p) {
        continue;
      }
      path_matched = true;
      bool method_ok = req.method == route.method || (req.method == "HEAD" && std::string_view(route.method) == "GET") ||
                       (req.method == "POST" && std::string_view(route.method) == "PUT");
      if (!method_ok) {
        if (allowed.find(route.method) == std::string::npos) allowed += (allowed.empty() ? "" : ", ") + std::string(route.method);
        continue;
      }
      bool write = std::string_view(route.method) != "GET" || route.get_is_write;
      if (!authorized(req, write))
        throw ApiError(403, http::token_refusal(req, write));
      route.endpoint(ctx, ex, rest);
      return;
    }
    if (path_matched) {
      auto r = http::Response::error(405, "method " + req.method + " not allowed on " + req.path + "; use " + allowed);
      r.headers.emplace_back("Allow", allowed);
      ex->respond(std::move(r));
      return;
    }
    ex->respond(http::Response::error(404, "no such endpoint: " + req.path));
  }

  ApiOptions options;
  Context ctx;
  std::vector<Route> routes;
  std::map<std::string, metrics::Counter*> counters;
};

Api::Api(Registry& registry, health::Runner& health, metrics::Registry& metrics, ApiOptions options)
    : impl_(std::make_unique<Impl>(registry, health, metrics, std::move(options))) {}
Api::~Api() = default;

void Api::handle(const std::shared_ptr<http::Exchange>& ex) {
  // Count every answer, whenever it is given (blocking reads answer later).
  // Label by method, but only the known ones: a client must not be able to mint series.
  std::string method = ex->request().method;
  static const char* const kKnown[] = {"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"};
  if (std::find(std::begin(kKnown), std::end(kKnown), method) == std::end(kKnown)) method = "OTHER";
  ex->observe([impl = impl_.get(), method](const http::Response& r) {
    impl->counter(method, r.status).inc();
  });
  try {
    impl_->dispatch(ex);
  } catch (const ApiError& e) {
    ex->respond(http::Response::error(e.status(), e.what(), e.field()));
  } catch (const std::exception& e) {
    spdlog::error("{} {} failed: {}", ex->request().method, ex->request().path, e.what());
    ex->respond(http::Response::error(500, std::string("internal error: ") + e.what()));
  }
}

}  // namespace flotilla::registry::api
