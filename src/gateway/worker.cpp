#include "gateway/worker.h"

#include <boost/asio/post.hpp>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "common/metrics.h"
#include "common/thread_name.h"
#include "gateway/connection.h"
#include "http/server.h"

namespace flotilla::gateway {

namespace {
constexpr auto kSweep = std::chrono::milliseconds(50);
// Pooled request strings above this are given back (typical heads stay well under).
constexpr size_t kKeptStringCapacity = 8 * 1024;
// After an accept error (out of descriptors or memory): how long a listener rests.
constexpr auto kAcceptBackoff = std::chrono::milliseconds(100);

// The client's address as text (X-Forwarded-For, X-Real-IP, the access log, rate-limit keys): an
// IPv4 client of a dual-stack IPv6 listener ([::]:8080) arrives as ::ffff:a.b.c.d and is written
// a.b.c.d, as on an IPv4 listener and as Envoy writes it, so one client has one name.
std::string client_address_text(const asio::ip::address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped())
    return asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6()).to_string();
  return a.to_string();
}
}  // namespace

UpstreamConnection::~UpstreamConnection() {
  if (pooled) cluster->idle.fetch_sub(1, std::memory_order_relaxed);
  if (counted) {
    endpoint->connections.fetch_sub(1, std::memory_order_relaxed);
    cluster->connections.fetch_sub(1, std::memory_order_relaxed);
    if (cluster->metrics.connections) cluster->metrics.connections->add(-1);
  }
}

Worker::Worker(int id, WorkerShared& shared)
    : id_(id), shared_(shared), io_(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE), sweep_timer_(io_) {
  flush_round_end_ = std::make_unique<RoundEnd>(io_, [this] { flush_queued(); });
  // Made here, not in start(): another worker may hand a connection over before this one starts.
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) throw std::runtime_error(std::string("gateway: eventfd: ") + std::strerror(errno));
  wake_ = std::make_unique<asio::posix::basic_stream_descriptor<Executor>>(io_, wake_fd_);
}

Worker::~Worker() {
  stop_and_join();
  idle_.clear();
  acceptors_.clear();
  // Sockets handed over but never taken up (the worker stopped first) close with the queue.
  std::lock_guard lock(inbox_mu_);
  inbox_.clear();
}

uint16_t Worker::listen(const std::string& address, uint16_t port_override, const std::string& service) {
  std::string host;
  uint16_t port;
  if (!http::split_host_port(address, host, port)) throw std::runtime_error("gateway.listen: bad address " + address);
  if (port_override) port = port_override;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) throw std::runtime_error("gateway.listen: " + host + " is not an IP address");
  tcp::endpoint ep(addr, port);
  if (!port_override && port != 0) {
    // SO_REUSEPORT lets every worker bind the port, but it would just as well let another process
    // (a second gateway with the same file) bind it and silently take a share of the connections.
    // A socket that does not share finds out whether anything listens there already.
    Acceptor probe(io_);
    probe.open(ep.protocol(), ec);
    if (!ec) probe.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) probe.bind(ep, ec);
    if (ec) throw std::runtime_error("gateway cannot listen on " + address + ": " + ec.message());
  }
  UniqueFd fd = open_listening_socket(ep);
  shared_.listeners.push_back({service, ep.protocol()});
  return acceptors_[install_listener(std::move(fd), &shared_.listeners.back())]->local_endpoint().port();
}

UniqueFd open_listening_socket(const tcp::endpoint& ep) {
  UniqueFd fd(::socket(ep.protocol().family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  int one = 1;
  if (!fd.valid() || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0 ||
      ::bind(fd.get(), ep.data(), static_cast<socklen_t>(ep.size())) != 0 || ::listen(fd.get(), 4096) != 0) {
    const int error = errno;
    const std::string address = ep.address().is_v6() ? "[" + ep.address().to_string() + "]:" + std::to_string(ep.port())
                                                     : ep.address().to_string() + ":" + std::to_string(ep.port());
    throw std::runtime_error("gateway cannot listen on " + address + ": " + std::strerror(error));
  }
  return fd;
}

size_t Worker::install_listener(UniqueFd fd, const Listener* listener) {
  auto acceptor = std::make_unique<Acceptor>(io_);
  boost::system::error_code ec;
  acceptor->assign(listener->protocol, fd.get(), ec);
  if (ec) throw std::runtime_error("gateway: cannot take up a listening socket: " + ec.message());
  fd.release();  // the acceptor owns it now
  acceptor->non_blocking(true, ec);  // async_accept4() calls accept4() directly
  acceptors_.push_back(std::move(acceptor));
  listeners_.push_back(listener);
  return acceptors_.size() - 1;
}

void Worker::add_listener(UniqueFd fd, const Listener* listener) {
  {
    std::lock_guard lock(inbox_mu_);
    new_listeners_.emplace_back(std::move(fd), listener);
  }
  wake();
}

void Worker::update_date() {
  const std::time_t t = std::time(nullptr);
  if (t == date_second_) return;
  date_second_ = t;
  std::tm tm{};
  gmtime_r(&t, &tm);
  // IMF-fixdate (RFC 9110 5.6.7), without the locale strftime would consult.
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::snprintf(date_, sizeof date_, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7], tm.tm_mday,
                kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void Worker::start() {
  update_date();
  wait_inbox();  // queued before the thread runs: an eventfd written meanwhile is seen at once
  for (size_t i = 0; i < acceptors_.size(); ++i) accept(i);
  sweep();
  thread_ = std::thread([this] {
    set_thread_name("gw-worker-" + std::to_string(id_));
    for (;;) {
      try {
        io_.run();
        break;
      } catch (const std::exception& e) {
        spdlog::error("gateway worker {}: unexpected error (the worker keeps running): {}", id_, e.what());
      }
    }
  });
}

void Worker::accept(size_t i) {
  async_accept4(reactor_of(io_), *acceptors_[i], [this, i](const boost::system::error_code& ec, Accepted a) {
    if (ec == asio::error::operation_aborted || draining_) return;  // `a` closes what it holds
    if (!ec) {
      try {
        if (!hand_over(a.fd, a.peer, listeners_[i])) adopt(std::move(a.fd), a.peer, listeners_[i]);
      } catch (const std::exception& e) {
        // Out of memory, most likely: this connection is lost (adopt's socket closed it), the
        // listener is not.
        spdlog::error("gateway worker {}: cannot take up a connection: {}", id_, e.what());
      }
      accept(i);
      return;
    }
    // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or anything else accept4()
    // may keep returning: rest instead of spinning; the queue keeps its connections. Logged at
    // most every 10 s, with how often it happened since.
    ++accept_errors_;
    int64_t now = now_ns();
    if (now - accept_error_logged_ns_ >= 10'000'000'000LL || accept_error_logged_ns_ == 0) {
      spdlog::warn("gateway worker {}: accept: {} (accepting again in {} ms; {} accept error(s) since the last report)",
                   id_, ec.message(), kAcceptBackoff.count(), accept_errors_);
      accept_error_logged_ns_ = now;
      accept_errors_ = 0;
    }
    auto t = std::make_shared<SteadyTimer>(io_, kAcceptBackoff);
    t->async_wait([this, i, t](const boost::system::error_code& e) {
      if (!e && !draining_) accept(i);
    });
  });
}

// Every path that does not start a connection closes fd (it is owned here), a throw included.
void Worker::adopt(UniqueFd fd, const tcp::endpoint& peer, const Listener* listener) {
  if (connection_count_.load(std::memory_order_relaxed) >= static_cast<size_t>(shared_.config.max_connections)) {
    // Over the per-worker limit (every worker is, or balancing would have found a less loaded
    // one): close at once. The process stays alive under a flood.
    if (shared_.metrics.connections_rejected) shared_.metrics.connections_rejected->inc();
    return;
  }
  boost::system::error_code ec;
  Socket socket(io_);
  socket.assign(listener->protocol, fd.get(), ec);  // may throw: cannot allocate its reactor state
  if (ec) {
    spdlog::error("gateway worker {}: cannot take up an accepted connection: {}", id_, ec.message());
    return;
  }
  fd.release();  // the socket owns it now
  adopt_accepted(socket);
  auto c = std::make_shared<Connection>(*this, std::move(socket), listener->service,
                                        client_address_text(peer.address()));
  c->start();
}

bool Worker::hand_over(UniqueFd& fd, const tcp::endpoint& peer, const Listener* listener) {
  if (shared_.workers.size() < 2) return false;
  Worker* best = nullptr;
  size_t best_load = load();
  for (Worker* w : shared_.workers) {
    if (w == this || w->draining_requested()) continue;
    if (size_t l = w->load(); l < best_load) {
      best = w;
      best_load = l;
    }
  }
  if (!best) return false;  // this worker is among the least loaded: keep it
  // Not yet in this worker's reactor: the descriptor moves with no epoll_ctl on this side.
  if (!best->receive(fd, peer, listener)) return false;
  if (shared_.metrics.connections_handed_over) shared_.metrics.connections_handed_over->inc();
  return true;
}

bool Worker::receive(UniqueFd& fd, const tcp::endpoint& peer, const Listener* listener) {
  incoming_.fetch_add(1, std::memory_order_relaxed);
  bool was_empty;
  try {
    std::lock_guard lock(inbox_mu_);
    was_empty = inbox_.empty();
    // emplace_back moves from `fd` only once it has room: if growing throws, fd is untouched.
    inbox_.emplace_back(std::move(fd), peer, listener);
  } catch (const std::bad_alloc&) {
    incoming_.fetch_sub(1, std::memory_order_relaxed);
    return false;  // the caller keeps the descriptor
  }
  // A non-empty queue has a wake-up on its way, or is being taken (the taker reads the eventfd
  // before it takes the queue, so whatever it misses announces itself again).
  if (was_empty) wake();
  return true;
}

void Worker::wake() {
  uint64_t one = 1;
  while (::write(wake_fd_, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void Worker::wait_inbox() {
  wake_->async_wait(asio::posix::descriptor_base::wait_read, [this](const boost::system::error_code& ec) {
    if (ec) return;  // closed with the worker
    take_inbox();  // reads the eventfd first: a flag raised before a later wake() is seen below
    if (!check_requests()) return;
    wait_inbox();
  });
}

bool Worker::check_requests() {
  if (stop_requested_.load(std::memory_order_acquire)) {
    io_.stop();
    return false;
  }
  if (drain_requested_.load(std::memory_order_acquire) && !draining_) start_draining();
  if (cut_requested_.load(std::memory_order_acquire) && !cut_done_) {
    cut_done_ = true;
    // cut() only closes and cancels: completions are posted, so live_ does not change here.
    for (Connection* c : live_) c->cut();
  }
  return true;
}

void Worker::take_inbox() {
  uint64_t n;
  while (::read(wake_fd_, &n, sizeof n) < 0 && errno == EINTR) {
  }
  std::vector<Handover> batch;
  std::vector<std::pair<UniqueFd, const Listener*>> listeners;
  {
    std::lock_guard lock(inbox_mu_);
    batch.swap(inbox_);
    listeners.swap(new_listeners_);
  }
  for (auto& [fd, listener] : listeners) {
    if (draining_) continue;  // closed with `listeners`
    try {
      accept(install_listener(std::move(fd), listener));
    } catch (const std::exception& e) {
      spdlog::error("gateway worker {}: cannot listen for {}: {}", id_, listener->service, e.what());
    }
  }
  for (Handover& h : batch) {
    try {
      if (draining_)
        h.fd.reset();
      else
        adopt(std::move(h.fd), h.peer, h.listener);  // owns the descriptor, throwing or not
    } catch (const std::exception& e) {
      spdlog::error("gateway worker {}: cannot take up a connection: {}", id_, e.what());
    }
    incoming_.fetch_sub(1, std::memory_order_relaxed);  // after adopt counted it
  }
}

std::list<Connection*>::iterator Worker::track(Connection* c) {
  connection_count_.fetch_add(1, std::memory_order_relaxed);
  if (shared_.metrics.connections) shared_.metrics.connections->add(1);
  if (shared_.metrics.connections_total) shared_.metrics.connections_total->inc();
  live_.push_front(c);
  return live_.begin();
}

void Worker::untrack(std::list<Connection*>::iterator it) {
  live_.erase(it);
  connection_count_.fetch_sub(1, std::memory_order_relaxed);
  if (shared_.metrics.connections) shared_.metrics.connections->add(-1);
}

void Worker::sweep() {
  update_date();
  sweep_timer_.expires_after(kSweep);
  sweep_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    // Other threads only raise flags (and wake the worker through its eventfd); the worker acts
    // on them on its own thread, so its io_context needs no locks at all
    // (BOOST_ASIO_CONCURRENCY_HINT_UNSAFE). Checked here too, in case a wake-up was lost.
    if (!check_requests()) return;
    int64_t now = now_ns();
    // expire() may end a connection (and untrack it) only later, on its own coroutine: safe to
    // walk the list here.
    for (Connection* c : live_) {
      if (c->deadline() <= now) c->expire(now);
      else c->check_client(now);
    }
    // Pooled upstream connections idle past the limit are closed before the backend closes them.
    int64_t limit = std::chrono::duration_cast<std::chrono::nanoseconds>(shared_.config.timeouts.upstream_idle).count();
    for (auto it = idle_.begin(); it != idle_.end();) {
      auto& v = it->second;
      std::erase_if(v, [&](const std::unique_ptr<UpstreamConnection>& c) { return now - c->idle_since_ns > limit; });
      it = v.empty() ? idle_.erase(it) : std::next(it);
    }
    sweep();
  });
}

const Snapshot& Worker::snapshot() {
  uint64_t v = shared_.source->version();
  if (v != snapshot_version_ || !snapshot_) {
    snapshot_ = shared_.source->get();
    snapshot_version_ = snapshot_->version;
    // Balancers of clusters that are gone are dropped; the others are checked on use.
    last_balancer_ = nullptr;
    for (auto it = balancers_.begin(); it != balancers_.end();)
      it = snapshot_->clusters.count(it->first) ? std::next(it) : balancers_.erase(it);
  }
  return *snapshot_;
}

lb::LoadBalancer& Worker::balancer(const std::shared_ptr<const Cluster>& cluster) {
  // The last cluster asked for, without hashing its name (the usual case: one route's service).
  if (last_balancer_ && last_balancer_->cluster.get() == cluster.get() && last_balancer_->version == cluster->version)
    return *last_balancer_->lb;
  auto& b = balancers_[cluster->name];
  last_balancer_ = &b;
  if (!b.lb || b.version != cluster->version) {  // versions are unique per endpoint set and policy
    b.lb = lb::make_load_balancer(cluster->policy, cluster->endpoints, rng_(), cluster->lb_table);
    b.version = cluster->version;
    b.cluster = cluster;  // the balancer points into this cluster's endpoint vector
  }
  return *b.lb;
}

std::unique_ptr<UpstreamConnection> Worker::take_idle(EndpointState* endpoint, bool always_check) {
  auto it = idle_.find(endpoint);
  if (it == idle_.end()) return nullptr;
  auto& v = it->second;
  while (!v.empty()) {
    auto c = std::move(v.back());  // the most recently used: warm, and the least likely to be closed
    v.pop_back();
    c->pooled = false;
    c->cluster->idle.fetch_sub(1, std::memory_order_relaxed);
    // A connection the backend closed (or that sent something unasked) is not reused: one
    // non-blocking peek catches the close that the idle timeout did not.
    // Under load connections come back within milliseconds: the peek is skipped for one back in
    // the pool for under 200 ms whose socket has had no readiness event since its answer was
    // read to the last byte (the reactor's read flag, cleared by that read; recv.h). Bytes or a
    // close that came later set it, so the connection is peeked and dropped: reused, its unasked
    // bytes would be taken for the next request's answer. A FIN that came together with the
    // answer's last bytes raises no event of its own and is caught only past the 200 ms.
    char byte;
    bool fresh = !always_check && now_ns() - c->idle_since_ns < 200'000'000 && !reads_speculatively(c->socket);
    ssize_t n = fresh ? -1 : ::recv(c->socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (fresh || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))) return c;
  }
  return nullptr;  // the empty vector stays for put_idle (no map node per request); the sweep drops it
}

Buffer Worker::take_relay() {
  if (spare_relays_.empty()) return Buffer(16 * 1024);
  Buffer b = std::move(spare_relays_.back());
  spare_relays_.pop_back();
  return b;
}

void Worker::give_relay(Buffer&& b) {
  if (b.capacity() == 16 * 1024 && spare_relays_.size() < 256) {
    b.clear();
    spare_relays_.push_back(std::move(b));
  }
  b = Buffer();
}

std::unique_ptr<RequestScratch> Worker::take_scratch() {
  if (spare_scratch_.empty()) return std::make_unique<RequestScratch>();
  auto s = std::move(spare_scratch_.back());
  spare_scratch_.pop_back();
  return s;
}

void Worker::give_scratch(std::unique_ptr<RequestScratch> s) {
  if (!s || spare_scratch_.size() >= 256) return;
  s->parser.reset();
  // A large request's copies (its head forwarded, its body kept for retries) are not kept for
  // the next one: a 50 KiB head would otherwise stay pinned in the pool.
  for (std::string* str : {&s->out, &s->down_head, &s->body, &s->chunk_out, &s->log_path, &s->log_host,
                           &s->log_request_id})
    if (str->capacity() > kKeptStringCapacity) std::string().swap(*str);
  spare_scratch_.push_back(std::move(s));
}

std::unique_ptr<http1::ResponseParser> Worker::take_response_parser() {
  if (spare_parsers_.empty()) return std::make_unique<http1::ResponseParser>();
  auto p = std::move(spare_parsers_.back());
  spare_parsers_.pop_back();
  return p;
}

void Worker::give_response_parser(std::unique_ptr<http1::ResponseParser> p) {
  if (p && spare_parsers_.size() < 256) spare_parsers_.push_back(std::move(p));
}

void Worker::put_idle(std::unique_ptr<UpstreamConnection> c) {
  if (draining_) return;
  if (c->cluster->connections.load(std::memory_order_relaxed) > c->cluster->connection_limit.load(std::memory_order_relaxed))
    return;  // closed: back within the limit
  c->idle_since_ns = now_ns();
  c->pooled = true;
  c->cluster->idle.fetch_add(1, std::memory_order_relaxed);
  idle_[c->endpoint.get()].push_back(std::move(c));
}

bool Worker::close_idle_of(const ClusterShared* cluster) {
  UpstreamConnection* oldest = nullptr;
  std::vector<std::unique_ptr<UpstreamConnection>>* in = nullptr;
  for (auto& [endpoint, v] : idle_)
    if (!v.empty() && v.front()->cluster.get() == cluster && (!oldest || v.front()->idle_since_ns < oldest->idle_since_ns)) {
      oldest = v.front().get();
      in = &v;
    }
  if (!in) return false;
  in->erase(in->begin());  // its destructor closes it and gives back its counts
  return true;
}

void Worker::queue_flush(std::shared_ptr<Connection> c) {
  flush_list_.push_back(std::move(c));
  flush_round_end_->schedule();  // once per round
}

void Worker::flush_queued() {
  flushing_.swap(flush_list_);  // a flush never queues another, but keep the lists apart anyway
  for (auto& c : flushing_) c->flush_queued();
  flushing_.clear();
}

void Worker::drain() {
  drain_requested_.store(true, std::memory_order_release);
  wake();
}

void Worker::cut() {
  cut_requested_.store(true, std::memory_order_release);
  wake();
}

void Worker::start_draining() {
  draining_ = true;
  boost::system::error_code ec;
  for (auto& a : acceptors_) a->close(ec);
  for (Connection* c : live_) c->drain();
  idle_.clear();
}

void Worker::stop_and_join() {
  if (!thread_.joinable()) return;
  stop_requested_.store(true, std::memory_order_release);
  wake();  // the loop stops at once (and at the latest at the next sweep)
  thread_.join();
}

}  // namespace flotilla::gateway
