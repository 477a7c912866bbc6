// One gateway worker: a thread running its own io_context (single-threaded, no locks on the
// request path), its own SO_REUSEPORT listener sockets, its own upstream connection pools and
// load balancers. Internal to src/gateway: this header pulls in Asio.
#pragma once

#include <utility>  // Boost 1.74 awaitable.hpp uses std::exchange without including it
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/basic_stream_socket.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/basic_stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/random.h"
#include "common/unique_fd.h"
#include "config/flotilla_file.h"
#include "gateway/lb/load_balancer.h"
#include "gateway/buffer.h"
#include "gateway/http1/chunked_decoder.h"
#include "gateway/http1/request_parser.h"
#include "gateway/http1/response_parser.h"
#include "gateway/round_end.h"
#include "gateway/snapshot.h"

namespace flotilla::gateway {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
// The worker's own executor type everywhere on the data plane, not any_io_executor: no
// type-erased executor call per operation (measured ~2-3 % of the proxy's CPU).
using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<tcp, Executor>;
using Acceptor = asio::basic_socket_acceptor<tcp, Executor>;
using SteadyTimer =
    asio::basic_waitable_timer<std::chrono::steady_clock, asio::wait_traits<std::chrono::steady_clock>, Executor>;
template <typename T>
using Task = asio::awaitable<T, Executor>;

class AccessLog;
class Connection;
class Worker;

// Process-wide gateway metrics not tied to a route or service.
struct GatewayMetrics {
  metrics::Gauge* connections = nullptr;
  metrics::Counter* connections_total = nullptr;
  metrics::Counter* connections_rejected = nullptr;
  metrics::Counter* connections_handed_over = nullptr;
  metrics::Counter* no_route = nullptr;
  metrics::Counter* no_endpoint = nullptr;
  metrics::Counter* refused[6] = {};  // refused requests answered 400/408/413/414/431/501/505, by class
  metrics::Counter* upstream_timeouts = nullptr;
  metrics::Counter* upstream_resets = nullptr;
};

// A listening address: what a connection accepted there is (its protocol, and the service of a
// service's own listener; empty for gateway.listen's addresses).
struct Listener {
  std::string service;
  tcp protocol;
};

// A non-blocking, close-on-exec listening socket on `ep` with SO_REUSEADDR and SO_REUSEPORT (every
// worker binds the same port). Throws std::runtime_error naming the address.
UniqueFd open_listening_socket(const tcp::endpoint& ep);

// What all workers share (owned by Gateway::Impl).
struct WorkerShared {
  // The keys fixed for the process's life (listen, workers, max_connections, timeouts, …).
  // Routes are not here: they live in the snapshots, which reconfigure replaces.
  config::GatewaySection config;
  SnapshotSource* source = nullptr;
  GatewayMetrics metrics;
  AccessLog* access_log = nullptr;  // null: off
  std::vector<Worker*> workers;  // all of them, for connection balancing (set before start)
  std::atomic<bool> draining{false};
  // Every listener ever opened. Only the control thread appends; workers and connections hold
  // pointers, which a deque's push_back leaves valid.
  std::deque<Listener> listeners;
};

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A pooled upstream connection.
struct UpstreamConnection {
  UpstreamConnection(asio::io_context& io, std::shared_ptr<EndpointState> ep, std::shared_ptr<ClusterShared> cl)
      : socket(io), endpoint(std::move(ep)), cluster(std::move(cl)) {}
  ~UpstreamConnection();
  Socket socket;
  std::shared_ptr<EndpointState> endpoint;
  std::shared_ptr<ClusterShared> cluster;
  int64_t idle_since_ns = 0;
  bool counted = false;  // counted in endpoint->connections and cluster->connections
  bool pooled = false;   // counted in cluster->idle
};

// What a downstream request needs from its first byte to its end: the head's parser and the
// strings built for it. Lent by the worker per request (Worker::take_scratch), so a connection
// waiting for its next request holds none of it (~2.8 KiB with the parser's field vectors).
struct RequestScratch {
  http1::RequestParser parser;
  http1::ChunkedDecoder chunked;       // the request body, when chunked
  http1::ChunkedDecoder down_chunked;  // the response body, when chunked
  std::string out;        // upstream request head
  std::string down_head;  // downstream response head
  std::string body;       // a small request body, kept for retries
  std::string chunk_out;  // re-framed chunks
  // What the access log says of the request, kept past the head's consumption (only filled when
  // there is a log).
  std::string log_path, log_host, log_request_id;
  std::string client;     // the client a trusted proxy named (gateway.trusted_proxies)
};

class Worker {
 public:
  Worker(int id, WorkerShared& shared);
  ~Worker();

  // Opens this worker's listener on `address` with SO_REUSEPORT (port from the first worker when
  // the configured port is 0). `service`: a service's own listener (only its route matches there);
  // empty for gateway.listen's addresses. Throws std::runtime_error.
  uint16_t listen(const std::string& address, uint16_t port_override, const std::string& service = {});
  void start();
  // Thread-safe, once started: takes up a listening socket the control thread opened (a
  // service's own listener that `flotilla up` again added) and accepts on it. Closed at once
  // when the worker drains.
  void add_listener(UniqueFd fd, const Listener* listener);
  // Thread-safe: stop accepting, close idle connections, finish the rest (see Gateway::stop).
  // Takes effect at once: the worker is woken through its eventfd.
  void drain();
  bool draining_requested() const { return drain_requested_.load(std::memory_order_acquire); }
  // Thread-safe: the drain's time is up. Every request still in progress ends now, as a cut: its
  // client's connection is reset (never closed with a FIN, which would make a body delimited by
  // the close look whole), its upstream connection closed, and its access log line written as
  // its coroutine ends (see Connection::cut). Idle connections close. stop_and_join() follows.
  void cut();
  void stop_and_join();
  size_t connections() const { return connection_count_.load(std::memory_order_relaxed); }
  // What connection balancing compares: open connections plus those handed to this worker and
  // not yet taken up. Thread-safe.
  size_t load() const {
    return connection_count_.load(std::memory_order_relaxed) + incoming_.load(std::memory_order_relaxed);
  }

  // --- used by connections, on this worker's thread ---
  asio::io_context& io() { return io_; }
  WorkerShared& shared() { return shared_; }
  const Snapshot& snapshot();  // refreshed when the source moved
  // The same, shared: a request holds it to its end, as the worker may move to a newer one (and
  // the older be freed) while the request waits on I/O.
  const std::shared_ptr<const Snapshot>& current_snapshot() {
    snapshot();
    return snapshot_;
  }
  // The balancer for a cluster (rebuilt when the cluster's endpoints changed).
  lb::LoadBalancer& balancer(const std::shared_ptr<const Cluster>& cluster);
  // A pooled connection to the endpoint, checked for a close or unasked bytes by a peek unless it
  // came back within the last 200 ms (`always_check`: peek anyway).
  std::unique_ptr<UpstreamConnection> take_idle(EndpointState* endpoint, bool always_check = false);
  // Pools the connection, or closes it while its service has more connections than its
  // circuit breaker allows (after an idle connection in another worker's pool gave way).
  void put_idle(std::unique_ptr<UpstreamConnection> c);
  // Closes this worker's least recently used idle connection to the service, so a request to
  // another of its endpoints can connect within max_connections. False: none here.
  bool close_idle_of(const ClusterShared* cluster);
  uint64_t random() { return rng_(); }
  // The HTTP Date of now ("Sun, 06 Nov 1994 08:49:37 GMT"), refreshed by the sweep (every 50 ms).
  std::string_view http_date() const { return {date_, 29}; }
  // Relay buffers (16 KiB) are lent per request, so idle connections hold none.
  Buffer take_relay();
  void give_relay(Buffer&& b);
  // Likewise the response parser (its field vectors are ~1.6 KiB).
  std::unique_ptr<http1::ResponseParser> take_response_parser();
  void give_response_parser(std::unique_ptr<http1::ResponseParser> p);
  // And what a request needs from its first byte to its end (RequestScratch).
  std::unique_ptr<RequestScratch> take_scratch();
  void give_scratch(std::unique_ptr<RequestScratch> s);
  int id() const { return id_; }
  // Writes queued by connections while this round of events is handled go out together when it
  // ends (after the round's handlers, before the reactor looks again: RoundEnd): a peer asleep in
  // epoll_wait is woken once per round, not once per request (HAProxy's order: receive
  // everything ready, then send). See Connection::flush_queued.
  void queue_flush(std::shared_ptr<Connection> c);

  // Deadlines: connections register themselves; a sweep every 50 ms fires expired ones.
  std::list<Connection*>::iterator track(Connection* c);
  void untrack(std::list<Connection*>::iterator it);

 private:
  // Accepts the listener's next connection (async_accept4: non-blocking, close-on-exec, the
  // peer's address in the same call), hands it over or adopts it, and accepts again.
  void accept(size_t listener);
  // Connection balancing: SO_REUSEPORT spreads connections by a hash of their addresses, so one
  // worker may get many more than another (64 connections on 2 workers: 145 vs 207 CPU ticks in
  // one run). A worker that accepts a connection while another has fewer hands the descriptor to
  // the least loaded one (HAProxy's and Envoy's exact balance). True when it did (and `fd` has
  // moved to that worker); false leaves `fd` with the caller.
  bool hand_over(UniqueFd& fd, const tcp::endpoint& peer, const Listener* listener);
  // Thread-safe: queue an accepted descriptor (with its peer and listener) for this worker.
  // False (`fd` stays with the caller) when the queue could not grow.
  bool receive(UniqueFd& fd, const tcp::endpoint& peer, const Listener* listener);
  // Wakes the worker through its eventfd (hand-overs, drain, stop). Thread-safe.
  void wake();
  void wait_inbox();
  void take_inbox();
  // Acts on the drain and stop flags other threads raise. False when the loop is stopping.
  bool check_requests();
  // Takes an accepted descriptor into this worker's reactor and starts its connection (or closes
  // it, over max_connections).
  void adopt(UniqueFd fd, const tcp::endpoint& peer, const Listener* listener);
  // Wraps a listening socket into an acceptor of this worker (its thread, or before start).
  size_t install_listener(UniqueFd fd, const Listener* listener);
  void sweep();
  void start_draining();
  void flush_queued();

  int id_;
  char date_[32] = {};
  int64_t date_second_ = -1;
  void update_date();
  WorkerShared& shared_;
  // Declared before io_ so they outlive it: destroying io_ destroys suspended connections, which
  // untrack themselves.
  std::list<Connection*> live_;
  std::atomic<size_t> connection_count_{0};
  // Declared before io_ so it outlives it: destroying io_ destroys the queued flush operation.
  std::unique_ptr<RoundEnd> flush_round_end_;
  // Only this worker's thread touches its io_context (other threads raise drain/stop flags that
  // the sweep reads): no locks in the scheduler or the reactor.
  asio::io_context io_;
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  std::vector<const Listener*> listeners_;  // by acceptor (in shared_.listeners)
  // Sockets handed over by other workers: queued under the mutex, announced through an eventfd
  // (written only when the queue was empty) that this worker's reactor waits on. Descriptors
  // still queued when the worker goes are closed with the queue.
  struct Handover {
    UniqueFd fd;
    tcp::endpoint peer;
    const Listener* listener;
  };
  std::mutex inbox_mu_;
  std::vector<Handover> inbox_;
  std::vector<std::pair<UniqueFd, const Listener*>> new_listeners_;  // add_listener's, under inbox_mu_
  std::atomic<size_t> incoming_{0};
  // Accept errors: counted, and logged at most every 10 s.
  uint64_t accept_errors_ = 0;
  int64_t accept_error_logged_ns_ = 0;
  int wake_fd_ = -1;  // owned by wake_
  std::unique_ptr<asio::posix::basic_stream_descriptor<Executor>> wake_;
  SteadyTimer sweep_timer_;
  std::thread thread_;
  std::shared_ptr<const Snapshot> snapshot_;
  uint64_t snapshot_version_ = 0;
  struct Balancer {
    uint64_t version = 0;
    std::shared_ptr<const Cluster> cluster;  // keeps the endpoint vector the balancer points into
    std::unique_ptr<lb::LoadBalancer> lb;
  };
  std::unordered_map<std::string, Balancer> balancers_;
  Balancer* last_balancer_ = nullptr;  // the last one balancer() returned (nodes are stable)
  std::unordered_map<EndpointState*, std::vector<std::unique_ptr<UpstreamConnection>>> idle_;
  std::vector<Buffer> spare_relays_;
  std::vector<std::unique_ptr<http1::ResponseParser>> spare_parsers_;
  std::vector<std::unique_ptr<RequestScratch>> spare_scratch_;
  std::vector<std::shared_ptr<Connection>> flush_list_, flushing_;
  Random rng_;  // request and trace ids, jitter: 256-bit seed from the kernel
  bool draining_ = false;
  std::atomic<bool> drain_requested_{false};
  std::atomic<bool> cut_requested_{false};
  bool cut_done_ = false;
  std::atomic<bool> stop_requested_{false};
};

}  // namespace flotilla::gateway
