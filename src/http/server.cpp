#include "http/server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <charconv>
#include <chrono>
#include <list>

#include "common/event_loop.h"

namespace flotilla::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

class Session;

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  Impl(EventLoop& l, Handler h, ServerLimits lim)
      : loop(l), handler(std::move(h)), limits(lim), acceptor(l.io()), accept_rest(l.io()) {}
  void accept();

  EventLoop& loop;
  Handler handler;
  ServerLimits limits;
  tcp::acceptor acceptor;
  asio::steady_timer accept_rest;  // after an accept error
  std::chrono::steady_clock::time_point accept_error_logged{};
  uint64_t accept_errors = 0;
  std::list<std::weak_ptr<Session>> sessions;  // for stop()
  size_t active = 0;
  bool stopped = false;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, std::shared_ptr<Server::Impl> server)
      : stream_(std::move(socket)),
        // The buffer's ceiling, not its size: it grows as needed up to one full request.
        buffer_(server->limits.header_bytes + server->limits.body_bytes + 4096),
        server_(std::move(server)) {
    ++server_->active;
    boost::system::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    stream_.socket().set_option(tcp::no_delay(true), ec);
  }
  ~Session() { --server_->active; }

  void start() { read_request(); }

  void close() {
    boost::system::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
    if (exchange_) {
      auto ex = std::move(exchange_);
      ex->cancel();
    }
  }

 private:
  void read_request() {
    head_ = false;  // per request: an early error answer must not inherit the last request's framing
    version_ = 11;
    parser_.emplace();
    parser_->header_limit(server_->limits.header_bytes);
    parser_->body_limit(server_->limits.body_bytes);
    stream_.expires_after(buffer_.size() ? server_->limits.read_timeout : server_->limits.idle_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  // Clients that send "Expect: 100-continue" (curl does for bodies over 1 KiB) wait for a
  // 100 Continue before sending the body; answer it rather than make them time out.
  void on_header(beast::error_code ec) {
    if (ec) return on_read(ec);
    stream_.expires_after(server_->limits.read_timeout);
    auto self = shared_from_this();
    const auto& h = parser_->get();
    auto expect = h[bhttp::field::expect];
    if (!parser_->is_done() && beast::iequals(expect, "100-continue")) {
      static const std::string kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(stream_, asio::buffer(kContinue), [self](beast::error_code ec, size_t) {
        if (ec) return self->close();
        bhttp::async_read(self->stream_, self->buffer_, *self->parser_,
                          [self](beast::error_code ec, size_t) { self->on_read(ec); });
      });
      return;
    }
    bhttp::async_read(stream_, buffer_, *parser_, [self](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
        ec == asio::error::operation_aborted)
      return close();
    if (ec == beast::error::timeout) return close();
    if (ec) {
      int status = 400;
      std::string msg = "malformed HTTP request: " + ec.message();
      if (ec == bhttp::error::body_limit) {
        status = 413;
        msg = "request body larger than " + std::to_string(server_->limits.body_bytes) + " bytes";
      } else if (ec == bhttp::error::header_limit) {
        status = 431;
        msg = "request headers larger than " + std::to_string(server_->limits.header_bytes) + " bytes";
      }
      keep_alive_ = false;
      linger_ = true;  // the rest of the request (its body) may still be on its way
      return write(Response::error(status, msg));
    }
    stream_.expires_never();
    auto msg = parser_->release();
    parser_.reset();
    keep_alive_ = msg.keep_alive();
    version_ = msg.version();
    Request req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.remote_address = remote_;
    head_ = req.method == "HEAD";
    if (!parse_target(req.target, req.path, req.query)) {
      return write(Response::error(400, "malformed percent-encoding in request target"));
    }
    req.headers.reserve(std::distance(msg.begin(), msg.end()));
    for (const auto& f : msg) {
      std::string name(f.name_string());
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      req.headers.emplace_back(std::move(name), std::string(f.value()));
    }
    req.body = std::move(msg.body());

    auto weak = weak_from_this();
    exchange_ = std::make_shared<Exchange>(std::move(req), [weak](Response&& r) {
      if (auto self = weak.lock()) self->on_response(std::move(r));
    });
    auto ex = exchange_;
    try {
      server_->handler(ex);
    } catch (const std::exception& e) {
      spdlog::error("api handler failed: {}", e.what());
      ex->respond(Response::error(500, std::string("internal error: ") + e.what()));
    }
    if (exchange_ && !exchange_->responded()) watch_disconnect();
  }

  // While a deferred answer is pending (a blocking query may wait minutes), wait for the socket
  // to become readable without a buffer: readable with nothing to read means the client closed.
  // Bytes that do arrive (a pipelined request) stay in the kernel until the answer is written.
  // The request buffer is released meanwhile: a parked query costs little memory.
  void watch_disconnect() {
    if (buffer_.size() == 0) buffer_.shrink_to_fit();
    auto generation = ++watch_generation_;
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(), generation](beast::error_code ec) {
      if (generation != self->watch_generation_ || !self->exchange_) return;  // answered meanwhile
      boost::system::error_code aec;
      if (ec || self->stream_.socket().available(aec) == 0 || aec) return self->close();
      // Pipelined bytes: stop watching (the level-triggered wait would fire again at once).
    });
  }

  void on_response(Response&& r) {
    exchange_.reset();
    // Answer now, not after the pending wait's cancellation comes back through the queue: the
    // wait's handler sees a newer generation and does nothing.
    ++watch_generation_;
    boost::system::error_code ec;
    stream_.socket().cancel(ec);
    write(std::move(r));
  }

  void write(Response r) {
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>();
    res->version(version_ ? version_ : 11);
    res->result(static_cast<unsigned>(r.status));
    res->reason(reason_phrase(r.status));
    if (!r.content_type.empty()) res->set(bhttp::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) res->set(k, v);
    res->keep_alive(keep_alive_);
    res->body() = std::move(r.body);
    res->prepare_payload();
    if (head_) res->body().clear();  // Content-Length stays that of the GET answer
    stream_.expires_after(server_->limits.read_timeout);
    if (head_) {
      auto sr = std::make_shared<bhttp::response_serializer<bhttp::string_body>>(*res);
      sr->split(true);
      bhttp::async_write_header(stream_, *sr, [self = shared_from_this(), res, sr](beast::error_code ec, size_t) {
        self->after_write(ec);
      });
      return;
    }
    bhttp::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      self->after_write(ec);
    });
  }

  void after_write(beast::error_code ec) {
    if (!ec && linger_ && !server_->stopped) return linger();
    if (ec || !keep_alive_ || server_->stopped) return close();
    read_request();
  }

  // A request refused before its body was read (too large, malformed): the answer is followed by
  // a FIN, and what the client still sends is read and dropped until it closes, goes quiet for
  // 5 s, or 30 s pass (nginx's lingering close, as the gateway does). Closed at once, the unread
  // bytes would make the kernel reset the connection, and a client that writes its whole body
  // before reading (Python's http.client, curl without Expect) would see "connection reset"
  // instead of the 413. Server::stop() closes a lingering session like any other.
  void linger() {
    boost::system::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return close();
    linger_until_ = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    buffer_.clear();
    buffer_.shrink_to_fit();
    linger_read();
  }
  void linger_read() {
    auto left = linger_until_ - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return close();
    stream_.expires_after(std::min<std::chrono::steady_clock::duration>(std::chrono::seconds(5), left));
    stream_.async_read_some(buffer_.prepare(16384), [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->linger_read();
    });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<Server::Impl> server_;
  std::shared_ptr<Exchange> exchange_;
  std::string remote_;
  bool keep_alive_ = true;
  uint64_t watch_generation_ = 0;
  bool head_ = false;
  bool linger_ = false;
  std::chrono::steady_clock::time_point linger_until_;
  unsigned version_ = 11;
};

void Server::Impl::accept() {
  acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (self->stopped) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM): the connection stays in
      // the queue and the next accept fails at once, so rest 100 ms instead of spinning (and
      // logging) at full speed; logged at most every 10 s, with how often it happened since.
      // The gateway's workers do the same.
      constexpr auto kRest = std::chrono::milliseconds(100);
      ++self->accept_errors;
      const auto now = std::chrono::steady_clock::now();
      if (self->accept_error_logged == std::chrono::steady_clock::time_point{} ||
          now - self->accept_error_logged >= std::chrono::seconds(10)) {
        spdlog::warn("api accept failed: {} (accepting again in {} ms; {} accept error(s) since the last report)",
                     ec.message(), kRest.count(), self->accept_errors);
        self->accept_error_logged = now;
        self->accept_errors = 0;
      }
      self->accept_rest.expires_after(kRest);
      self->accept_rest.async_wait([self](const boost::system::error_code& e) {
        if (!e && !self->stopped) self->accept();
      });
      return;
    } else if (self->active >= self->limits.max_connections) {
      boost::system::error_code ignore;
      socket.close(ignore);
    } else {
      auto s = std::make_shared<Session>(std::move(socket), self);
      if (self->sessions.size() > 2 * self->active + 64) {
        self->sessions.remove_if([](const std::weak_ptr<Session>& w) { return w.expired(); });
      }
      self->sessions.push_back(s);
      s->start();
    }
    self->accept();
  });
}

Server::Server(EventLoop& loop, Handler handler, ServerLimits limits)
    : impl_(std::make_shared<Impl>(loop, std::move(handler), limits)) {}

Server::~Server() { stop(); }

void Server::listen(const std::string& address) {
  std::string host;
  uint16_t port;
  if (!split_host_port(address, host, port))
    throw std::runtime_error("invalid listen address \"" + address + "\" (expected HOST:PORT)");
  boost::system::error_code ec;
  if (host == "localhost") host = "127.0.0.1";
  auto addr = asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("invalid listen address \"" + address + "\": " + ec.message());
  tcp::endpoint ep(addr, port);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  impl_->acceptor.bind(ep, ec);
  if (ec) throw std::runtime_error("cannot listen on " + address + ": " + ec.message());
  impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + address + ": " + ec.message());
}

void Server::start() { impl_->accept(); }

uint16_t Server::port() const {
  boost::system::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

void Server::stop() {
  if (impl_->stopped) return;
  impl_->stopped = true;
  boost::system::error_code ec;
  impl_->acceptor.close(ec);
  impl_->accept_rest.cancel();
  for (auto& w : impl_->sessions)
    if (auto s = w.lock()) s->close();
  impl_->sessions.clear();
}

size_t Server::connections() const { return impl_->active; }

}  // namespace flotilla::http
