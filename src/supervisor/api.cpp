#include "supervisor/api.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <ctime>

#include "common/error.h"
#include "common/event_loop.h"
#include "config/flotilla_file.h"
#include "http/token.h"
#include "supervisor/log_store.h"
#include "supervisor/supervisor.h"

namespace flotilla::supervisor {

using nlohmann::json;
using ExchangePtr = std::shared_ptr<http::Exchange>;

namespace {

constexpr std::string_view kPrefix = "/v1/flotilla/";
constexpr Duration kMaxWait = std::chrono::minutes(10);

bool authorized(const ApiHooks& hooks, const http::Request& req, bool write) {
  return http::token_allows(req, hooks.token, hooks.protect_reads, write);
}

// Answers carry what services said (log lines, probe answers): bytes that are not UTF-8 are
// replaced (U+FFFD), not a reason to fail the answer.
void ok(const ExchangePtr& ex, const json& body) {
  ex->respond(http::Response::json(200, body.dump(2, ' ', false, json::error_handler_t::replace) + "\n"));
}

json body_of(const http::Request& req) {
  if (req.body.empty()) return json::object();
  try {
    auto j = json::parse(req.body);
    if (!j.is_object()) throw bad_request("the body must be a JSON object");
    return j;
  } catch (const json::parse_error& e) {
    throw bad_request(std::string("the body is not valid JSON: ") + e.what());
  }
}

Duration wait_of(const http::Request& req) {
  const std::string* w = req.param("wait");
  if (!w) return Duration(0);
  auto d = parse_duration(*w);
  if (!d || d->count() < 0) throw bad_request("query parameter wait must be a duration such as 30s", "wait");
  return std::min<Duration>(*d, kMaxWait);
}

uint64_t uint_param(const http::Request& req, std::string_view name, uint64_t fallback) {
  const std::string* v = req.param(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    if (!v->empty() && (*v)[0] != '-') {
      auto n = std::stoull(*v, &used);
      if (used == v->size()) return n;
    }
  } catch (const std::exception&) {
  }
  throw bad_request("query parameter " + std::string(name) + " must be a whole number", std::string(name));
}

// since=10m (that long ago), since=2026-12-02T08:00:00Z, or since=UNIX_SECONDS.
int64_t since_us(const std::string& text) {
  if (auto d = parse_duration(text); d && d->count() >= 0) {
    auto now = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch());
    return now.count() - std::chrono::duration_cast<std::chrono::microseconds>(*d).count();
  }
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (end && (*end == 'Z' || *end == '\0')) return static_cast<int64_t>(timegm(&tm)) * 1000000;
  try {
    size_t used = 0;
    double secs = std::stod(text, &used);
    if (used == text.size() && secs >= 0) return static_cast<int64_t>(secs * 1e6);
  } catch (const std::exception&) {
  }
  throw bad_request("since must be a duration (10m), a UTC time (2026-12-02T08:00:00Z) or Unix seconds", "since");
}

// Answers `compute()` when it has something, else waits (up to `wait`) for the supervisor to
// report news (an event or a log line) and tries again.
struct Parked : std::enable_shared_from_this<Parked> {
  Supervisor& sup;
  ExchangePtr ex;
  std::function<std::optional<json>(bool last)> compute;  // nullopt: nothing new yet
  std::unique_ptr<Timer> timer;
  uint64_t handle = 0;

  Parked(Supervisor& s, ExchangePtr e, std::function<std::optional<json>(bool)> c)
      : sup(s), ex(std::move(e)), compute(std::move(c)) {}

  void start(Duration wait) {
    if (auto r = compute(wait.count() == 0)) return ok(ex, *r);
    timer = std::make_unique<Timer>(sup.loop());
    auto self = shared_from_this();
    timer->arm(wait, [self] { self->finish(true); });
    ex->on_cancel([self] { self->cancel(); });
    park();
  }
  void park() {
    auto self = shared_from_this();
    handle = sup.wait([self] { self->finish(false); });
  }
  void finish(bool timed_out) {
    if (ex->responded()) return;
    if (!timed_out) handle = 0;
    std::optional<json> r;
    try {
      r = compute(timed_out);
    } catch (const ApiError& e) {
      cancel();
      ex->respond(http::Response::error(e.status(), e.what(), e.field()));
      return;
    } catch (const std::exception& e) {
      // Run from a timer or a notification: nothing above would answer the client.
      cancel();
      ex->respond(http::Response::error(500, e.what()));
      return;
    }
    if (!r) return park();
    cancel();
    ok(ex, *r);
  }
  void cancel() {
    if (handle) sup.cancel_wait(handle);
    handle = 0;
    if (timer) timer->cancel();
  }
};

void handle(Supervisor& sup, const ApiHooks& hooks, const ExchangePtr& ex, const std::string& rest) {
  const auto& req = ex->request();
  const bool get = req.method == "GET" || req.method == "HEAD";
  auto need = [&](bool is_get) {
    if (is_get != get) {
      auto r = http::Response::error(405, is_get ? "use GET" : "use POST");
      r.headers.emplace_back("Allow", is_get ? "GET, HEAD" : "POST, PUT");
      ex->respond(std::move(r));
      return false;
    }
    if (!is_get && req.method != "POST" && req.method != "PUT") {
      auto r = http::Response::error(405, "use POST");
      r.headers.emplace_back("Allow", "POST, PUT");
      ex->respond(std::move(r));
      return false;
    }
    if (!authorized(hooks, req, !is_get)) {
      ex->respond(http::Response::error(403, http::token_refusal(req, !is_get), "token"));
      return false;
    }
    return true;
  };
  auto answer_done = [ex](json body) {
    return [ex, body = std::move(body)](const std::string& error) {
      if (!error.empty()) ex->respond(http::Response::error(500, "the store failed: " + error));
      else ok(ex, body);
    };
  };

  if (rest == "status") {
    if (need(true)) ok(ex, sup.status());
    return;
  }
  if (rest == "instances") {
    if (!need(true)) return;
    std::string service = req.param("service") ? *req.param("service") : "";
    if (!service.empty() && !sup.has_service(service))
      throw ApiError(404, "no supervised service \"" + service + "\"", "service");
    const std::string* crashed = req.param("crashed");
    ok(ex, sup.instances(service, crashed && (*crashed == "1" || *crashed == "true")));
    return;
  }
  if (rest == "events") {
    if (!need(true)) return;
    uint64_t after = uint_param(req, "after", 0);
    const std::string service = req.param("service") ? *req.param("service") : "";
    size_t limit = static_cast<size_t>(std::min<uint64_t>(uint_param(req, "limit", 1000), 1000));
    auto p = std::make_shared<Parked>(sup, ex, [&sup, after, limit, service](bool) -> std::optional<json> {
      auto e = sup.events(after, limit, service);
      if (e.empty()) return std::nullopt;
      return json{{"Events", e}, {"Last", sup.last_event()}};
    });
    auto wait = wait_of(req);
    if (wait.count() == 0) return ok(ex, json{{"Events", sup.events(after, limit, service)}, {"Last", sup.last_event()}});
    // Parked answers only when there is something; a timeout answers the (empty) list.
    p->compute = [&sup, after, limit, service](bool last) -> std::optional<json> {
      auto e = sup.events(after, limit, service);
      if (e.empty() && !last) return std::nullopt;
      return json{{"Events", e}, {"Last", sup.last_event()}};
    };
    p->start(wait);
    return;
  }
  if (rest.rfind("logs/", 0) == 0 || rest == "logs") {
    if (!need(true)) return;
    // logs/NAME: one service; logs: every service, or those of ?service=A,B, merged.
    std::vector<std::string> names;
    if (rest != "logs") {
      names.push_back(rest.substr(5));
    } else if (const std::string* list = req.param("service"); list && !list->empty()) {
      for (size_t start = 0; start <= list->size();) {
        size_t comma = list->find(',', start);
        if (comma == std::string::npos) comma = list->size();
        std::string name = list->substr(start, comma - start);
        if (name.empty()) throw bad_request("service must be NAME or NAME,NAME,…", "service");
        if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(name);
        start = comma + 1;
      }
    } else {
      names = sup.service_names();
    }
    for (const auto& name : names)
      if (!sup.has_service(name)) throw ApiError(404, "no supervised service \"" + name + "\"", "service");
    LogQuery q;
    if (const std::string* s = req.param("since")) q.since_us = since_us(*s);
    q.tail = static_cast<size_t>(uint_param(req, "tail", 0));  // 0: every record
    if (const std::string* a = req.param("after")) q.after = *a;
    const std::string dir = sup.log_dir();
    // By default the instances this agent started (running or not), as docker-compose shows its
    // current containers; ?all adds what earlier runs left in the data dir.
    const bool all = req.has_param("all");
    auto compute = [dir, q, names, all, &sup](bool last) -> std::optional<json> {
      LogAnswer a;
      std::vector<LogQuery> queries;
      for (const auto& name : names) {
        LogQuery& query = queries.emplace_back(q);
        query.service = name;
        if (!all) {
          auto ids = sup.log_instances(name);
          query.instances.insert(ids.begin(), ids.end());
          if (query.instances.empty()) query.instances.insert("");  // nothing started yet: no file
        }
      }
      try {
        a = queries.size() == 1 ? read_logs(dir, queries.front()) : read_logs(dir, queries, q.tail);
      } catch (const std::invalid_argument& e) {
        throw ApiError(400, e.what(), "after");
      } catch (const std::exception& e) {
        throw ApiError(500, e.what());
      }
      if (a.records.empty() && !last) return std::nullopt;
      json records = json::array();
      for (const auto& r : a.records)
        records.push_back({{"Time", r.time_us}, {"Instance", r.instance}, {"Stream", r.stream}, {"Text", r.text}});
      return json{{"Records", records}, {"Cursor", a.cursor.empty() ? q.after : a.cursor}};
    };
    auto p = std::make_shared<Parked>(sup, ex, compute);
    p->start(wait_of(req));
    return;
  }
  if (rest.rfind("services/", 0) == 0) {
    auto slash = rest.find('/', 9);
    if (slash == std::string::npos) throw ApiError(404, "unknown path " + req.path);
    const std::string service = rest.substr(9, slash - 9);
    const std::string action = rest.substr(slash + 1);
    if (!need(false)) return;
    auto body = body_of(req);
    if (action == "scale") {
      if (!body.contains("replicas") || !body["replicas"].is_number_integer())
        throw bad_request("scale needs {\"replicas\": N}", "replicas");
      int n = body["replicas"].get<int>();
      sup.scale(service, n, answer_done({{"Service", service}, {"Replicas", n}}));
    } else if (action == "deploy") {
      std::vector<std::string> sets;
      if (body.contains("set")) {
        if (!body["set"].is_array()) throw bad_request("set must be a list of \"KEY=VALUE\" strings", "set");
        for (const auto& s : body["set"]) {
          if (!s.is_string()) throw bad_request("set must be a list of \"KEY=VALUE\" strings", "set");
          sets.push_back(s.get<std::string>());
        }
      }
      int canary = 0;
      if (body.contains("canary")) {
        if (!body["canary"].is_number_integer()) throw bad_request("canary must be a percentage from 1 to 99", "canary");
        canary = body["canary"].get<int>();
        if (canary < 1 || canary > 99) throw bad_request("canary must be a percentage from 1 to 99", "canary");
      }
      sup.deploy(service, sets, canary, answer_done({{"Service", service}, {"Canary", canary}}));
    } else if (action == "restart") {
      auto r = sup.restart(service);
      ok(ex, json{{"Service", service}, {"Replacing", r.replacing}, {"Rerun", r.rerun}});
    } else if (action == "promote") {
      sup.promote(service, answer_done({{"Service", service}}));
    } else if (action == "rollback") {
      sup.rollback(service, answer_done({{"Service", service}}));
    } else {
      throw ApiError(404, "unknown action \"" + action + "\" (scale, deploy, restart, promote, rollback)");
    }
    return;
  }
  if (rest == "apply") {
    if (!need(false)) return;
    auto body = body_of(req);
    if (!body.contains("file") || !body["file"].is_string()) throw bad_request("apply needs {\"file\": PATH}", "file");
    config::File file;
    try {
      file = config::load_file(body["file"].get<std::string>());
    } catch (const config::ConfigError& e) {
      throw ApiError(400, e.what(), "file");
    }
    ok(ex, apply_file(sup, hooks, file));
    return;
  }
  if (rest == "down") {
    if (!need(false)) return;
    // ?keep: the runtime desired state (scale, deploys, canaries) stays for the next `up`, as on
    // SIGTERM; without it `down` forgets it.
    bool keep = false;
    if (const std::string* k = req.param("keep")) {
      if (*k == "" || *k == "true" || *k == "1") keep = true;
      else if (*k != "false" && *k != "0")
        throw bad_request("query parameter keep must be true or false (or bare ?keep)", "keep");
    }
    auto on_down = hooks.on_down;
    sup.stop_all(
        !keep,
        [ex, on_down] {
          ok(ex, json{{"Stopped", true}});
          if (on_down) on_down();
        },
        keep ? "flotilla down --keep: stopping every service (scale and deploys kept)" : "");
    return;
  }
  throw ApiError(404, "unknown path " + req.path);
}

}  // namespace

json apply_file(Supervisor& sup, const ApiHooks& hooks, const config::File& file) {
  sup.check_apply(file);  // before the hook opens anything for a file that is refused
  // What loads but is probably a slip: edits to a running application are where typos happen.
  for (const auto& w : config::warnings(file)) spdlog::warn("{}", w);
  if (hooks.before_apply) hooks.before_apply(file);
  auto r = sup.apply(file);
  json answer{{"Added", r.added}, {"Changed", r.changed}, {"Reconfigured", r.reconfigured}, {"Removed", r.removed}, {"Unchanged", r.unchanged}, {"Rerun", r.rerun}, {"Deployed", r.deployed}};
  if (hooks.on_apply) {
    json gateway = hooks.on_apply(file);
    if (!gateway.is_null()) answer["Gateway"] = std::move(gateway);
  }
  return answer;
}

bool serve_api(Supervisor& supervisor, const ApiHooks& hooks, const ExchangePtr& ex) {
  const auto& path = ex->request().path;
  if (path.rfind(kPrefix, 0) != 0) return false;
  std::string rest = path.substr(kPrefix.size());
  if (rest == "gateway") return false;
  try {
    handle(supervisor, hooks, ex, rest);
  } catch (const ApiError& e) {
    if (!ex->responded()) ex->respond(http::Response::error(e.status(), e.what(), e.field()));
  } catch (const std::exception& e) {
    if (!ex->responded()) ex->respond(http::Response::error(500, e.what()));
  }
  return true;
}

}  // namespace flotilla::supervisor
