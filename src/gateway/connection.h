// One downstream (client) connection of a worker, and the requests it carries: read a head with
// the strict parser, route it, pick an endpoint, stream the request up and the response down
// (bodies are never buffered whole), retry what may be retried, keep both sides alive when they
// can be. A coroutine per connection keeps the proxy's logic linear. Internal to src/gateway.
#pragma once

#include <utility>  // Boost 1.74 awaitable.hpp uses std::exchange without including it
#include <boost/asio/awaitable.hpp>

#include <cstdint>
#include <list>
#include <memory>
#include <new>
#include <optional>
#include <string>

#include "gateway/http1/request_parser.h"
#include "gateway/http1/response_parser.h"
#include "gateway/recv.h"
#include "gateway/worker.h"

namespace flotilla::gateway {

// Lends `buffer` a 16 KiB relay buffer from the worker's pool when a read has bytes for it
// (async_recv_lent), and gives it back when the read found nothing after all.
class RelayLender final : public ReadLender {
 public:
  RelayLender(Worker& worker, Buffer& buffer) : worker_(worker), buffer_(buffer) {}
  asio::mutable_buffer lend() override {
    // Called inside the reactor: out of memory ends this read (no room: no_buffer_space), not
    // the worker's event loop.
    if (buffer_.capacity() == 0) {
      try {
        buffer_ = worker_.take_relay();
      } catch (const std::bad_alloc&) {
        return {};
      }
    }
    return {buffer_.write_ptr(), buffer_.room()};
  }
  void take_back() override {
    if (buffer_.empty()) worker_.give_relay(std::move(buffer_));
  }

 private:
  Worker& worker_;
  Buffer& buffer_;
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // listener_service: see Worker::listen (empty for gateway.listen's addresses). client_ip: the
  // peer's address as text (an IPv4 client of a dual-stack IPv6 listener as a.b.c.d).
  Connection(Worker& worker, Socket socket, const std::string& listener_service, std::string client_ip);
  ~Connection();
  void start();
  // The sweep found the deadline passed: cancel whatever the coroutine waits on.
  void expire(int64_t now);
  // Gateway draining: close now if idle between requests, else after the current response.
  void drain();
  // The drain's time is up (Worker::cut): end the request in progress now, as a cut.
  void cut();
  // The sweep, for a connection whose deadline has not passed: while it waits for a service's
  // answer, the client's socket is checked once a second, and a client that reset or closed its
  // connection ends the wait (its request is abandoned, as nginx and Envoy do). A FIN after more
  // pipelined requests, or on a route with `on_client_close: wait`, is a half-close, and the wait
  // goes on (see docs/gateway.md).
  // Between requests, a keep-alive connection is polled once, 200 ms into its idleness, for a
  // FIN that no event announced (one that came with the request's last bytes, recv.h): a client
  // that half-closed after its request (`nc -N`) has its answer and is closed then, not after
  // timeouts.idle.
  void check_client(int64_t now) {
    if (awaiting_answer_) {
      if (now >= client_check_at_) check_client_now(now);
    } else if (idle_check_at_ != 0 && now >= idle_check_at_) {
      check_idle_now();
    }
  }
  int64_t deadline() const { return deadline_; }
  // The worker's end-of-round flush: sends the upstream request queued by handle_request.
  void flush_queued();

 private:
  enum class Wait : uint8_t { none, idle, head, body, upstream, write, tunnel };

  Task<void> run();
  // The request's lent parts go back to the worker (the read buffer apart: see run()).
  void give_back();
  // Reads until a full head is parsed; false when the connection should just close.
  Task<bool> read_head();
  void log_refused(int status, size_t bytes);
  Task<bool> handle_request();
  void check_client_now(int64_t now);
  void check_idle_now();
  // How long a write to the client may go without progress: the route's idle_timeout, or
  // gateway.timeouts.idle.
  int64_t write_idle() const;
  // nginx's lingering close (see the definition).
  Task<void> linger_close();
  Task<void> send_local(int status, std::string_view body_json, bool close,
                                   std::string_view extra_header = {});
  Task<bool> write_down(std::string_view a, std::string_view b = {});
  // The rest of a write that send_now() began (`sent` bytes of a then b are out). wait: the
  // deadline kind to arm (Wait::write), or Wait::upstream to keep the caller's deadline.
  Task<bool> write_rest(Socket& socket, std::string_view a, std::string_view b, size_t sent, Wait wait);

  // TCP_NODELAY is set before a connection's second write to the client, not at accept: the
  // first write never waits for Nagle's algorithm (Linux holds a small segment back only while an
  // earlier small one is unacknowledged), so a client that gets one answer and closes costs one
  // setsockopt less (nginx, too, sets it only once a connection is kept alive).
  void before_write_down();
  void set_nodelay();

  void set_deadline(Wait what, int64_t ns_from_now);
  void clear_deadline() {
    deadline_ = INT64_MAX;
    wait_ = Wait::none;
  }

  Worker& worker_;
  RecvReactor& reactor_;  // for async_recv
  Socket socket_;
  const std::string& listener_service_;
  std::string client_ip_;
  std::list<Connection*>::iterator tracked_;
  int64_t deadline_ = INT64_MAX;
  int64_t stream_idle_ = 0;  // the current route's idle_timeout (ns); 0: gateway.timeouts.idle
  Wait wait_ = Wait::none;
  bool timed_out_ = false;
  bool close_after_ = false;
  bool cut_ = false;  // the gateway stops: no new try, no retry
  int64_t write_acked_ = -1;  // a blocked write to the client: its acknowledged bytes when last judged
  bool reset_down_ = false;  // close with a reset: the answer was cut short where its framing cannot say so
  bool linger_ = false;      // close by lingering: an answer went out while the client may still be sending
  bool head_request_ = false;  // the current request is a HEAD: the gateway's own answers carry no body
  bool awaiting_answer_ = false;  // waiting for a service's answer head (check_client)
  bool client_gone_ = false;     // check_client found the client gone (reset, or closed: abort_on_close_)
  bool abort_on_close_ = true;    // the waiting request's route: a client's FIN abandons it
  int64_t client_check_at_ = 0;
  int64_t idle_check_at_ = 0;  // when an idle keep-alive connection is polled for a FIN; 0: not due
  bool idle_ = false;
  bool wrote_down_ = false;  // anything written to the client yet
  bool nodelay_ = false;     // TCP_NODELAY set
  size_t head_length_ = 0;  // the parsed request head's bytes in in_
  UpstreamConnection* current_upstream_ = nullptr;  // the socket a timeout closes
  // An upstream request (rs_->out + rs_->body, all in memory) queued for the worker's flush while the
  // coroutine already waits for the response on up_queued_. The flush sends it; when the socket
  // took only part of it (partial) or refused it (failed), the flush cancels that wait and the
  // coroutine finishes the write itself or gives up. The coroutine clears the queue entry as soon
  // as its read returns, whatever the reason, so a flush never touches a socket it dropped.
  enum class Queued : uint8_t { none, queued, partial, failed };
  Queued up_queued_state_ = Queued::none;
  UpstreamConnection* up_queued_ = nullptr;
  size_t up_queued_sent_ = 0;
  // The snapshot the current request routes by: its route, cluster and endpoints must outlive a
  // registry change made while it is in flight. Replaced (one pointer compare) when it moved.
  std::shared_ptr<const Snapshot> snapshot_;

  // Both lent by the worker when a message's first bytes arrive (RelayLender), so neither a
  // connection waiting for its next request nor a request waiting for its answer holds one.
  Buffer in_;  // downstream → upstream
  Buffer rb_;  // upstream → downstream
  std::unique_ptr<RequestScratch> rs_;  // lent by the worker per request
  std::unique_ptr<http1::ResponseParser> response_parser_;  // lent by the worker per request
};

}  // namespace flotilla::gateway
