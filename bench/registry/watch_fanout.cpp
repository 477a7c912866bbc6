// bench_watch_fanout: how fast one change reaches many blocking queries, and what a waiting query
// costs the agent in memory.
//
//   1. registers --services distinct services svc-0..svc-N-1 and one service "hot" (tag v1);
//   2. opens one connection per watcher: --services watchers blocking on
//      /v1/health/service/svc-i and --hot watchers blocking on /v1/health/service/hot, each with
//      ?index=<the X-Consul-Index it just read>&wait=<--wait>;
//   3. waits until the agent's flotilla_blocking_queries_waiting gauge shows them all parked and
//      samples the agent's VmRSS before opening and after parking;
//   4. re-registers "hot" with tag v2 and times, for every hot watcher, the arrival of its answer
//      relative to the write's acknowledgement (and to the moment the write was sent);
//   5. checks that exactly the hot watchers answered: none of the others within --quiet-ms after
//      the acknowledgement (and, from the agent's counters, that one result was recomputed);
//   6. unless --node-change 0: puts the node in maintenance, a change every health query depends
//      on, and times how long the remaining watchers take to all be answered (the worst case of
//      one write), then takes the node out of maintenance.
//
// Single-threaded (one io_context, C++20 coroutines), so the load generator adds no lock noise;
// every load is bounded by counts and deadlines and the tool exits by itself. Machine-readable
// results are printed as "RESULT key=value" lines for bench/registry/run.sh.
#include <utility>  // first: Boost 1.74's awaitable.hpp uses std::exchange without including it

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24  // linux/in.h; not in every libc's netinet/in.h
#endif

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using asio::awaitable;
using asio::use_awaitable;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 0;
  int agent_pid = 0;
  int services = 10000;
  int hot = 1000;
  std::string wait = "60s";
  int quiet_ms = 2000;       // after the ack: how long the other watchers must stay silent
  int sources = 4;           // local source addresses 127.0.0.1 .. 127.0.0.<sources>
  int register_conns = 64;   // connections used to register the services
  int setup_conns = 256;     // watchers being set up at once
  int park_timeout_s = 45;   // give up when the gauge does not reach the target by then
  int answer_timeout_s = 10; // give up waiting for hot answers after the ack
  bool node_change = true;   // then: a node-wide change (node maintenance) that wakes every other watcher
};

[[noreturn]] void usage(const char* msg) {
  std::cerr << "bench_watch_fanout: " << msg << "\n"
            << "usage: bench_watch_fanout --port PORT --agent-pid PID [--host 127.0.0.1] [--services 10000]\n"
               "         [--hot 1000] [--wait 60s] [--quiet-ms 2000] [--sources 4] [--register-conns 64]\n"
               "         [--setup-conns 256] [--park-timeout 45] [--answer-timeout 10] [--node-change 1|0]\n";
  std::exit(2);
}

int to_int(const std::string& flag, const char* v) {
  int out = 0;
  auto [p, ec] = std::from_chars(v, v + std::strlen(v), out);
  if (ec != std::errc() || *p || out < 0) usage((flag + " needs a non-negative integer").c_str());
  return out;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage(("missing value for " + a).c_str());
    const char* v = argv[++i];
    if (a == "--host") o.host = v;
    else if (a == "--port") o.port = static_cast<uint16_t>(to_int(a, v));
    else if (a == "--agent-pid") o.agent_pid = to_int(a, v);
    else if (a == "--services") o.services = to_int(a, v);
    else if (a == "--hot") o.hot = to_int(a, v);
    else if (a == "--wait") o.wait = v;
    else if (a == "--quiet-ms") o.quiet_ms = to_int(a, v);
    else if (a == "--sources") o.sources = std::max(1, to_int(a, v));
    else if (a == "--register-conns") o.register_conns = std::max(1, to_int(a, v));
    else if (a == "--setup-conns") o.setup_conns = std::max(1, to_int(a, v));
    else if (a == "--park-timeout") o.park_timeout_s = to_int(a, v);
    else if (a == "--answer-timeout") o.answer_timeout_s = to_int(a, v);
    else if (a == "--node-change") o.node_change = to_int(a, v) != 0;
    else usage(("unknown option " + a).c_str());
  }
  if (!o.port) usage("--port is required");
  if (!o.agent_pid) usage("--agent-pid is required");
  if (o.hot == 0) usage("--hot must be at least 1");
  return o;
}

// VmRSS of a process in KiB; -1 when unreadable.
long rss_kib(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return -1;
}

bool raise_nofile(rlim_t need) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  std::printf("RLIMIT_NOFILE: %llu (need about %llu)\n", static_cast<unsigned long long>(rl.rlim_cur),
              static_cast<unsigned long long>(need));
  return rl.rlim_cur >= need;
}

uint64_t header_index(const http::response<http::string_body>& r) {
  auto it = r.find("X-Consul-Index");
  if (it == r.end()) return 0;
  uint64_t v = 0;
  auto s = it->value();
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// Nearest-rank percentile of sorted values.
double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return NAN;
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Watcher {
  explicit Watcher(asio::io_context& io) : sock(io) {}
  tcp::socket sock;
  beast::flat_buffer buf;
  bool hot = false;
  bool answered = false;
  Clock::time_point at;
  unsigned status = 0;
  uint64_t index = 0;     // what the watcher blocked with
  uint64_t new_index = 0; // what its answer carried
  bool saw_change = false;
};

class Bench {
 public:
  Bench(asio::io_context& io, Options o)
      : io_(io), o_(std::move(o)), server_(asio::ip::make_address(o_.host), o_.port), wake_(io) {}

  int exit_code = 1;

  awaitable<void> main() {
    try {
      co_await run();
    } catch (const std::exception& e) {
      std::printf("FAILED: %s\n", e.what());
      std::printf("RESULT fanout_error=1\n");
      exit_code = 1;
    }
    closing_ = true;
    for (auto& w : watchers_) {
      boost::system::error_code ec;
      w->sock.close(ec);
    }
    control_.reset();
  }

 private:
  using Response = http::response<http::string_body>;

  // A connection from 127.0.0.<1 + n % sources>: each source address has its own ephemeral
  // port range, so 11,000 watchers never exhaust it even with the previous run in TIME_WAIT.
  awaitable<tcp::socket> open(size_t n) {
    tcp::socket s(io_);
    s.open(tcp::v4());
    if (o_.sources > 1 && server_.address().is_loopback()) {
      int one = 1;
      ::setsockopt(s.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
      auto src = asio::ip::address_v4(0x7f000001u + static_cast<uint32_t>(n % static_cast<size_t>(o_.sources)));
      s.bind(tcp::endpoint(src, 0));
    }
    co_await s.async_connect(server_, use_awaitable);
    s.set_option(tcp::no_delay(true));
    co_return s;
  }

  http::request<http::string_body> request(http::verb verb, const std::string& target, std::string body = {}) {
    http::request<http::string_body> req{verb, target, 11};
    req.set(http::field::host, o_.host + ":" + std::to_string(o_.port));
    req.set(http::field::user_agent, "bench_watch_fanout");
    req.keep_alive(true);
    if (verb != http::verb::get) {
      req.set(http::field::content_type, "application/json");
      req.body() = std::move(body);
      req.prepare_payload();
    }
    return req;
  }

  awaitable<Response> roundtrip(tcp::socket& s, beast::flat_buffer& buf, http::verb verb, const std::string& target,
                                std::string body = {}) {
    auto req = request(verb, target, std::move(body));
    co_await http::async_write(s, req, use_awaitable);
    Response res;
    co_await http::async_read(s, buf, res, use_awaitable);
    co_return res;
  }

  static std::string registration(const std::string& id, const std::string& tag) {
    // Every instance has a health check, as in a real registry (each health answer carries it).
    return R"({"ID":")" + id + R"(","Name":")" + id + R"(","Address":"127.0.0.1","Port":8080,"Tags":[")" + tag +
           R"("],"Check":{"TTL":"1h","Status":"passing"}})";
  }

  awaitable<void> sleep(Clock::duration d) {
    asio::steady_timer t(io_);
    t.expires_after(d);
    co_await t.async_wait(use_awaitable);
  }

  // Waits until woken by a watcher (wake_.cancel()) or until the deadline.
  awaitable<void> wait_until(Clock::time_point deadline) {
    wake_.expires_at(deadline);
    boost::system::error_code ec;
    co_await wake_.async_wait(asio::redirect_error(use_awaitable, ec));
  }

  awaitable<void> register_worker(size_t& next, size_t& failures, std::string& first_error) {
    tcp::socket s = co_await open(next);
    beast::flat_buffer buf;
    while (next < static_cast<size_t>(o_.services)) {
      size_t i = next++;
      auto res = co_await roundtrip(s, buf, http::verb::put, "/v1/agent/service/register",
                                    registration("svc-" + std::to_string(i), "v1"));
      if (res.result_int() != 200) {
        if (!failures++) first_error = std::to_string(res.result_int()) + " " + res.body();
      }
    }
  }

  awaitable<void> setup_worker(size_t& next, size_t& failures, std::string& first_error, size_t& done_workers) {
    while (next < watchers_.size()) {
      size_t i = next++;
      auto& w = *watchers_[i];
      try {
        w.sock = co_await open(i);
        std::string base = w.hot ? "/v1/health/service/hot" : "/v1/health/service/svc-" + std::to_string(i);
        auto first = co_await roundtrip(w.sock, w.buf, http::verb::get, base);
        w.index = header_index(first);
        if (first.result_int() != 200 || w.index == 0)
          throw std::runtime_error("GET " + base + ": " + std::to_string(first.result_int()) + " index " +
                                   std::to_string(w.index));
        // The same target for every hot watcher: the agent recomputes one result for all of them.
        auto req = request(http::verb::get, base + "?index=" + std::to_string(w.index) + "&wait=" + o_.wait);
        co_await http::async_write(w.sock, req, use_awaitable);
        asio::co_spawn(io_, await_answer(w), asio::detached);
      } catch (const std::exception& e) {
        if (!failures++) first_error = e.what();
      }
    }
    if (++done_workers == static_cast<size_t>(o_.setup_conns)) wake_.cancel();
  }

  awaitable<void> await_answer(Watcher& w) {
    Response res;
    boost::system::error_code ec;
    co_await http::async_read(w.sock, w.buf, res, asio::redirect_error(use_awaitable, ec));
    auto now = Clock::now();
    if (ec) {
      if (!closing_) ++read_errors_;
      co_return;
    }
    w.answered = true;
    w.at = now;
    w.status = res.result_int();
    w.new_index = header_index(res);
    w.saw_change = res.body().find("\"v2\"") != std::string::npos;
    ++answered_;
    if (w.hot && ++hot_answered_ == static_cast<size_t>(o_.hot)) wake_.cancel();
    if (!w.hot && ++others_answered_ == static_cast<size_t>(o_.services) && node_phase_) wake_.cancel();
  }

  awaitable<double> gauge(const std::string& name) {
    auto res = co_await roundtrip(*control_, control_buf_, http::verb::get, "/metrics");
    const auto& b = res.body();
    std::string needle = "\n" + name + " ";
    auto pos = b.find(needle);
    if (pos == std::string::npos) {
      if (b.rfind(name + " ", 0) != 0) co_return -1;
      pos = 0;
    } else {
      pos += 1;
    }
    co_return std::strtod(b.c_str() + pos + name.size() + 1, nullptr);
  }

  awaitable<void> run() {
    const size_t total = static_cast<size_t>(o_.services) + static_cast<size_t>(o_.hot);
    if (!raise_nofile(total + static_cast<size_t>(o_.register_conns) + 64))
      throw std::runtime_error("RLIMIT_NOFILE is too low for " + std::to_string(total) + " watchers");
    control_.emplace(co_await open(0));

    // 1. The services.
    auto t0 = Clock::now();
    {
      size_t next = 0, failures = 0, finished = 0;
      std::string first_error;
      size_t workers = std::min<size_t>(static_cast<size_t>(o_.register_conns), std::max(o_.services, 1));
      for (size_t k = 0; k < workers; ++k) {
        asio::co_spawn(io_, register_worker(next, failures, first_error),
                       [&](std::exception_ptr e) {
                         if (e && !failures++) {
                           try { std::rethrow_exception(e); } catch (const std::exception& x) { first_error = x.what(); }
                         }
                         if (++finished == workers) wake_.cancel();
                       });
      }
      auto deadline = Clock::now() + 120s;
      while (finished < workers && Clock::now() < deadline) co_await wait_until(deadline);
      if (finished < workers) throw std::runtime_error("registering the services took longer than 120 s");
      if (failures) throw std::runtime_error(std::to_string(failures) + " registrations failed, first: " + first_error);
    }
    auto hot_reg = co_await roundtrip(*control_, control_buf_, http::verb::put, "/v1/agent/service/register",
                                      registration("hot", "v1"));
    if (hot_reg.result_int() != 200) throw std::runtime_error("registering hot: " + std::to_string(hot_reg.result_int()));
    double reg_s = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("registered %d services + hot in %.2f s (%.0f/s over %d connections)\n", o_.services, reg_s,
                (o_.services + 1) / reg_s, o_.register_conns);
    std::printf("RESULT fanout_register_per_s=%.0f\n", (o_.services + 1) / reg_s);

    // 2. The watchers.
    double waiting0 = co_await gauge("flotilla_blocking_queries_waiting");
    co_await sleep(200ms);
    long rss_before = rss_kib(o_.agent_pid);
    for (size_t i = 0; i < total; ++i) {
      watchers_.push_back(std::make_unique<Watcher>(io_));
      watchers_.back()->hot = i >= static_cast<size_t>(o_.services);
    }
    auto t1 = Clock::now();
    {
      size_t next = 0, failures = 0, done_workers = 0;
      std::string first_error;
      for (int k = 0; k < o_.setup_conns; ++k)
        asio::co_spawn(io_, setup_worker(next, failures, first_error, done_workers), asio::detached);
      auto deadline = Clock::now() + std::chrono::seconds(o_.park_timeout_s);
      while (done_workers < static_cast<size_t>(o_.setup_conns) && Clock::now() < deadline)
        co_await wait_until(deadline);
      if (done_workers < static_cast<size_t>(o_.setup_conns))
        throw std::runtime_error("opening the watchers took longer than " + std::to_string(o_.park_timeout_s) + " s");
      if (failures)
        throw std::runtime_error(std::to_string(failures) + " watchers could not be set up, first: " + first_error);
    }
    double open_s = std::chrono::duration<double>(Clock::now() - t1).count();

    // 3. Parked, per the agent.
    double waiting = 0;
    auto park_deadline = t1 + std::chrono::seconds(o_.park_timeout_s);
    while (true) {
      waiting = co_await gauge("flotilla_blocking_queries_waiting");
      if (waiting - waiting0 >= static_cast<double>(total) || Clock::now() > park_deadline) break;
      co_await sleep(50ms);
    }
    double park_s = std::chrono::duration<double>(Clock::now() - t1).count();
    if (waiting - waiting0 < static_cast<double>(total))
      throw std::runtime_error("the agent reports " + std::to_string(static_cast<long>(waiting)) +
                               " waiting queries, expected " + std::to_string(total));
    co_await sleep(500ms);  // let the agent settle (allocator, timers) before sampling
    long rss_after = rss_kib(o_.agent_pid);
    double per_query = (rss_after - rss_before) * 1024.0 / static_cast<double>(total);
    std::printf("%zu watchers opened in %.2f s, all parked after %.2f s (gauge %.0f)\n", total, open_s, park_s,
                waiting);
    std::printf("agent VmRSS %ld KiB before, %ld KiB parked: %.0f bytes per waiting query (incl. its connection)\n",
                rss_before, rss_after, per_query);
    std::printf("RESULT fanout_parked=%.0f\nRESULT rss_before_kib=%ld\nRESULT rss_parked_kib=%ld\n"
                "RESULT bytes_per_waiting_query=%.0f\n",
                waiting - waiting0, rss_before, rss_after, per_query);
    size_t early = answered_;
    if (early) std::printf("WARNING: %zu watchers answered before the change\n", early);

    // 4. The change.
    double recomputed0 = co_await gauge("flotilla_blocking_queries_recomputed_total");
    double woken0 = co_await gauge("flotilla_blocking_queries_woken_total");
    auto sent = Clock::now();
    auto res = co_await roundtrip(*control_, control_buf_, http::verb::put, "/v1/agent/service/register",
                                  registration("hot", "v2"));
    auto acked = Clock::now();
    if (res.result_int() != 200) throw std::runtime_error("re-registering hot: " + std::to_string(res.result_int()));
    auto answer_deadline = acked + std::chrono::seconds(o_.answer_timeout_s);
    while (hot_answered_ < static_cast<size_t>(o_.hot) && Clock::now() < answer_deadline)
      co_await wait_until(answer_deadline);
    auto all_hot = Clock::now();
    auto quiet_end = acked + std::chrono::milliseconds(o_.quiet_ms);
    if (Clock::now() < quiet_end) co_await sleep(quiet_end - Clock::now());

    // 5. Who answered.
    double recomputed = co_await gauge("flotilla_blocking_queries_recomputed_total") - recomputed0;
    double woken = co_await gauge("flotilla_blocking_queries_woken_total") - woken0;
    std::vector<double> from_ack, from_send;
    size_t hot_ok = 0, hot_bad = 0, others = 0, others_in_window = 0;
    for (auto& w : watchers_) {
      if (!w->answered) continue;
      if (!w->hot) {
        ++others;
        if (w->at <= quiet_end) ++others_in_window;
        continue;
      }
      from_ack.push_back(ms(w->at - acked));
      from_send.push_back(ms(w->at - sent));
      if (w->status == 200 && w->saw_change && w->new_index > w->index) ++hot_ok;
      else ++hot_bad;
    }
    std::sort(from_ack.begin(), from_ack.end());
    std::sort(from_send.begin(), from_send.end());
    size_t hot_answers = from_ack.size();
    std::printf("write acknowledged %.2f ms after it was sent\n", ms(acked - sent));
    std::printf("hot answers: %zu of %d (%zu with the new tag and a newer index, %zu otherwise); "
                "other watchers answered: %zu within %d ms of the ack\n",
                hot_answers, o_.hot, hot_ok, hot_bad, others_in_window, o_.quiet_ms);
    if (!from_ack.empty()) {
      std::printf("latency from ack  (ms): min %.2f p50 %.2f p99 %.2f max %.2f\n", from_ack.front(),
                  percentile(from_ack, 50), percentile(from_ack, 99), from_ack.back());
      std::printf("latency from send (ms): min %.2f p50 %.2f p99 %.2f max %.2f\n", from_send.front(),
                  percentile(from_send, 50), percentile(from_send, 99), from_send.back());
      std::printf("RESULT fanout_ack_ms=%.3f\n", ms(acked - sent));
      std::printf("RESULT fanout_p50_ms=%.3f\nRESULT fanout_p99_ms=%.3f\nRESULT fanout_max_ms=%.3f\n"
                  "RESULT fanout_min_ms=%.3f\n",
                  percentile(from_ack, 50), percentile(from_ack, 99), from_ack.back(), from_ack.front());
      std::printf("RESULT fanout_send_p50_ms=%.3f\nRESULT fanout_send_p99_ms=%.3f\nRESULT fanout_send_max_ms=%.3f\n",
                  percentile(from_send, 50), percentile(from_send, 99), from_send.back());
      std::printf("RESULT fanout_all_hot_ms=%.3f\n", ms(all_hot - sent));
    }
    std::printf("agent counters for the change: %.0f result(s) recomputed, %.0f queries woken\n", recomputed, woken);
    std::printf("RESULT fanout_recomputed=%.0f\nRESULT fanout_woken=%.0f\n", recomputed, woken);
    std::printf("RESULT fanout_hot_answers=%zu\nRESULT fanout_hot_ok=%zu\nRESULT fanout_others_answered=%zu\n"
                "RESULT fanout_early_answers=%zu\nRESULT fanout_read_errors=%zu\n",
                hot_answers, hot_ok, others_in_window, early, read_errors_);
    bool ok = hot_answers == static_cast<size_t>(o_.hot) && hot_ok == hot_answers && others == 0 && early == 0 &&
              read_errors_ == 0;
    std::printf("RESULT fanout_exact=%d\n", ok ? 1 : 0);
    exit_code = ok ? 0 : 1;
    if (!ok || !o_.node_change || o_.services == 0) co_return;

    // 6. A node-wide change: every remaining watcher (svc-*) must answer.
    node_phase_ = true;
    recomputed0 = co_await gauge("flotilla_blocking_queries_recomputed_total");
    auto nsent = Clock::now();
    res = co_await roundtrip(*control_, control_buf_, http::verb::put,
                             "/v1/agent/maintenance?enable=true&reason=bench_watch_fanout", "");
    auto nacked = Clock::now();
    if (res.result_int() != 200) throw std::runtime_error("node maintenance: " + std::to_string(res.result_int()));
    auto ndeadline = nacked + std::chrono::seconds(o_.answer_timeout_s);
    while (others_answered_ < static_cast<size_t>(o_.services) && Clock::now() < ndeadline)
      co_await wait_until(ndeadline);
    std::vector<double> node_lat;
    for (auto& w : watchers_)
      if (!w->hot && w->answered && w->at >= nsent) node_lat.push_back(ms(w->at - nsent));
    std::sort(node_lat.begin(), node_lat.end());
    recomputed = co_await gauge("flotilla_blocking_queries_recomputed_total") - recomputed0;
    std::printf("node maintenance: acknowledged after %.2f ms; %zu of %d other watchers answered "
                "(%.0f results recomputed)",
                ms(nacked - nsent), node_lat.size(), o_.services, recomputed);
    if (!node_lat.empty())
      std::printf(", from send: first %.2f p50 %.2f p99 %.2f last %.2f ms", node_lat.front(),
                  percentile(node_lat, 50), percentile(node_lat, 99), node_lat.back());
    std::printf("\n");
    std::printf("RESULT node_change_answers=%zu\nRESULT node_change_ack_ms=%.3f\n", node_lat.size(), ms(nacked - nsent));
    if (!node_lat.empty())
      std::printf("RESULT node_change_first_ms=%.3f\nRESULT node_change_p50_ms=%.3f\nRESULT node_change_p99_ms=%.3f\n"
                  "RESULT node_change_max_ms=%.3f\n",
                  node_lat.front(), percentile(node_lat, 50), percentile(node_lat, 99), node_lat.back());
    res = co_await roundtrip(*control_, control_buf_, http::verb::put, "/v1/agent/maintenance?enable=false", "");
    if (res.result_int() != 200) std::printf("WARNING: disabling node maintenance: %u\n", res.result_int());
  }

  asio::io_context& io_;
  Options o_;
  tcp::endpoint server_;
  asio::steady_timer wake_;
  std::optional<tcp::socket> control_;
  beast::flat_buffer control_buf_;
  std::vector<std::unique_ptr<Watcher>> watchers_;
  size_t answered_ = 0;
  size_t hot_answered_ = 0;
  size_t others_answered_ = 0;
  bool node_phase_ = false;
  size_t read_errors_ = 0;
  bool closing_ = false;
};

}  // namespace

int main(int argc, char** argv) {
  Options o = parse(argc, argv);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  asio::io_context io(1);
  Bench bench(io, o);
  // A hard stop, whatever happens: the whole run is bounded.
  asio::steady_timer guard(io);
  guard.expires_after(std::chrono::seconds(o.park_timeout_s + o.answer_timeout_s + 180));
  bool timed_out = false;
  guard.async_wait([&](const boost::system::error_code& ec) {
    if (ec) return;
    timed_out = true;
    std::printf("FAILED: the run did not finish in time\nRESULT fanout_error=1\n");
    io.stop();
  });
  // When main() ends (it closed every socket), stop: whatever is still pending is abandoned.
  asio::co_spawn(io, bench.main(), [&](std::exception_ptr) {
    guard.cancel();
    io.stop();
  });
  io.run();
  return timed_out ? 1 : bench.exit_code;
}
