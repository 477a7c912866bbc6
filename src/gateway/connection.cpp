#include "gateway/connection.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "common/metrics.h"
#include "gateway/access_log.h"
#include "gateway/forward_headers.h"
#include "gateway/http1/syntax.h"
#include "gateway/path.h"
#include "http/message.h"
#include "gateway/resilience/circuit_breaker.h"
#include "gateway/resilience/outlier.h"
#include "gateway/resilience/rate_limiter.h"
#include "gateway/resilience/retry.h"

namespace flotilla::gateway {

namespace {
using boost::system::error_code;
using http1::syntax::iequals;
constexpr auto kAwait = asio::use_awaitable_t<Executor>{};

constexpr size_t kInitialIn = 2 * 1024;  // the read buffer of a lingering close or a dropped body
constexpr size_t kBigHeadRoom = 8 * 1024;  // what a head that filled its buffer gets room for next
constexpr size_t kRelay = 16 * 1024;
constexpr size_t kMaxHead = 8 * 1024 + 60 * 1024 + 1024;  // request line + header section (+ slack)
constexpr uint64_t kReplayLimit = 64 * 1024;  // bodies up to this are kept so a retry can resend them
// The rest of a refused request's sized body up to this is read and dropped, keeping the
// connection (nginx discards such bodies too); a bigger one closes it, with a lingering close.
constexpr uint64_t kDropLimit = 1024 * 1024;

int64_t ns(Duration d) { return std::chrono::duration_cast<std::chrono::nanoseconds>(d).count(); }

std::string json_error(std::string_view message, std::string_view key = {}, std::string_view value = {}) {
  std::string out = "{\"error\":";
  append_json_string(out, message);
  if (!key.empty()) {
    out.push_back(',');
    append_json_string(out, key);
    out.push_back(':');
    append_json_string(out, value);
  }
  out.append("}\n");
  return out;
}

// The cookie's value in a Cookie header, or nullopt.
std::optional<std::string_view> cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    auto semi = header.find(';');
    auto pair = http1::syntax::trim_ows(header.substr(0, semi));
    auto eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) return pair.substr(eq + 1);
    if (semi == std::string_view::npos) break;
    header.remove_prefix(semi + 1);
  }
  return std::nullopt;
}

// Whether an Upgrade value lists h2c ("h2c", "websocket, h2c", "H2C").
bool names_h2c(std::string_view protocols) {
  while (!protocols.empty()) {
    size_t comma = protocols.find(',');
    std::string_view token = protocols.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (iequals(token, "h2c")) return true;
    if (comma == std::string_view::npos) break;
    protocols.remove_prefix(comma + 1);
  }
  return false;
}

// Header lookup for route matching. A field sent more than once is matched as its values joined
// with "," (RFC 9110 §5.3; Envoy's rule too): `x-env: prod` plus `x-env: dev` is "prod,dev" and
// matches a route for neither, instead of whichever copy came first.
struct HeaderLookup {
  const http1::RequestHead* head;
  mutable std::string_view found;
  mutable std::string combined;
  static const std::string_view* get(const void* ctx, std::string_view lower) {
    auto* self = static_cast<const HeaderLookup*>(ctx);
    int n = 0;
    for (const auto& f : self->head->fields) {
      if (!iequals(f.name, lower)) continue;
      if (n++ == 0) {
        self->found = f.value;
        continue;
      }
      if (n == 2) self->combined.assign(self->found);
      self->combined.push_back(',');
      self->combined.append(f.value);
    }
    if (n == 0) return nullptr;
    if (n > 1) self->found = self->combined;
    return &self->found;
  }
};

// The endpoints a request already tried (attempts are at most 10).
struct Tried {
  int index[10];
  int count = 0;
  bool contains(int i) const { return std::find(index, index + count, i) != index + count; }
  void add(int i) {
    if (count < 10) index[count++] = i;
  }
};

struct UsableContext {
  const Cluster* cluster;
  const Tried* tried;
  bool avoid_tried;
  int64_t now;
};
bool usable_endpoint(const void* ctx, size_t i) {
  auto* u = static_cast<const UsableContext*>(ctx);
  const auto& ep = u->cluster->endpoints[i];
  if (resilience::OutlierDetector::ejected(*ep.state, u->now)) return false;
  if (u->avoid_tried && u->tried->contains(static_cast<int>(i))) return false;
  return true;
}
// Writes what the socket takes right now, without blocking: one sendmsg with MSG_DONTWAIT. Small
// answers and request heads almost always fit the socket buffer, and skipping Asio's operation
// machinery (an initiation frame, an operation object, a posted completion) for them is the
// largest single saving per request. Returns the bytes written (0 when the socket is full), or -1.
ssize_t send_now(int fd, std::string_view a, std::string_view b) {
  iovec iov[2] = {{const_cast<char*>(a.data()), a.size()}, {const_cast<char*>(b.data()), b.size()}};
  msghdr m{};
  m.msg_iov = a.empty() ? iov + 1 : iov;
  m.msg_iovlen = (a.empty() ? 0 : 1) + (b.empty() ? 0 : 1);
  if (m.msg_iovlen == 0) return 0;
  for (;;) {
    ssize_t n = ::sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  }
}
// Waits until `s` can take more bytes, or has bytes (or its end) to be read: a service that
// answers an upload early may stop reading without closing, and a wait for room alone would last
// until the deadline. Completes with true when it is readable. Two reactor waits: the first to
// complete cancels the other, and the caller resumes once both have (a deadline that closes the
// socket ends both). An answer that arrived while nothing waited is seen too: Boost 1.74's epoll
// reactor starts a wait with EPOLL_CTL_MOD, which re-arms the edge-triggered readiness.
template <typename Token>
auto async_room_or_answer(Socket& s, Token&& token) {
  return asio::async_initiate<Token, void(error_code, bool)>(
      [&s](auto handler) {
        using Handler = decltype(handler);
        struct State {
          explicit State(Handler&& h) : handler(std::move(h)) {}
          Handler handler;
          int left = 2;
          bool decided = false, readable = false;
          error_code ec;
        };
        auto st = std::make_shared<State>(std::move(handler));
        auto done = [st, &s](bool readable, error_code ec) {
          if (!st->decided) {
            st->decided = true;
            st->readable = readable;
            st->ec = ec;
            error_code ignored;
            s.cancel(ignored);
          }
          if (--st->left == 0) {
            auto ex = asio::get_associated_executor(st->handler, s.get_executor());
            asio::post(ex, [st]() mutable { std::move(st->handler)(st->ec, st->readable); });
          }
        };
        s.async_wait(Socket::wait_write, [done](error_code ec) { done(false, ec); });
        s.async_wait(Socket::wait_read, [done](error_code ec) { done(true, ec); });
      },
      token);
}

enum class UpWrite : uint8_t { done, failed, answered };

// Whether what the service has sent (peeked, left in the socket) begins with a final answer that
// closes the connection, interim answers skipped: then it will not read the rest of the body.
bool closing_answer_waits(int fd) {
  char buf[16384];
  ssize_t n = ::recv(fd, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
  if (n <= 0) return false;
  std::string_view v(buf, static_cast<size_t>(n));
  http1::ResponseParser parser;
  for (;;) {
    auto r = parser.parse(v);
    if (r.status != http1::ResponseParser::Status::done) return false;
    const int code = parser.head().status;
    if (code < 100 || code >= 200 || code == 101) return !parser.head().keep_alive;
    v.remove_prefix(r.head_length);
    parser.reset();
  }
}

// Writes bytes of a streamed request body to the service. While the socket has no room it also
// watches the service (`watch`): an answer that closes the connection (a 413 or 401 sent before
// the body was read, as Go's net/http and Python's http.server do) means the rest will never be
// read, and the service may itself be stuck sending a long answer to a gateway that is not
// reading it: `answered`. Any other answer (no close: RFC 9112 asks such a service to read the
// rest) or a half-close ends the watching for this request, and the write goes on.
Task<UpWrite> write_streamed(Socket& s, std::string_view data, bool& watch) {
  for (;;) {
    ssize_t n = send_now(s.native_handle(), data, {});
    if (n < 0) co_return UpWrite::failed;
    data.remove_prefix(static_cast<size_t>(n));
    if (data.empty()) co_return UpWrite::done;
    error_code ec;
    if (!watch) {
      co_await s.async_wait(Socket::wait_write, asio::redirect_error(kAwait, ec));
      if (ec) co_return UpWrite::failed;
      continue;
    }
    bool readable = co_await async_room_or_answer(s, asio::redirect_error(kAwait, ec));
    if (ec) co_return UpWrite::failed;
    if (readable) {
      if (closing_answer_waits(s.native_handle())) co_return UpWrite::answered;
      watch = false;
    }
  }
}
}  // namespace

// ---- Buffer ----

void Buffer::grow(size_t cap) {
  std::unique_ptr<char[]> fresh(new char[cap]);  // not make_unique: no need to zero what is read into
  if (size()) std::memcpy(fresh.get(), data_.get() + begin_, size());
  end_ -= begin_;
  begin_ = 0;
  data_ = std::move(fresh);
  cap_ = cap;
}

size_t Buffer::make_room(size_t want, size_t limit) {
  if (room() >= want) return room();
  if (begin_ > 0 && cap_ - size() >= want) {  // compact
    std::memmove(data_.get(), data_.get() + begin_, size());
    end_ -= begin_;
    begin_ = 0;
    return room();
  }
  if (cap_ < limit) grow(std::min(limit, std::max(cap_ * 2, size() + want)));
  else if (begin_ > 0) {
    std::memmove(data_.get(), data_.get() + begin_, size());
    end_ -= begin_;
    begin_ = 0;
  }
  return room();
}

void Buffer::shrink(size_t to) {
  if (cap_ > to && size() <= to) grow(to);
}

// ---- Connection ----

Connection::Connection(Worker& worker, Socket socket, const std::string& listener_service, std::string client_ip)
    : worker_(worker),
      reactor_(reactor_of(worker.io())),
      socket_(std::move(socket)),
      listener_service_(listener_service),
      client_ip_(std::move(client_ip)) {
  tracked_ = worker_.track(this);
}

Connection::~Connection() { worker_.untrack(tracked_); }

void Connection::start() {
  asio::co_spawn(worker_.io().get_executor(), [self = shared_from_this()]() { return self->run(); }, asio::detached);
}

void Connection::set_deadline(Wait what, int64_t from_now) {
  wait_ = what;
  deadline_ = now_ns() + from_now;
}

namespace {
// What the peer acknowledged of what this socket sent: bytes in all (the kernel's
// tcpi_bytes_acked, which glibc's struct tcp_info stops short of; the kernel's layout only ever
// grows) and how long ago the last acknowledgement came. bytes -1 if unknown.
struct Acked {
  int64_t bytes = -1;
  int64_t ago_ns = 0;
};
static_assert(sizeof(tcp_info) == 104, "glibc's struct tcp_info is the kernel's first 104 bytes");
Acked tcp_acked(int fd) {
  struct WithAcked {
    tcp_info base;
    uint64_t pacing_rate, max_pacing_rate, bytes_acked;
  } info{};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 || len < sizeof info) return {};
  return {static_cast<int64_t>(info.bytes_acked), static_cast<int64_t>(info.base.tcpi_last_ack_recv) * 1'000'000};
}
}  // namespace

int64_t Connection::write_idle() const {
  return stream_idle_ ? stream_idle_ : ns(worker_.shared().config.timeouts.idle);
}

void Connection::expire(int64_t now) {
  // A write that waited this long for room: a client that reads slowly but steadily (its
  // acknowledgements advance) has not stalled, so its answer goes on, until it has acknowledged
  // nothing for the whole time, as the docs say ("no byte in the direction it flows").
  if (wait_ == Wait::write && write_acked_ >= 0) {
    const Acked a = tcp_acked(socket_.native_handle());
    const int64_t allowed = write_idle();
    if (a.bytes > write_acked_ && a.ago_ns < allowed) {
      write_acked_ = a.bytes;
      deadline_ = now - a.ago_ns + allowed;  // from the last acknowledgement
      return;
    }
  }
  Wait w = wait_;
  clear_deadline();
  timed_out_ = true;
  error_code ec;
  switch (w) {
    case Wait::none:
      break;
    case Wait::upstream:
      if (current_upstream_) current_upstream_->socket.close(ec);
      break;
    case Wait::tunnel:
      if (current_upstream_) current_upstream_->socket.close(ec);
      socket_.close(ec);
      break;
    default:
      socket_.cancel(ec);
      break;
  }
}

void Connection::check_client_now(int64_t now) {
  client_check_at_ = now + 1'000'000'000;
  // poll(), not a peek: bytes the client pipelined would hide an error behind them. A reset (or a
  // close in both directions) shows as POLLERR or POLLHUP; a FIN as POLLRDHUP alone, which ends
  // the request too unless its route says `on_client_close: wait` (a half-close).
  pollfd p{socket_.native_handle(), POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return;
  if ((p.revents & (POLLERR | POLLHUP | POLLNVAL)) == 0) {
    if (!abort_on_close_ || (p.revents & POLLRDHUP) == 0) return;
    // A FIN after more pipelined requests is a client done sending that waits for every answer
    // (a pipelining client's half-close), not one that gave up: its requests go on. Rare, so the
    // peek costs nothing in the usual case.
    char byte;
    if (!in_.empty() || ::recv(socket_.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0) return;
  }
  client_gone_ = true;
  error_code ec;
  if (current_upstream_) current_upstream_->socket.close(ec);  // the coroutine's read returns and sees client_gone_
}

void Connection::check_idle_now() {
  idle_check_at_ = 0;  // once per idle spell
  // Nor does an idle connection pin the snapshot of its last request: after registry changes, a
  // few thousand idle clients would otherwise keep as many old generations (each with its own
  // per-route and per-cluster state) alive. The next request takes the current one (an atomic
  // increment, once per idle spell).
  snapshot_.reset();
  pollfd p{socket_.native_handle(), POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0 || (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) == 0) return;
  // The client is done sending, and has every answer: the wait for its next request ends.
  error_code ec;
  socket_.cancel(ec);
}

void Connection::cut() {
  cut_ = true;
  close_after_ = true;
  error_code ec;
  if (idle_) {  // between requests (or lingering): nothing to cut
    socket_.cancel(ec);
    return;
  }
  // A reset, not a FIN: a body delimited by the close (or decoded for an HTTP/1.0 client) must
  // not look whole. Closing both sockets ends every wait of the coroutine at once; its end logs
  // the request with the status it started with and the bytes that got through.
  reset_down_ = true;
  ::linger l{1, 0};
  ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  if (current_upstream_) current_upstream_->socket.close(ec);
  socket_.close(ec);
}

void Connection::drain() {
  close_after_ = true;
  if (idle_) {
    error_code ec;
    socket_.cancel(ec);
  }
}

namespace {
// Test hook: FLOTILLA_TEST_FLUSH_MAX=N lets the end-of-round flush write at most N bytes, as a
// socket with a full send buffer would, so tests reach the partial-write path (on loopback a
// whole buffered request always fits the send buffer).
size_t flush_max() {
  static const size_t max = [] {
    const char* v = std::getenv("FLOTILLA_TEST_FLUSH_MAX");
    return v && *v ? static_cast<size_t>(std::strtoull(v, nullptr, 10)) : SIZE_MAX;
  }();
  return max;
}
}  // namespace

void Connection::flush_queued() {
  if (up_queued_state_ != Queued::queued || !up_queued_) return;  // the coroutine moved on
  std::string_view a = rs_->out, b = rs_->body;
  if (const size_t max = flush_max(); a.size() + b.size() > max) {
    if (a.size() >= max) {
      a = a.substr(0, max);
      b = {};
    } else {
      b = b.substr(0, max - a.size());
    }
  }
  ssize_t n = send_now(up_queued_->socket.native_handle(), a, b);
  if (n >= 0 && static_cast<size_t>(n) == rs_->out.size() + rs_->body.size()) {
    up_queued_state_ = Queued::none;
    up_queued_ = nullptr;
    return;
  }
  up_queued_state_ = n < 0 ? Queued::failed : Queued::partial;
  up_queued_sent_ = n < 0 ? 0 : static_cast<size_t>(n);
  error_code ec;
  up_queued_->socket.cancel(ec);  // the coroutine's read returns operation_aborted and acts
}

void Connection::before_write_down() {
  if (wrote_down_ && !nodelay_) set_nodelay();
  wrote_down_ = true;
}

void Connection::set_nodelay() {
  error_code ec;
  socket_.set_option(tcp::no_delay(true), ec);
  nodelay_ = true;
}

Task<bool> Connection::write_down(std::string_view a, std::string_view b) {
  before_write_down();
  ssize_t n = send_now(socket_.native_handle(), a, b);
  if (n < 0) co_return false;
  if (static_cast<size_t>(n) == a.size() + b.size()) co_return true;
  co_return co_await write_rest(socket_, a, b, static_cast<size_t>(n), Wait::write);
}

Task<bool> Connection::write_rest(Socket& socket, std::string_view a, std::string_view b, size_t sent, Wait wait) {
  if (&socket == &socket_) before_write_down();
  if (sent >= a.size()) {
    b.remove_prefix(sent - a.size());
    a = {};
  } else {
    a.remove_prefix(sent);
  }
  error_code ec;
  if (wait == Wait::write) {
    set_deadline(Wait::write, write_idle());
    write_acked_ = tcp_acked(socket.native_handle()).bytes;  // progress is judged from here (expire)
  }
  std::array<asio::const_buffer, 2> bufs{asio::buffer(a.data(), a.size()), asio::buffer(b.data(), b.size())};
  co_await asio::async_write(socket, bufs, asio::redirect_error(kAwait, ec));
  if (wait == Wait::write) clear_deadline();
  co_return !ec && !timed_out_;
}

Task<void> Connection::send_local(int status, std::string_view body, bool close,
                                             std::string_view extra_header) {
  if (!rs_) rs_ = worker_.take_scratch();  // a refusal comes with a head's first bytes: held already
  const auto& head = rs_->parser.head();
  std::string& h = rs_->down_head;
  h.clear();
  h.append("HTTP/1.1 ");  // to HTTP/1.0 clients too (build_downstream_head says why)
  h.append(std::to_string(status));
  h.push_back(' ');
  h.append(http::reason_phrase(status));
  h.append("\r\nDate: ");
  h.append(worker_.http_date());
  h.append("\r\nContent-Type: application/json\r\nContent-Length: ");
  h.append(std::to_string(body.size()));
  h.append("\r\n");
  if (!extra_header.empty()) {
    h.append(extra_header);
    h.append("\r\n");
  }
  if (close || close_after_) h.append("Connection: close\r\n");
  else if (head.version_minor == 0) h.append("Connection: keep-alive\r\n");
  h.append("\r\n");
  if (close) close_after_ = true;
  // Refusals only: the gateway's 502/503/504 for a service that failed or had no instance are
  // counted by the metrics of those causes.
  int cls = status / 100;
  if (status == 400 || status == 408 || status == 413 || status == 414 || status == 431 || status == 501 ||
      status == 505)
    if (auto* c = worker_.shared().metrics.refused[std::min(cls, 5)]) c->inc();
  // An answer to HEAD has the length the body would have, and no body (RFC 9110 §9.3.2): bytes
  // after it would be read as the answer to the client's next request.
  co_await write_down(h, head_request_ ? std::string_view() : body);
}

Task<void> Connection::run() {
  for (;;) {
    if (!co_await read_head()) break;
    const bool keep = co_await handle_request();
    // Whatever way the request ended, nothing of it is waited on any more (check_client, expire).
    awaiting_answer_ = false;
    client_gone_ = false;
    current_upstream_ = nullptr;
    if (!keep) break;
    if (close_after_ || worker_.shared().draining.load(std::memory_order_relaxed)) break;
    // A connection between requests holds no buffer, parser or string: the read buffer goes
    // back in read_head unless it holds the start of a pipelined request, and the rest here.
    give_back();
  }
  // close() alone sends the FIN after whatever is still queued, as a shutdown(SHUT_WR) first
  // would (and either way the kernel resets the connection if the client sent bytes never read):
  // the shutdown was one syscall per connection for nothing.
  error_code ec;
  if (reset_down_) {
    ::linger l{1, 0};
    ::setsockopt(socket_.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  } else if (linger_) {
    co_await linger_close();
  }
  socket_.close(ec);
  worker_.give_relay(std::move(in_));
  give_back();
}

void Connection::give_back() {
  worker_.give_scratch(std::move(rs_));
  worker_.give_relay(std::move(rb_));
  worker_.give_response_parser(std::move(response_parser_));
}

namespace {
// An idle keep-alive connection is polled for an unannounced FIN this long into its idleness.
constexpr int64_t kIdleFinCheck = 200'000'000;
constexpr int64_t kLingerTime = 30'000'000'000;  // nginx's lingering_time
// How soon after the send a reused connection's close counts as "it was already closed".
constexpr int64_t kStaleWindow = 200'000'000;
constexpr int64_t kLingerQuiet = 5'000'000'000;  // nginx's lingering_timeout
}  // namespace

// An answer sent while the client may still be sending (a refusal before its body was read, an
// error or the service's early answer in the middle of an upload, a malformed head) is followed
// by a FIN, and what the client still sends is read and dropped until it closes, goes quiet for
// 5 s, or 30 s pass (nginx's lingering close). Closed at once, the socket would answer those
// bytes with a reset, and a client that writes its whole body before it reads (Python's
// http.client, curl without Expect, most SDKs) would report "connection reset" instead of the
// answer. The bytes are never parsed. A draining worker ends the wait at once (drain()).
Task<void> Connection::linger_close() {
  error_code ec;
  socket_.shutdown(tcp::socket::shutdown_send, ec);
  if (ec) co_return;
  idle_ = true;
  clear_deadline();
  timed_out_ = false;  // a timeout that ended the request (a 504) must not end this wait
  if (worker_.shared().draining.load(std::memory_order_relaxed)) co_return;
  // Only a small read buffer is held meanwhile.
  give_back();
  worker_.give_relay(std::move(in_));
  const int64_t until = now_ns() + kLingerTime;
  for (;;) {
    const int64_t left = until - now_ns();
    if (left <= 0) break;
    in_.clear();
    if (in_.make_room(kInitialIn, kInitialIn) == 0) break;
    set_deadline(Wait::idle, std::min(kLingerQuiet, left));
    size_t n = co_await async_recv_to_eof(reactor_, socket_, asio::buffer(in_.write_ptr(), in_.room()),
                                          asio::redirect_error(kAwait, ec));
    clear_deadline();
    if (timed_out_ || ec || n == 0) break;
  }
  in_.clear();
}

// A request refused before its head was parsed (malformed, too large, too slow): the log has the
// client, the status and the answer's size; no method, host or path (there is none to trust).
void Connection::log_refused(int status, size_t bytes) {
  if (AccessLog* log = worker_.shared().access_log) log->write({client_ip_, {}, {}, {}, status, bytes, 0, {}, 0, {}, {}});
}

Task<bool> Connection::read_head() {
  const auto& cfg = worker_.shared().config;
  head_request_ = false;
  stream_idle_ = 0;  // the gateway's own answers to a bad head: timeouts.idle, not the last route's
  bool first = in_.empty();
  bool head_deadline = false;
  timed_out_ = false;
  for (;;) {
    if (!in_.empty()) {
      if (!rs_) rs_ = worker_.take_scratch();
      auto r = rs_->parser.parse(in_.view());
      if (r.status == http1::RequestParser::Status::done) {
        head_length_ = r.head_length;
        clear_deadline();
        idle_ = false;
        idle_check_at_ = 0;
        co_return true;
      }
      if (r.status == http1::RequestParser::Status::error) {
        clear_deadline();
        std::string body = json_error(r.reason);
        log_refused(r.http_status, body.size());
        co_await send_local(r.http_status, body, true);
        linger_ = true;  // the client may be sending a body after the head
        co_return false;
      }
      // The head's deadline runs from its first bytes: these, or a pipelined part left over
      // from the previous request (a partial head there must time out too).
      if (!head_deadline) {
        first = false;
        head_deadline = true;
        set_deadline(Wait::head, ns(cfg.timeouts.header));
      }
    } else if (first) {
      idle_ = true;
      if (close_after_) co_return false;
      set_deadline(Wait::idle, ns(cfg.timeouts.idle));
      idle_check_at_ = deadline_ - ns(cfg.timeouts.idle) + kIdleFinCheck;  // no second clock read
    }
    error_code ec;
    size_t n;
    if (in_.empty()) {
      // The first bytes of a head: a 16 KiB buffer from the worker's pool is lent when they
      // arrive, so a head of up to 16 KiB takes one recv() and no allocation, and a connection
      // waiting for its request holds no buffer at all.
      if (in_.capacity() != 0) worker_.give_relay(std::move(in_));
      RelayLender lender(worker_, in_);
      n = co_await async_recv_lent(reactor_, socket_, lender, asio::redirect_error(kAwait, ec));
    } else {
      // A head bigger than its buffer gets room for 8 KiB more at once, not doubling per read.
      const size_t want = in_.room() == 0 ? kBigHeadRoom : 1024;
      if (in_.make_room(want, kMaxHead) == 0) {  // the parser's limits fire before this
        std::string body = json_error("request header fields too large");
        log_refused(431, body.size());
        co_await send_local(431, body, true);
        linger_ = true;
        co_return false;
      }
      // The rest of a head cut in parts must see a FIN that came with its last bytes (recv.h).
      n = co_await async_recv_to_eof(reactor_, socket_, asio::buffer(in_.write_ptr(), in_.room()),
                                     asio::redirect_error(kAwait, ec));
    }
    if (timed_out_) {
      if (wait_ == Wait::none && !in_.empty() && !idle_) {
        // The head did not arrive in time.
        timed_out_ = false;
        std::string body = json_error("request head not received in time");
        log_refused(408, body.size());
        co_await send_local(408, body, true);
      }
      co_return false;
    }
    if (ec || n == 0) {
      if (idle_ && close_after_) co_return false;
      co_return false;
    }
    in_.commit(n);
    if (idle_) {
      idle_ = false;
      idle_check_at_ = 0;
      clear_deadline();
      first = true;
    }
  }
}

namespace {
// What a try ended with, for retry and outlier decisions.
enum class Outcome : uint8_t { response, connect_failure, reset, timeout, bad_response };
}  // namespace

Task<bool> Connection::handle_request() {
  WorkerShared& shared = worker_.shared();
  const auto& cfg = shared.config;
  const int64_t started = now_ns();
  if (const auto& current = worker_.current_snapshot(); snapshot_ != current) snapshot_ = current;
  const Snapshot& snap = *snapshot_;
  const http1::RequestHead& head = rs_->parser.head();
  const size_t head_length = head_length_;
  const int minor = head.version_minor;
  const bool is_head = head.method == "HEAD";
  head_request_ = is_head;
  bool client_keep = head.keep_alive;
  const bool has_body = head.has_body();
  const std::optional<uint64_t> content_length = head.content_length;
  const bool chunked_in = head.chunked;
  const bool expect_continue = head.expect_continue && has_body;
  // h2c is never tunnelled: the client would speak HTTP/2 to one instance for the rest of the
  // connection, past routing, rate limits and the access log ("h2c smuggling"). The request goes
  // on as a plain one, its Upgrade dropped as hop-by-hop (RFC 9113 §3.1 retired the upgrade).
  const bool upgrade = head.upgrade && !names_h2c(head.upgrade_protocols);
  const std::string method(head.method);
  // What the access log says of the request, kept past the head's consumption.
  std::string& log_path = rs_->log_path;
  std::string& log_host = rs_->log_host;
  std::string_view log_service;
  if (shared.access_log) {
    log_path.assign(head.path);
    log_host.assign(head.authority);
  }
  // Who the request is from (the access log's client, rate limits and hash_on: client_ip): the
  // peer, or, when the peer is one of gateway.trusted_proxies, the client its X-Forwarded-For
  // names. Kept past the head's consumption.
  std::string_view client = client_ip_;
  bool from_trusted_proxy = false;
  if (!snap.trusted_proxies.empty())
    if (auto peer = parse_ip(client_ip_); peer && snap.trusted_proxies.contains(*peer)) {
      from_trusted_proxy = true;
      if (auto named = snap.trusted_proxies.client_of(head)) {
        rs_->client = to_string(*named);
        client = rs_->client;
      }
    }
  // A request we refuse without reading its body leaves that body on the wire: close then.
  // Its head is consumed first, or a kept-alive connection would parse the same request again.
  bool head_consumed = false;
  bool body_in_memory = false;  // a small body read whole: nothing of it left on the wire
  bool continue_sent = false;   // a 100 Continue went out: the client is sending its body
  auto refuse = [&](int status, std::string body, std::string_view extra = {}) -> Task<bool> {
    if (!head_consumed) {
      in_.consume(head_length);
      head_consumed = true;
    }
    if (shared.access_log)
      shared.access_log->write(
          {client, method, log_host, log_path, status, body.size(), now_ns() - started, {}, 0, log_service});
    bool unread = has_body && !body_in_memory;
    uint64_t to_drop = 0;  // bytes of a sized body still on the wire, read and dropped after answering
    if (unread && content_length) {
      const size_t here = static_cast<size_t>(std::min<uint64_t>(in_.size(), *content_length));
      const uint64_t rest = *content_length - here;
      // The whole body came with the head, or the rest is small and the client is sending it
      // (not waiting for a 100 Continue it will not get): dropped after the answer, and the
      // connection stays usable. A 413 closes (the client sends more than the route takes), as
      // nginx's does; so does a stopping gateway.
      const bool sending = !expect_continue || continue_sent;
      if (rest == 0 || (client_keep && sending && status != 413 && rest <= kDropLimit && !close_after_ &&
                        !shared.draining.load(std::memory_order_relaxed))) {
        in_.consume(here);
        to_drop = rest;
        unread = false;
      }
    }
    co_await send_local(status, body, unread || !client_keep, extra);
    if (to_drop > 0 && close_after_) unread = true;  // the gateway began to stop meanwhile
    linger_ = unread;
    if (unread || !client_keep || close_after_) co_return false;
    // Within nginx's lingering_time in all and timeouts.header per read; a stopping gateway ends
    // it at once (drain() cancels an idle connection's read).
    const int64_t until = now_ns() + kLingerTime;
    while (to_drop > 0) {
      const int64_t left = until - now_ns();
      if (left <= 0) co_return false;
      in_.clear();
      in_.make_room(kInitialIn, kInitialIn);
      set_deadline(Wait::body, std::min<int64_t>(ns(cfg.timeouts.header), left));
      idle_ = true;
      error_code ec;
      size_t n = co_await async_recv_to_eof(reactor_, socket_, asio::buffer(in_.write_ptr(), in_.room()),
                                            asio::redirect_error(kAwait, ec));
      idle_ = false;
      clear_deadline();
      if (timed_out_ || ec || n == 0 || close_after_) co_return false;  // answered already: just close
      in_.commit(n);
      const size_t dropped = static_cast<size_t>(std::min<uint64_t>(n, to_drop));
      in_.consume(dropped);  // what follows is the client's next request
      to_drop -= dropped;
    }
    co_return true;
  };

  // OPTIONS for the server as a whole: `OPTIONS *`, or an absolute-form target with an empty
  // path, which the last proxy must send on as `OPTIONS *` (RFC 9112 §3.2.4), not as `/`.
  if (head.target_form == http1::TargetForm::asterisk ||
      (head.target_form == http1::TargetForm::absolute && head.method == "OPTIONS" &&
       (head.path.empty() || head.path[0] == '?')))
    co_return co_await refuse(400, json_error("asterisk-form requests (OPTIONS *) are not forwarded"));
  std::string_view target = head.path;
  std::string_view path = target, query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q);
  }
  std::optional<std::string> normalized = normalize_path(path.empty() ? std::string_view("/") : path);
  if (!normalized) co_return co_await refuse(400, json_error("malformed request path"));

  HeaderLookup lookup{&head, {}, {}};
  RouteRequest rr{head.method, head.authority, *normalized, &HeaderLookup::get, &lookup, listener_service_};
  int route_index = snap.routes ? snap.routes->match(rr) : -1;
  if (route_index < 0) {
    if (shared.metrics.no_route) shared.metrics.no_route->inc();
    co_return co_await refuse(404, json_error("no route for this request", "path", *normalized));
  }
  const config::Route& route = snap.routes->route(route_index);
  const RouteInfo& info = snap.route_info[static_cast<size_t>(route_index)];
  // Stalls of this request's bodies (either way) and of its tunnel.
  const int64_t stream_idle = route.idle_timeout ? ns(*route.idle_timeout) : ns(cfg.timeouts.idle);
  stream_idle_ = stream_idle;
  log_service = info.service;
  int status = 0;
  uint64_t bytes_down = 0;
  std::string upstream_address;
  int tries = 0;
  int interim_try = 0;  // the try whose interim answers reached the client (0: none yet)
  auto account = [&](int code) {
    status = code;
    int cls = std::clamp(code / 100, 1, 5);
    if (auto* c = info.metrics.by_class[cls]) c->inc();
    if (info.metrics.duration) info.metrics.duration->observe(static_cast<double>(now_ns() - started) / 1e9);
  };

  if (route.max_body_bytes && content_length && *content_length > route.max_body_bytes) {
    account(413);
    co_return co_await refuse(413, json_error("request body larger than this route allows"));
  }
  if (info.limiter) {
    std::string_view key;
    if (info.limit_key == RouteInfo::LimitKey::client_ip) key = client;
    else if (info.limit_key == RouteInfo::LimitKey::header) key = head.field(info.limit_header).value_or("");
    auto d = info.limit_key == RouteInfo::LimitKey::route ? info.limiter->acquire(started)
                                                           : info.limiter->acquire(key, started);
    if (!d.allowed) {
      if (info.metrics.rate_limited) info.metrics.rate_limited->inc();
      account(429);
      std::string extra = "Retry-After: " + std::to_string(resilience::retry_after_seconds(d));
      co_return co_await refuse(429, json_error("rate limit exceeded"), extra);
    }
  }
  auto cluster_it = snap.clusters.find(info.service);
  const Cluster* cluster = cluster_it == snap.clusters.end() ? nullptr : cluster_it->second.get();
  if (!cluster || cluster->endpoints.empty()) {
    if (shared.metrics.no_endpoint) shared.metrics.no_endpoint->inc();
    account(503);
    co_return co_await refuse(503, json_error("no healthy instance of the service", "service", info.service));
  }
  ClusterShared& cs = *cluster->shared;
  const resilience::CircuitBreaker breaker(cluster->limits, cs.connections, cs.pending, cs.active);
  resilience::Slot request_slot = breaker.try_acquire(resilience::Limit::requests);
  if (!request_slot) {
    if (cs.metrics.overloaded_requests) cs.metrics.overloaded_requests->inc();
    account(503);
    co_return co_await refuse(503, json_error("service overloaded: too many requests in flight", "service", info.service),
                              "x-flotilla-overloaded: max_requests");
  }
  if (cs.metrics.in_flight) cs.metrics.in_flight->add(1);
  struct InFlight {
    metrics::Gauge* g;
    ~InFlight() { if (g) g->add(-1); }
  } in_flight{cs.metrics.in_flight};

  // The hash policies' key.
  std::optional<uint64_t> hash;
  switch (cluster->hash_on.source) {
    case HashOn::Source::none:
      break;
    case HashOn::Source::client_ip:
      hash = lb::hash_key(client);
      break;
    case HashOn::Source::path:
      hash = lb::hash_key(*normalized);
      break;
    case HashOn::Source::header:
      if (auto v = head.field(cluster->hash_on.name)) hash = lb::hash_key(*v);
      break;
    case HashOn::Source::cookie:
      for (const auto& f : head.fields)
        if (iequals(f.name, "cookie"))
          if (auto v = cookie_value(f.value, cluster->hash_on.name)) {
            hash = lb::hash_key(*v);
            break;
          }
      break;
  }

  // The upstream request head. Built now: the head's views die once the buffer moves.
  std::string up_target = snap.routes->upstream_path(route_index, *normalized);
  up_target.append(query);
  UpstreamRequest ur;
  ur.method = head.method;
  ur.target = up_target;
  ur.client_ip = client_ip_;
  ur.real_ip = client;
  ur.trusted_peer = from_trusted_proxy;
  if (from_trusted_proxy)
    if (auto proto = TrustedProxies::forwarded_proto(head)) ur.proto = *proto;  // https behind a TLS terminator
  ur.default_host = info.service;
  ur.upgrade = upgrade;
  if (chunked_in) ur.chunked = true;
  else if (content_length) ur.content_length = content_length;
  else if (method == "POST" || method == "PUT" || method == "PATCH") ur.content_length = 0;
  ur.random[0] = worker_.random();
  ur.random[1] = worker_.random();
  ur.random[2] = worker_.random();
  rs_->out.clear();
  std::string_view request_id = build_upstream_head(head, ur, rs_->out);
  std::string& log_request_id = rs_->log_request_id;  // the log's own copy of the id
  if (shared.access_log) log_request_id.assign(request_id);
  in_.consume(head_length);  // from here on, `head` must not be used
  head_consumed = true;
  // The client closed before its body was whole: counted and logged as 499 (nginx's "client
  // closed request"), with no answer (nobody to read it). A body read whole before the first
  // try (up to 64 KiB) stalled before anything was forwarded: no request id in the log then.
  auto client_gone = [&] {
    account(499);
    if (shared.access_log)
      shared.access_log->write({client, method, log_host, log_path, 499, 0, now_ns() - started, upstream_address,
                                tries, info.service, tries ? std::string_view(log_request_id) : std::string_view()});
  };
  // Its body stalled past timeouts.idle: 408, and the connection closes.
  auto body_too_slow = [&]() -> Task<void> {
    timed_out_ = false;
    account(408);
    std::string body = json_error("request body not received in time");
    co_await send_local(408, body, true);
    if (shared.access_log)
      shared.access_log->write({client, method, log_host, log_path, 408, body.size(), now_ns() - started,
                                upstream_address, tries, info.service,
                                tries ? std::string_view(log_request_id) : std::string_view()});
  };

  if (chunked_in && !in_.empty()) {
    // The chunked body streams, so its head goes upstream before the body is read; what of the
    // body came with the head is checked first, so a bad chunk or an oversized body arriving with
    // it (the usual smuggling shape) is refused before anything reaches an upstream.
    http1::ChunkedDecoder probe;
    auto step = probe.feed(in_.view(), [](std::string_view) {});
    int code = step.status == http1::ChunkedDecoder::Status::error ? step.http_status
               : route.max_body_bytes && probe.announced_size() > route.max_body_bytes ? 413
                                                                                        : 0;
    if (code) {
      account(code);
      std::string body = json_error(code == 413 ? "request body larger than this route allows" : step.reason);
      co_await send_local(code, body, true);
      linger_ = true;
      if (shared.access_log)
        shared.access_log->write(
            {client, method, log_host, log_path, code, body.size(), now_ns() - started, {}, 0, info.service, {}});
      co_return false;
    }
  }
  if (expect_continue && minor == 1) {  // an HTTP/1.0 client gets no interim answer
    if (!co_await write_down("HTTP/1.1 100 Continue\r\n\r\n")) co_return false;
    continue_sent = true;
  }
  // A small sized body is read whole first: one write upstream, and a retry can resend it.
  rs_->body.clear();
  bool body_buffered = !has_body;
  if (content_length && *content_length > 0 && *content_length <= kReplayLimit) {
    while (in_.size() < *content_length) {
      in_.make_room(static_cast<size_t>(*content_length - in_.size()), kMaxHead + kReplayLimit);
      set_deadline(Wait::body, stream_idle);
      error_code ec;
      // Reads inside a message see a FIN that came with the last bytes (see recv.h).
      size_t n = co_await async_recv_to_eof(reactor_, socket_, asio::buffer(in_.write_ptr(), in_.room()),
                                            asio::redirect_error(kAwait, ec));
      clear_deadline();
      if (timed_out_) {
        co_await body_too_slow();
        co_return false;
      }
      if (ec || n == 0) {
        client_gone();
        co_return false;
      }
      in_.commit(n);
    }
    rs_->body.assign(in_.view().substr(0, static_cast<size_t>(*content_length)));
    in_.consume(static_cast<size_t>(*content_length));
    body_buffered = true;
    body_in_memory = true;
  }
  const bool may_resend = body_buffered;
  const int max_attempts = route.retry ? route.retry->attempts : 2;
  const resilience::RetryOn& retry_on = info.retry_on;
  const int64_t route_deadline = ns(route.timeout);
  const int64_t per_try = route.retry && route.retry->per_try_timeout.count() > 0 ? ns(route.retry->per_try_timeout)
                                                                                   : route_deadline;
  int64_t request_done_at = now_ns();  // the route timeout counts from the whole request (Envoy's rule)
  // The client is first checked a second into the wait for the answer, counted over every try
  // (tries shorter than a second must not escape it), then once a second (check_client).
  client_check_at_ = request_done_at + 1'000'000'000;
  Tried tried;
  rs_->chunked.reset();
  bool request_streamed = false;  // bytes of a streamed body were consumed: no second try
  bool body_read = body_buffered;  // the request's body was read to its end

  const resilience::OutlierDetector outlier(resilience::outlier_config(cluster->outlier));
  const resilience::RetryBudget budget(resilience::RetryBudgetConfig{}, cs.retries_active);
  resilience::Outcome last_outcome;
  resilience::Slot next_retry;  // taken from the budget when a retry is decided, held by that try
  // A pooled connection the service had closed (see take_idle: a close that came with the last
  // answer is not looked for under 200 ms) is no try: the request goes again to the same
  // endpoint, at once, over a new connection (a checked pooled one may be just as close to the
  // service's keep-alive timeout). nginx likewise does not count a failure on a cached connection.
  int stale_pick = -1;
  bool stale_seen = false;  // since then, every reuse is checked first
  bool last_refused = false;  // the last try's connection was refused or unreachable (see below)
  for (int attempt = 0; attempt < max_attempts; ++attempt) {
    if (cut_) break;  // the gateway stops: no new try
    int64_t now = now_ns();
    resilience::Slot retry_slot;
    const bool resend = stale_pick >= 0;  // the same try again (it keeps its budget slot)
    if (resend || attempt > 0) retry_slot = std::move(next_retry);
    // After a refused (or unreachable) connection another instance is tried at once, as nginx
    // does: nothing listens where the first one was, which says nothing of the others. The
    // backoff is for answers, resets and timeouts, connect timeouts included, which may mean the
    // service as a whole struggles (or for trying the same instance again).
    bool at_once = false;
    if (!resend && attempt > 0 && last_refused) {
      UsableContext fresh{cluster, &tried, true, now};
      for (size_t i = 0; i < cluster->endpoints.size() && !at_once; ++i) at_once = usable_endpoint(&fresh, i);
    }
    if (!resend && attempt > 0 && !at_once) {
      SteadyTimer t(worker_.io(), resilience::backoff_delay({}, attempt - 1, worker_.random()));
      error_code ec;
      co_await t.async_wait(asio::redirect_error(kAwait, ec));
      now = now_ns();
      if (cut_) break;  // the gateway stopped during the backoff: no retry
    }
    if (now - request_done_at >= route_deadline) break;
    // Counted once made: a retry whose backoff ran past the route's deadline is none.
    if (attempt > 0 && !resend && cs.metrics.retries) cs.metrics.retries->inc();
    int pick = stale_pick;
    stale_pick = -1;
    if (!resend) {
      // Pick an endpoint: not ejected, and not one this request already tried when another exists.
      UsableContext uc{cluster, &tried, true, now};
      lb::LoadBalancer& balancer = worker_.balancer(cluster_it->second);
      pick = balancer.pick({hash, {&usable_endpoint, &uc}});
      if (pick < 0) {
        uc.avoid_tried = false;
        pick = balancer.pick({hash, {&usable_endpoint, &uc}});
      }
      if (pick < 0) {
        // Everything is ejected: outlier detection never leaves a cluster with nothing.
        pick = balancer.pick({hash, {}});
      }
      if (pick < 0) break;
      tried.add(pick);
      ++tries;
    }
    const Endpoint& ep = cluster->endpoints[static_cast<size_t>(pick)];
    upstream_address = ep.state->address;
    ep.state->active.fetch_add(1, std::memory_order_relaxed);
    if (!resend) ep.state->requests_total.fetch_add(1, std::memory_order_relaxed);
    struct Active {
      EndpointState* s;
      ~Active() { s->active.fetch_sub(1, std::memory_order_relaxed); }
    } active{ep.state.get()};
    const int64_t try_started = now_ns();
    int64_t try_deadline = std::min(per_try, route_deadline - (now - request_done_at));

    Outcome outcome = Outcome::response;
    bool refused = false;  // the connection was refused or unreachable at once
    size_t rhead_len = 0;  // the response head's length, once parsed
    bool sent_nothing = false;  // a reset before any byte of the request reached the upstream
    bool heard = false;  // the upstream sent bytes for this try (an interim answer counts)
    std::string_view malformed;  // Outcome::bad_response: what was wrong (a static text)
    bool upload_stalled = false;  // Outcome::timeout while the service took no more of the body
    const char* reset_reason = "the service closed the connection before a full answer";
    bool up_write_failed = false;  // writing a streamed body to the service failed (see below)
    // A streamed request takes a pooled connection only after the peek for a close or unasked
    // bytes, however fresh: whatever the service says once the body stops is its answer. So does
    // a request that may not be sent twice (POST, PATCH): a close that came with the last answer's
    // bytes raises no event, so only the peek finds it, and such a request could not be retried
    // after meeting it (an idempotent one is; one syscall per reuse is what it costs). After a
    // stale connection every reuse is checked, and the resend itself takes a new connection.
    std::unique_ptr<UpstreamConnection> up =
        resend ? nullptr
               : worker_.take_idle(ep.state.get(), stale_seen || !body_buffered || !resilience::is_idempotent(method));
    const bool reused = up != nullptr;
    if (!up) {
      // max_connections bounds busy connections; idle pooled ones give way. At the limit this
      // worker closes its oldest idle connection to the service; if the idle ones are in other
      // workers' pools, the count may go over the limit by at most their number (so the busy
      // ones stay within it) until connections come back to a pool (put_idle closes them while
      // it is over) or expire (upstream_idle). With none idle, 503.
      const int64_t max_connections = breaker.max(resilience::Limit::connections);
      up = std::make_unique<UpstreamConnection>(worker_.io(), ep.state, cluster->shared);
      bool counted = resilience::try_increment(cs.connections, max_connections);
      if (!counted && worker_.close_idle_of(cluster->shared.get()))
        counted = resilience::try_increment(cs.connections, max_connections);
      if (!counted)
        counted = resilience::try_increment(cs.connections, max_connections + cs.idle.load(std::memory_order_relaxed));
      if (!counted) {
        if (cs.metrics.overloaded_connections) cs.metrics.overloaded_connections->inc();
        account(503);
        co_return co_await refuse(503, json_error("service overloaded: connection limit", "service", info.service),
                                  "x-flotilla-overloaded: max_connections");
      }
      up->counted = true;
      ep.state->connections.fetch_add(1, std::memory_order_relaxed);
      if (cs.metrics.connections) cs.metrics.connections->add(1);
      error_code ec;
      asio::ip::address addr = asio::ip::make_address(ep.host, ec);
      current_upstream_ = up.get();
      set_deadline(Wait::upstream, std::min(ns(cfg.timeouts.connect), try_deadline));
      timed_out_ = false;
      resilience::Slot pending = breaker.try_acquire(resilience::Limit::pending_requests);
      if (!pending) {
        if (cs.metrics.overloaded_pending) cs.metrics.overloaded_pending->inc();
        current_upstream_ = nullptr;
        clear_deadline();
        account(503);
        co_return co_await refuse(503, json_error("service overloaded: too many requests waiting for a connection",
                                                  "service", info.service),
                                  "x-flotilla-overloaded: max_pending_requests");
      }
      if (!ec) co_await up->socket.async_connect(tcp::endpoint(addr, ep.port), asio::redirect_error(kAwait, ec));
      pending.release();
      clear_deadline();
      if (ec || timed_out_) {
        // Refused or unreachable at once: nothing listens there (a crashed instance). A connect
        // timeout is not that: a full accept queue drops SYNs too, so it may be an overload.
        refused = !timed_out_ && (ec == asio::error::connection_refused || ec == asio::error::host_unreachable ||
                                  ec == asio::error::network_unreachable);
        timed_out_ = false;
        outcome = Outcome::connect_failure;
        if (cs.metrics.connect_failures) cs.metrics.connect_failures->inc();
      } else {
        up->socket.set_option(tcp::no_delay(true), ec);
      }
    }
    if (outcome == Outcome::response) {
      current_upstream_ = up.get();
      // Send the head, and the body when it is here whole.
      set_deadline(Wait::upstream, try_deadline);
      error_code ec;
      if (body_buffered) {
        // The whole request is in memory: the worker sends it when this round of events ends,
        // together with the other connections' (see flush_queued), while this coroutine already
        // waits for the answer below.
        up_queued_state_ = Queued::queued;
        up_queued_ = up.get();
        up_queued_sent_ = 0;
        worker_.queue_flush(shared_from_this());
      } else {
        ssize_t sent = send_now(up->socket.native_handle(), rs_->out, rs_->body);
        if (sent < 0) {
          ec = asio::error::connection_reset;
        } else if (static_cast<size_t>(sent) < rs_->out.size() + rs_->body.size()) {
          bool wrote = co_await write_rest(up->socket, rs_->out, rs_->body, static_cast<size_t>(sent), Wait::upstream);
          if (!wrote) ec = asio::error::connection_reset;
        }
      }
      if (!ec && !timed_out_ && !body_buffered && has_body) {
        // Stream the body: sized beyond the replay limit, or chunked (re-framed as it decodes).
        request_streamed = true;
        bool watch_up = true;  // see write_streamed
        uint64_t left = content_length.value_or(0);
        bool done = false;
        while (!done && !up_write_failed && !timed_out_) {
          if (in_.empty()) {
            in_.make_room(kRelay, kMaxHead + kRelay);
            set_deadline(Wait::body, stream_idle);
            size_t n = co_await async_recv_to_eof(reactor_, socket_, asio::buffer(in_.write_ptr(), in_.room()),
                                                  asio::redirect_error(kAwait, ec));
            clear_deadline();
            if (timed_out_ || ec || n == 0) {
              // The client stopped sending: nothing sensible can reach the upstream (`up` is
              // closed with this coroutine, so the service sees the request cut short).
              if (timed_out_) co_await body_too_slow();
              else client_gone();
              co_return false;
            }
            in_.commit(n);
          }
          set_deadline(Wait::upstream, stream_idle);
          if (!chunked_in) {
            size_t take = static_cast<size_t>(std::min<uint64_t>(left, in_.size()));
            if (route.max_body_bytes && content_length && *content_length > route.max_body_bytes) break;
            up_write_failed = co_await write_streamed(up->socket, in_.view().substr(0, take), watch_up) != UpWrite::done;
            in_.consume(take);
            left -= take;
            done = left == 0;
          } else {
            rs_->chunk_out.clear();
            auto step = rs_->chunked.feed(in_.view(), [&](std::string_view data) {
              char size[20];
              auto [e, c] = std::to_chars(size, size + sizeof size, data.size(), 16);
              rs_->chunk_out.append(size, static_cast<size_t>(e - size));
              rs_->chunk_out.append("\r\n");
              rs_->chunk_out.append(data);
              rs_->chunk_out.append("\r\n");
            });
            if (step.status == http1::ChunkedDecoder::Status::error ||
                (route.max_body_bytes && rs_->chunked.announced_size() > route.max_body_bytes)) {
              clear_deadline();
              int code = step.status == http1::ChunkedDecoder::Status::error ? step.http_status : 413;
              account(code);
              std::string body =
                  json_error(code == 413 ? "request body larger than this route allows" : step.reason);
              co_await send_local(code, body, true);
              linger_ = true;
              if (shared.access_log)
                shared.access_log->write({client, method, log_host, log_path, code, body.size(),
                                          now_ns() - started, upstream_address, tries, info.service, log_request_id});
              co_return false;  // the upstream connection is dropped with `up`
            }
            in_.consume(step.consumed);
            if (step.status == http1::ChunkedDecoder::Status::done) {
              rs_->chunk_out.append("0\r\n\r\n");
              done = true;
            }
            if (!rs_->chunk_out.empty())
              up_write_failed = co_await write_streamed(up->socket, rs_->chunk_out, watch_up) != UpWrite::done;
          }
          clear_deadline();
        }
        request_done_at = now_ns();
        body_read = done;
      }
      // A service may answer before it has read the whole body (a 413 or 401) and close: the
      // write fails, or waits with the closing answer readable (write_streamed). What it said is
      // read next, and passed on when it is a whole answer, as Envoy does (the client's
      // connection then closes; linger_close reads the rest of its body). Nothing there is a
      // reset, as before; a service that neither reads nor closes is a timeout.
      if (timed_out_) {
        outcome = Outcome::timeout;
        upload_stalled = request_streamed && !body_read;
      } else if (ec) {
        outcome = Outcome::reset;
      }
    }
    // The response head.
    if (outcome == Outcome::response) {
      if (!response_parser_) response_parser_ = worker_.take_response_parser();
      response_parser_->reset();
      rb_.clear();
      // Nothing more comes from the client for this request: its read buffer goes back unless it
      // holds the start of a pipelined one (a long poll waits holding neither relay buffer).
      if (body_read && in_.empty()) worker_.give_relay(std::move(in_));
      set_deadline(Wait::upstream, std::min(try_deadline, route_deadline - (now_ns() - request_done_at)));
      awaiting_answer_ = true;
      abort_on_close_ = route.abort_on_client_close;
      bool heard_answer = false;  // bytes of this try's answer read (an interim answer's, too)
      for (;;) {
        if (!rb_.empty()) {
          heard_answer = true;
          auto r = response_parser_->parse(rb_.view());
          if (r.status == http1::ResponseParser::Status::done) {
            int code = response_parser_->head().status;
            if (code >= 100 && code < 200 && code != 101) {
              // An interim answer. 100 is the gateway's own business (it answers Expect itself);
              // any other (103 Early Hints: a browser preloads while the service works) reaches
              // an HTTP/1.1 client as it came, end-to-end fields only (RFC 9110 §15.2). An
              // HTTP/1.0 client gets none. Those of one try only: a retry's would repeat them
              // (three 103s before a 502). A failed write is left to the final answer's.
              std::string interim;
              if (code != 100 && minor == 1 && (interim_try == 0 || interim_try == tries)) {
                build_downstream_head(response_parser_->head(), DownstreamResponse{}, interim);
                interim_try = tries;
              }
              rb_.consume(r.head_length);
              response_parser_->reset();
              if (!interim.empty()) {
                const int64_t upstream_deadline = deadline_;
                co_await write_down(interim);
                set_deadline(Wait::upstream, std::max<int64_t>(0, upstream_deadline - now_ns()));
                if (timed_out_) co_return false;  // the client took no bytes for timeouts.idle: drop it
              }
              continue;
            }
            rhead_len = r.head_length;
            // Chunk framing that came with the head is checked before the head is passed on: a
            // bad one makes a malformed answer (502, tried again as one), while the client has
            // had nothing yet. Later bytes can only cut the body short (below).
            if (rb_.size() > rhead_len &&
                http1::body_kind(response_parser_->head(), is_head) == http1::BodyKind::chunked) {
              http1::ChunkedDecoder probe;
              auto step = probe.feed(rb_.view().substr(rhead_len), [](std::string_view) {});
              if (step.status == http1::ChunkedDecoder::Status::error) {
                outcome = Outcome::bad_response;
                malformed = step.reason;
              }
            }
            break;
          }
          if (r.status == http1::ResponseParser::Status::error) {
            outcome = Outcome::bad_response;
            malformed = r.reason;
            break;
          }
        }
        error_code ec;
        size_t n;
        if (rb_.empty() && !heard_answer) {
          // The first read waits for the answer (drained-socket aware), with the relay buffer
          // lent only when the answer's first bytes come.
          if (rb_.capacity() != 0) worker_.give_relay(std::move(rb_));
          RelayLender lender(worker_, rb_);
          n = co_await async_recv_lent(reactor_, up->socket, lender, asio::redirect_error(kAwait, ec));
        } else {
          if (rb_.make_room(1024, kMaxHead) == 0) {
            outcome = Outcome::bad_response;
            malformed = "header section too large";
            break;
          }
          // The rest of a head cut in parts, or the final head after an interim one, must see a
          // FIN that came with the bytes read before (see recv.h).
          n = co_await async_recv_to_eof(reactor_, up->socket, asio::buffer(rb_.write_ptr(), rb_.room()),
                                         asio::redirect_error(kAwait, ec));
        }
        if (client_gone_) {
          // The sweep found the client gone (check_client): nobody waits for this answer.
          awaiting_answer_ = false;
          client_gone_ = false;
          up_queued_state_ = Queued::none;
          up_queued_ = nullptr;
          clear_deadline();
          client_gone();
          co_return false;
        }
        // A queued request: sent whole by the flush (or not yet, when the upstream spoke first),
        // sent in part, or refused.
        const Queued queued = up_queued_state_;
        up_queued_state_ = Queued::none;
        up_queued_ = nullptr;
        if (timed_out_) {
          outcome = Outcome::timeout;
          break;
        }
        if (queued == Queued::failed || queued == Queued::queued) {
          // The socket refused the request, or the upstream spoke or closed before it was sent
          // (whatever it said, it is no answer to this request): no byte of it left, so even a
          // POST may go to another attempt. The connection is not reused.
          outcome = Outcome::reset;
          sent_nothing = true;
          break;
        }
        if (queued == Queued::partial) {
          if (ec != asio::error::operation_aborted) {
            // The upstream spoke before it had the whole request: not an answer to it (and maybe
            // an early refusal, so not a stale connection to send the request over again).
            outcome = Outcome::reset;
            heard = true;
            reset_reason = "the service spoke before it had the whole request";
            break;
          }
          // The flush cancelled this read: write the rest here, then wait for the answer again.
          if (!co_await write_rest(up->socket, rs_->out, rs_->body, up_queued_sent_, Wait::upstream)) {
            outcome = timed_out_ ? Outcome::timeout : Outcome::reset;
            break;
          }
          continue;
        }
        if (ec || n == 0) {
          outcome = Outcome::reset;
          break;
        }
        rb_.commit(n);
        heard = true;
      }
      awaiting_answer_ = false;
      clear_deadline();
      timed_out_ = false;
    }
    current_upstream_ = nullptr;
    if (client_gone_) {
      // The sweep found the client gone while a write of this try waited (the rest of a request,
      // an interim answer): not the service's failure, and nobody to retry for.
      client_gone_ = false;
      client_gone();
      co_return false;
    }
    if (cut_) break;  // the stopping gateway closed this try's connection: not the service's failure

    // A reused connection that was closed or spoke before any byte of an answer came, at once:
    // it was stale, not this try's failure (no outlier failure, no retry or budget spent). Sent
    // again when sending twice is safe: nothing of the request left, or the method is idempotent
    // and the close came within kStaleWindow of the send (a closed socket answers the request
    // with a reset a round trip later; a close after the service worked on it is a failure).
    // At most once per try: the resend's connection is new, so never `reused`.
    if (outcome == Outcome::reset && reused && !heard && !request_streamed && may_resend &&
        (sent_nothing || (resilience::is_idempotent(method) && now_ns() - try_started < kStaleWindow)) &&
        now_ns() - request_done_at < route_deadline) {
      stale_seen = true;
      stale_pick = pick;
      if (cs.metrics.stale_connections) cs.metrics.stale_connections->inc();
      next_retry = std::move(retry_slot);
      --attempt;
      continue;  // `up` is dropped: its connection is closed
    }

    // Decide: answer, or try again.
    resilience::Outcome ro;
    switch (outcome) {
      case Outcome::connect_failure:
        ro = resilience::Outcome::connect_failure();
        break;
      case Outcome::reset:
        ro = resilience::Outcome::reset(!sent_nothing);
        break;
      case Outcome::timeout:
        ro = resilience::Outcome::timeout(true);
        break;
      case Outcome::bad_response:
        ro = resilience::Outcome::response(502);
        break;
      case Outcome::response:
        ro = resilience::Outcome::response(response_parser_->head().status);
        ep.state->observe_latency(now_ns() - try_started);
        break;
    }
    last_outcome = ro;
    last_refused = refused;
    // Per try, retried or not.
    if (outcome == Outcome::timeout && shared.metrics.upstream_timeouts) shared.metrics.upstream_timeouts->inc();
    if (outcome == Outcome::reset && shared.metrics.upstream_resets) shared.metrics.upstream_resets->inc();
    if (outlier.is_failure(ro)) ep.state->failures_total.fetch_add(1, std::memory_order_relaxed);
    if (outlier.report(*ep.state, cluster->endpoints, ro, now_ns())) {
      if (cs.metrics.ejections) cs.metrics.ejections->inc();
      spdlog::warn("gateway: ejected {} of service {} after {} consecutive failures", ep.state->address, info.service,
                   cluster->outlier.consecutive_failures);
    }
    // A body streamed from the client is gone; a buffered one (or none) can be sent again.
    bool can_resend = !request_streamed && (may_resend || outcome == Outcome::connect_failure);
    // Retry only while the route's deadline and the service's retry budget leave room; otherwise
    // this try's outcome is the answer (a route timeout is a 504, not "no usable instance").
    if (attempt + 1 < max_attempts && can_resend && resilience::should_retry(retry_on, method, ro) &&
        now_ns() - request_done_at < route_deadline) {
      retry_slot.release();  // this try is over: a request's retries hold one budget slot at a time
      // A retry after a refused connection takes no slot: the budget keeps retries from
      // multiplying the work a struggling service is given, and nothing listened there to be
      // given any. A connect timeout may be an overloaded instance dropping SYNs: budgeted.
      if (refused) continue;
      next_retry = budget.try_acquire(cs.active.load(std::memory_order_relaxed));
      if (next_retry) continue;  // `up` is dropped: its connection is closed
      if (cs.metrics.retry_budget_exhausted) cs.metrics.retry_budget_exhausted->inc();
    }
    if (outcome != Outcome::response) {
      int code = outcome == Outcome::timeout ? 504 : outcome == Outcome::connect_failure ? 503 : 502;
      account(code);
      // A malformed answer says what was wrong with it (the service's owner reads this).
      // A 504 while the body was going up: the service stopped taking it (it may be answering
      // already, a full-duplex echo: the answer is passed on once the body is through).
      std::string msg = code == 504 && upload_stalled         ? "the service stopped reading the request body"
                        : code == 504                       ? "the service did not answer in time"
                        : code == 503                       ? "could not connect to the service"
                        : outcome == Outcome::bad_response ? "the service's answer was malformed: " + std::string(malformed)
                                                            : reset_reason;
      // Keep the connection only when the request's body was read to its end: the rest of a
      // body would be read as the next request (a smuggling vector behind another proxy).
      bool ok_keep = body_read && client_keep;
      std::string body = json_error(msg, "service", info.service);
      co_await send_local(code, body, !ok_keep);
      linger_ = !body_read;
      if (shared.access_log)
        shared.access_log->write({client, method, log_host, log_path, code, body.size(), now_ns() - started,
                                  upstream_address, tries, info.service, log_request_id});
      co_return ok_keep && !close_after_;
    }

    // Pass the response on.
    const http1::ResponseHead& rh = response_parser_->head();  // its views point into rb_, unmoved since
    auto kind = http1::body_kind(rh, is_head);
    bool up_keep = rh.keep_alive;
    DownstreamResponse dr;
    dr.version_minor = minor;
    dr.date = worker_.http_date();
    const int code = rh.status;
    if (shared.draining.load(std::memory_order_relaxed) || close_after_) client_keep = false;
    if (!body_read) {
      // The service answered before it had the whole body (see above): the rest of that body is
      // still on its way from the client, so the connection closes, lingering.
      client_keep = false;
      linger_ = true;
    }
    if (up_write_failed) up_keep = false;
    if (code == 101) {
      if (!upgrade) {
        account(502);
        std::string body = json_error("the service switched protocols unasked", "service", info.service);
        co_await send_local(502, body, true);
        if (shared.access_log)
          shared.access_log->write({client, method, log_host, log_path, 502, body.size(),
                                    now_ns() - started, upstream_address, tries, info.service, log_request_id});
        co_return false;
      }
      dr.upgrade = true;
    } else if (rh.other_coding && kind != http1::BodyKind::none) {
      // A transfer coding other than chunked (gzip, …; alone, so the body runs to the close, or
      // before a final chunked) is not decoded here, and passing the bytes on without the
      // hop-by-hop Transfer-Encoding field would hand the client coded bytes: refuse. The
      // upstream connection, its body unread, closes with `up`.
      account(502);
      std::string body = json_error("the service answered with an unsupported transfer coding", "service",
                                    info.service);
      co_await send_local(502, body, !client_keep);
      if (shared.access_log)
        shared.access_log->write({client, method, log_host, log_path, 502, body.size(), now_ns() - started,
                                  upstream_address, tries, info.service, log_request_id});
      co_return client_keep && !close_after_;
    } else {
      switch (kind) {
        case http1::BodyKind::none:  // HEAD, 1xx, 204, 304: a length describes what GET would get
          if (is_head || code == 304) dr.content_length = rh.content_length;
          break;
        case http1::BodyKind::content_length:
          dr.content_length = rh.content_length;
          break;
        case http1::BodyKind::chunked:
          if (minor == 1) dr.chunked = true;
          else client_keep = false;  // an HTTP/1.0 client gets the decoded body up to the close
          break;
        case http1::BodyKind::until_close:
          client_keep = false;
          up_keep = false;
          break;
      }
    }
    if (upgrade && code != 101) client_keep = false;  // the client may still send its new protocol
    dr.keep_alive = client_keep;
    rs_->down_head.clear();
    build_downstream_head(rh, dr, rs_->down_head);
    rb_.consume(rhead_len);  // `rh` must not be used past this
    rs_->down_chunked.reset();
    account(code);

    bool ok = true;
    // Why the service's body did not reach its end (its fault, not the client's).
    enum class BodyCut : uint8_t { none, closed, timeout, malformed };
    BodyCut body_cut = BodyCut::none;
    if (code == 101) {
      // Tunnel: bytes both ways until either side closes or the idle timeout passes.
      if (!co_await write_down(rs_->down_head, rb_.view())) co_return false;
      bytes_down += rb_.size();
      rb_.clear();
      auto tunnel_up = std::shared_ptr<UpstreamConnection>(up.release());
      current_upstream_ = tunnel_up.get();
      const int64_t idle = stream_idle;
      auto self = shared_from_this();
      // client -> service, on a second coroutine; this one does service -> client. `upload`
      // tells this one when the other has ended (its timer is cancelled then).
      struct Upload {
        explicit Upload(asio::io_context& io) : ended(io) {}
        bool done = false;
        SteadyTimer ended;
      };
      auto upload = std::make_shared<Upload>(worker_.io());
      asio::co_spawn(
          worker_.io().get_executor(),
          [self, tunnel_up, idle, upload]() -> Task<void> {
            error_code ec;
            if (!self->in_.empty()) {
              co_await asio::async_write(tunnel_up->socket, asio::buffer(self->in_.view().data(), self->in_.size()),
                                         asio::redirect_error(kAwait, ec));
              self->in_.clear();
            }
            std::array<char, 16384> buf;
            while (!ec) {
              size_t n = co_await async_recv_to_eof(self->reactor_, self->socket_, asio::buffer(buf),
                                                    asio::redirect_error(kAwait, ec));
              if (ec || n == 0) break;
              self->set_deadline(Wait::tunnel, idle);
              co_await asio::async_write(tunnel_up->socket, asio::buffer(buf.data(), n), asio::redirect_error(kAwait, ec));
            }
            tunnel_up->socket.shutdown(tcp::socket::shutdown_send, ec);
            upload->done = true;
            upload->ended.cancel();
          },
          asio::detached);
      // The relay buffer (empty now) carries service -> client: a buffer declared here would be
      // part of this coroutine's frame, allocated for every request, tunnel or not.
      const asio::mutable_buffer buf(rb_.write_ptr(), rb_.room());
      error_code ec;
      if (!nodelay_) set_nodelay();  // a tunnel's small messages must not wait for ACKs
      set_deadline(Wait::tunnel, idle);
      bool service_finished = false;  // the service's FIN, not an error
      for (;;) {
        size_t n = co_await async_recv_to_eof(reactor_, tunnel_up->socket, buf, asio::redirect_error(kAwait, ec));
        if (ec || n == 0) {
          service_finished = !ec || ec == asio::error::eof;
          break;
        }
        set_deadline(Wait::tunnel, idle);
        co_await asio::async_write(socket_, asio::buffer(buf.data(), n), asio::redirect_error(kAwait, ec));
        if (ec) break;
        bytes_down += n;
      }
      // A half-close: the service is done sending but may still read (a TCP tunnel's shutdown(),
      // a protocol whose client uploads after the service's last word). The client gets the FIN
      // and the tunnel stays open the other way until the client closes too, or the idle timeout
      // (refreshed by the client's bytes) closes both, as HAProxy and Envoy pass half-closes on.
      if (service_finished && !upload->done) {
        error_code ignored;
        socket_.shutdown(tcp::socket::shutdown_send, ignored);
        upload->ended.expires_at(SteadyTimer::time_point::max());
        co_await upload->ended.async_wait(asio::redirect_error(kAwait, ignored));
      }
      clear_deadline();
      error_code ignored;
      socket_.shutdown(tcp::socket::shutdown_send, ignored);
      socket_.close(ignored);
      tunnel_up->socket.close(ignored);
      current_upstream_ = nullptr;
      // Logged when the tunnel ends: its duration is the session's, its bytes the service's.
      if (shared.access_log)
        shared.access_log->write({client, method, log_host, log_path, code, bytes_down, now_ns() - started,
                                  upstream_address, tries, info.service, log_request_id,
                                  cut_ ? std::string_view("gateway stopped") : std::string_view()});
      co_return false;
    }

    // The body: what came with the head, then the rest as it arrives (never more than the relay
    // buffer held at once; the downstream write's pace is the back-pressure).
    if (kind == http1::BodyKind::none) {
      ok = co_await write_down(rs_->down_head);
      up_keep = up_keep && rb_.empty();
    } else if (kind == http1::BodyKind::content_length) {
      uint64_t left = *dr.content_length;
      size_t first = static_cast<size_t>(std::min<uint64_t>(left, rb_.size()));
      // The whole answer is here (the usual case): the upstream connection goes back to the pool
      // before the client sees the answer, so the client's next request finds it there. Returned
      // after, a next request that another worker took meanwhile would find the service's
      // connections all busy (503 at max_connections: 1) though this one is done with its own.
      if (first == left && rb_.size() == first && up_keep &&
          body_read)
        worker_.put_idle(std::move(up));
      {
        // The usual whole small answer: written here without entering a coroutine.
        std::string_view body = rb_.view().substr(0, first);
        before_write_down();
        ssize_t n = send_now(socket_.native_handle(), rs_->down_head, body);
        ok = n >= 0;
        if (ok && static_cast<size_t>(n) < rs_->down_head.size() + body.size())
          ok = co_await write_rest(socket_, rs_->down_head, body, static_cast<size_t>(n), Wait::write);
      }
      rb_.consume(first);
      left -= first;
      if (ok) bytes_down += first;  // what reached the client (a failed write counts nothing)
      // Bytes past the answer's end: the service's framing is off, or it spoke unasked. Dropped,
      // and so is the connection (as the no-body and chunked answers do).
      if (left == 0 && !rb_.empty()) up_keep = false;
      while (ok && left > 0) {
        rb_.clear();
        set_deadline(Wait::upstream, stream_idle);
        current_upstream_ = up.get();
        error_code ec;
        // A body cut short by the service's close must be seen at once, not at the idle timeout.
        size_t n = co_await async_recv_to_eof(reactor_, up->socket,
            asio::buffer(rb_.write_ptr(), static_cast<size_t>(std::min<uint64_t>(rb_.room(), left))),
            asio::redirect_error(kAwait, ec));
        clear_deadline();
        current_upstream_ = nullptr;
        if (ec || n == 0 || timed_out_) {
          ok = false;
          body_cut = timed_out_ ? BodyCut::timeout : BodyCut::closed;
          break;
        }
        rb_.commit(n);
        left -= n;
        // The answer's last bytes: back to the pool before the client has them, as above (the
        // reads ask for no more than `left`, so nothing past the answer is in rb_).
        if (left == 0 && up_keep && body_read) worker_.put_idle(std::move(up));
        ok = co_await write_down(rb_.view());
        if (ok) bytes_down += n;
      }
      rb_.clear();
      up_keep = up_keep && ok;
    } else {
      // Chunked (passed through as framed, the decoder finding its end) or until the close.
      bool head_sent = false;
      bool end = false;
      while (ok && !end) {
        std::string_view pass = rb_.view();
        std::string decoded;
        if (kind == http1::BodyKind::chunked) {
          http1::ChunkedDecoder::Step step;
          if (minor == 1) {
            step = rs_->down_chunked.feed(rb_.view(), [](std::string_view) {});
            pass = rb_.view().substr(0, step.consumed);
          } else {
            step = rs_->down_chunked.feed(rb_.view(), [&decoded](std::string_view d) { decoded.append(d); });
            pass = decoded;
          }
          if (step.status == http1::ChunkedDecoder::Status::error) {
            ok = false;
            body_cut = BodyCut::malformed;
            break;
          }
          end = step.status == http1::ChunkedDecoder::Status::done;
          if (end) up_keep = up_keep && step.consumed == rb_.size();
          // The last chunk is here: the connection goes back to the pool before the client has
          // it (as for a sized answer).
          if (end && up_keep && ok && body_read && up) worker_.put_idle(std::move(up));
        }
        ok = co_await write_down(head_sent ? std::string_view() : std::string_view(rs_->down_head), pass);
        head_sent = true;
        if (ok) bytes_down += pass.size();
        rb_.clear();
        if (!ok || end) break;
        set_deadline(Wait::upstream, stream_idle);
        current_upstream_ = up.get();
        rb_.make_room(kRelay, kRelay);
        error_code ec;
        // A FIN that came with the last bytes must be seen: it ends a body delimited by the
        // close, and it cuts short any other (at once, not at the idle timeout).
        size_t n = co_await async_recv_to_eof(reactor_, up->socket, asio::buffer(rb_.write_ptr(), rb_.room()),
                                              asio::redirect_error(kAwait, ec));
        clear_deadline();
        current_upstream_ = nullptr;
        if (timed_out_) {
          ok = false;
          body_cut = BodyCut::timeout;
          break;
        }
        if (ec || n == 0) {
          if (kind == http1::BodyKind::until_close && (!ec || ec == asio::error::eof)) {
            end = true;  // the close is the end
          } else {
            ok = false;  // a reset is not the end
            body_cut = BodyCut::closed;
          }
          break;
        }
        rb_.commit(n);
      }
      // The client's body ends with the close too (one delimited by the close, or chunked and
      // decoded for an HTTP/1.0 client): one that did not end (a reset, a timeout, a bad chunk)
      // is reset, so the client does not take the part it got for the whole.
      if (!end && (kind == http1::BodyKind::until_close || minor == 0)) reset_down_ = true;
      if (kind == http1::BodyKind::until_close) up_keep = false;
      up_keep = up_keep && ok && end;
    }
    timed_out_ = false;
    if (up && up_keep && ok && body_read)
      worker_.put_idle(std::move(up));
    // A body the service cut short (closed, reset, stalled, malformed) is its failure, though its
    // head was a success: counted as a reset or timeout, in its failures and by outlier detection,
    // as Envoy counts an upstream reset after the headers. A body the stopping gateway cut is not.
    std::string_view cut_note;
    if (cut_ && !ok) {
      cut_note = "gateway stopped";
    } else if (body_cut != BodyCut::none) {
      const bool timeout = body_cut == BodyCut::timeout;
      cut_note = timeout ? "service stalled" : body_cut == BodyCut::malformed ? "malformed body" : "service closed";
      if (timeout && shared.metrics.upstream_timeouts) shared.metrics.upstream_timeouts->inc();
      if (!timeout && shared.metrics.upstream_resets) shared.metrics.upstream_resets->inc();
      // A stall is counted but judges no one: a stream quiet past a short idle_timeout is the
      // route's setting as much as the service's fault. A head that was a failure already (a
      // 5xx) was counted once, with its try.
      const resilience::Outcome cut_outcome = resilience::Outcome::reset(true);
      if (!timeout && !outlier.is_failure(last_outcome) && outlier.is_failure(cut_outcome)) {
        ep.state->failures_total.fetch_add(1, std::memory_order_relaxed);
        if (outlier.report(*ep.state, cluster->endpoints, cut_outcome, now_ns())) {
          if (cs.metrics.ejections) cs.metrics.ejections->inc();
          spdlog::warn("gateway: ejected {} of service {} after {} consecutive failures", ep.state->address,
                       info.service, cluster->outlier.consecutive_failures);
        }
      }
    }
    if (shared.access_log)
      shared.access_log->write({client, method, log_host, log_path, code, bytes_down, now_ns() - started,
                                upstream_address, tries, info.service, log_request_id, cut_note});
    co_return ok && client_keep;
  }

  if (cut_) {
    // The stopping gateway cut the request before any answer (Connection::cut reset the client):
    // logged as what the client got, a 503 with nothing sent, and no failure of the service's.
    account(503);
    if (shared.access_log)
      shared.access_log->write({client, method, log_host, log_path, 503, 0, now_ns() - started, upstream_address,
                                tries, info.service, log_request_id, "gateway stopped"});
    co_return false;
  }
  // A retry's backoff ran past the route's deadline (504), or no try could be made (no endpoint: 503).
  const bool late = tries > 0 && now_ns() - request_done_at >= route_deadline;
  const int code = late ? 504 : 503;
  account(code);
  std::string body = json_error(late ? "the service did not answer in time" : "no usable instance of the service",
                                "service", info.service);
  co_await send_local(code, body, has_body && !body_buffered);
  linger_ = has_body && !body_buffered;
  if (shared.access_log)
    shared.access_log->write({client, method, log_host, log_path, code, body.size(), now_ns() - started,
                              upstream_address, tries, info.service, log_request_id});
  co_return !(has_body && !body_buffered) && client_keep;
}

}  // namespace flotilla::gateway
