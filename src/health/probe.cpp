#include "health/probe.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "common/event_loop.h"

namespace flotilla::health {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

constexpr size_t kMaxOutput = 4096;

bool parse_url(const std::string& url, Url& out) {
  std::string_view u = url;
  if (u.rfind("http://", 0) == 0) {
    out.tls = false;
    u.remove_prefix(7);
  } else if (u.rfind("https://", 0) == 0) {
    out.tls = true;
    u.remove_prefix(8);
  } else {
    return false;
  }
  auto slash = u.find_first_of("/?");
  std::string_view authority = u.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(u.substr(slash));
  if (!out.target.empty() && out.target[0] == '?') out.target = "/" + out.target;
  if (auto at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
  if (authority.empty()) return false;
  if (authority[0] == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return false;
    out.host = std::string(authority.substr(1, close - 1));
    auto rest = authority.substr(close + 1);
    out.port = rest.size() > 1 && rest[0] == ':' ? std::string(rest.substr(1)) : (out.tls ? "443" : "80");
  } else {
    auto colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    out.port = colon == std::string_view::npos ? (out.tls ? "443" : "80") : std::string(authority.substr(colon + 1));
  }
  if (out.host.empty() || out.port.empty()) return false;
  if (out.port.size() > 5) return false;
  for (char c : out.port)
    if (c < '0' || c > '9') return false;
  return std::stoul(out.port) <= 65535;
}

namespace {

ssl::context& client_tls_context(bool verify) {
  static ssl::context verifying = [] {
    ssl::context ctx(ssl::context::tls_client);
    ctx.set_default_verify_paths();
    ctx.set_verify_mode(ssl::verify_peer);
    return ctx;
  }();
  static ssl::context skipping = [] {
    ssl::context ctx(ssl::context::tls_client);
    ctx.set_verify_mode(ssl::verify_none);
    return ctx;
  }();
  return verify ? verifying : skipping;
}

// One probe in flight. Holds itself alive through its handlers; the deadline closes the socket.
template <class Stream>
struct HttpProbe : std::enable_shared_from_this<HttpProbe<Stream>> {
  template <class... Args>
  HttpProbe(asio::io_context& io, Args&&... args) : resolver(io), stream(std::forward<Args>(args)...), deadline(io) {}

  tcp::socket& socket() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) return stream;
    else return stream.next_layer();
  }

  void start(Duration timeout) {
    auto self = this->shared_from_this();
    deadline.expires_after(timeout);
    deadline.async_wait([self, timeout](beast::error_code ec) {
      if (ec) return;
      self->finish(registry::status::critical, self->label + ": timed out after " + format_duration(timeout));
      beast::error_code ignore;
      self->resolver.cancel();
      self->socket().close(ignore);
    });
    // Numeric hosts (the common case) skip the resolver and its helper thread.
    beast::error_code ec;
    auto addr = asio::ip::make_address(url.host, ec);
    if (!ec) {
      tcp::endpoint ep(addr, static_cast<uint16_t>(std::stoul(url.port)));
      socket().async_connect(ep, [self](beast::error_code ec) { self->connected(ec); });
      return;
    }
    resolver.async_resolve(url.host, url.port, [self](beast::error_code ec, tcp::resolver::results_type r) {
      if (ec) return self->fail(ec);
      asio::async_connect(self->socket(), r,
                          [self](beast::error_code ec, const tcp::endpoint&) { self->connected(ec); });
    });
  }

  void connected(beast::error_code ec) {
    if (ec) return fail(ec);
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      send();
    } else {
      auto self = this->shared_from_this();
      SSL_set_tlsext_host_name(stream.native_handle(), url.host.c_str());  // SNI, best effort
      if (verify) stream.set_verify_callback(ssl::host_name_verification(url.host));
      stream.async_handshake(ssl::stream_base::client, [self](beast::error_code ec) {
        if (ec) return self->fail(ec);
        self->send();
      });
    }
  }

  void send() {
    auto self = this->shared_from_this();
    bhttp::async_write(stream, request, [self](beast::error_code ec, size_t) {
      if (ec) return self->fail(ec);
      // No limit (we stop after kMaxOutput bytes). Not boost::none: Beast 1.74 compares a
      // Content-Length against an empty optional as "over the limit".
      self->parser.body_limit(std::numeric_limits<std::uint64_t>::max());
      bhttp::async_read_header(self->stream, self->buffer, self->parser, [self](beast::error_code ec, size_t) {
        if (ec) return self->fail(ec);
        self->read_body();
      });
    });
  }

  // Reads at most kMaxOutput bytes of the body (chunked or sized) into `output`, then stops:
  // the status decides the check, the body is only for people to read.
  void read_body() {
    if (parser.is_done()) return complete();
    auto& b = parser.get().body();
    b.data = output + got;
    b.size = kMaxOutput - got;
    b.more = true;
    auto self = this->shared_from_this();
    bhttp::async_read(stream, buffer, parser, [self](beast::error_code ec, size_t) {
      self->got = kMaxOutput - self->parser.get().body().size;
      bool full = self->got == kMaxOutput;
      if (ec == bhttp::error::need_buffer) ec = {};
      if (ec && ec != bhttp::error::partial_message && ec != asio::error::eof) return self->fail(ec);
      if (!ec && !full && !self->parser.is_done()) return self->read_body();
      self->complete();
    });
  }

  void complete() {
    auto& res = parser.get();
    int code = static_cast<int>(res.result_int());
    std::string out = label + ": " + std::to_string(code) + " " + std::string(res.reason()) +
                      " Output: " + std::string(output, got);
    const char* status = code >= 200 && code < 300 ? registry::status::passing
                         : code == 429              ? registry::status::warning
                                                    : registry::status::critical;
    finish(status, std::move(out));
    beast::error_code ignore;
    socket().shutdown(tcp::socket::shutdown_both, ignore);
    socket().close(ignore);
  }

  void fail(beast::error_code ec) { finish(registry::status::critical, label + ": " + ec.message()); }

  void finish(const char* status, std::string output) {
    if (!done) return;
    deadline.cancel();
    auto d = std::move(done);
    done = nullptr;
    d(ProbeResult{status, std::move(output)});
  }

  Url url;
  std::string label;
  bool verify = false;
  tcp::resolver resolver;
  Stream stream;
  asio::steady_timer deadline;
  beast::flat_buffer buffer;
  bhttp::request<bhttp::string_body> request;
  bhttp::response_parser<bhttp::buffer_body> parser;
  char output[kMaxOutput];
  size_t got = 0;
  ProbeDone done;
};

}  // namespace

void probe_http(EventLoop& loop, const registry::CheckDefinition& check, Duration timeout, ProbeDone done) {
  Url url;
  std::string method = check.method.empty() ? "GET" : check.method;
  if (!parse_url(check.http, url)) {
    done(ProbeResult{registry::status::critical, "invalid check URL \"" + check.http + "\""});
    return;
  }
  auto prepare = [&](auto& p) {
    p->url = url;
    p->verify = !check.tls_skip_verify;
    p->label = "HTTP " + method + " " + check.http;
    p->done = std::move(done);
    auto& req = p->request;
    req.method_string(method);
    req.target(url.target);
    req.version(11);
    bool has_host = false, has_ua = false;
    for (const auto& [name, values] : check.header) {
      for (const auto& v : values) req.insert(name, v);
      if (beast::iequals(name, "host")) has_host = true;
      if (beast::iequals(name, "user-agent")) has_ua = true;
    }
    if (!has_host) req.set(bhttp::field::host, url.host + ":" + url.port);
    if (!has_ua) req.set(bhttp::field::user_agent, "flotilla health check");
    req.set(bhttp::field::connection, "close");
    req.set(bhttp::field::accept, "text/plain, text/*, */*");
    req.body() = check.body;
    if (!check.body.empty() || method == "POST" || method == "PUT") req.prepare_payload();
    p->start(timeout);
  };
  if (url.tls) {
    auto p = std::make_shared<HttpProbe<beast::ssl_stream<tcp::socket>>>(
        loop.io(), loop.io(), client_tls_context(!check.tls_skip_verify));
    prepare(p);
  } else {
    auto p = std::make_shared<HttpProbe<tcp::socket>>(loop.io(), loop.io());
    prepare(p);
  }
}

namespace {
struct TcpProbe : std::enable_shared_from_this<TcpProbe> {
  explicit TcpProbe(asio::io_context& io) : resolver(io), socket(io), deadline(io) {}
  tcp::resolver resolver;
  tcp::socket socket;
  asio::steady_timer deadline;
  std::string label;
  ProbeDone done;
  void finish(const char* status, std::string out) {
    if (!done) return;
    deadline.cancel();
    beast::error_code ignore;
    socket.close(ignore);
    auto d = std::move(done);
    done = nullptr;
    d(ProbeResult{status, std::move(out)});
  }
};
}  // namespace

void probe_tcp(EventLoop& loop, const std::string& address, Duration timeout, ProbeDone done) {
  auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    done(ProbeResult{registry::status::critical, "invalid TCP check address \"" + address + "\" (want HOST:PORT)"});
    return;
  }
  std::string host = address.substr(0, colon), port = address.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto p = std::make_shared<TcpProbe>(loop.io());
  p->label = "TCP connect " + address;
  p->done = std::move(done);
  p->deadline.expires_after(timeout);
  p->deadline.async_wait([p, timeout](beast::error_code ec) {
    if (ec) return;
    p->resolver.cancel();
    p->finish(registry::status::critical, p->label + ": timed out after " + format_duration(timeout));
  });
  beast::error_code aec;
  auto addr = asio::ip::make_address(host, aec);
  unsigned long port_number = 0;
  try {
    port_number = std::stoul(port);
  } catch (const std::exception&) {
    port_number = 70000;
  }
  if (!aec && port_number <= 65535) {
    p->socket.async_connect(tcp::endpoint(addr, static_cast<uint16_t>(port_number)), [p](beast::error_code ec) {
      if (ec) return p->finish(registry::status::critical, p->label + ": " + ec.message());
      p->finish(registry::status::passing, p->label + ": Success");
    });
    return;
  }
  p->resolver.async_resolve(host, port, [p](beast::error_code ec, tcp::resolver::results_type r) {
    if (ec) return p->finish(registry::status::critical, p->label + ": " + ec.message());
    asio::async_connect(p->socket, r, [p](beast::error_code ec, const tcp::endpoint&) {
      if (ec) return p->finish(registry::status::critical, p->label + ": " + ec.message());
      p->finish(registry::status::passing, p->label + ": Success");
    });
  });
}

}  // namespace flotilla::health
