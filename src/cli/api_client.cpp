#include "cli/api_client.h"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "common/duration.h"
#include "http/server.h"

namespace flotilla::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;

std::string ApiResponse::header(const std::string& name) const {
  for (const auto& [k, v] : headers)
    if (beast::iequals(k, name)) return v;
  return {};
}

ApiClient::ApiClient(std::string address, std::string token) : token_(std::move(token)) {
  if (address.empty()) {
    const char* env = std::getenv("FLOTILLA_API");
    address = env && *env ? env : "127.0.0.1:7700";
  }
  if (token_.empty()) {
    const char* env = std::getenv("FLOTILLA_TOKEN");
    if (env) token_ = env;
  }
  std::string a = address;
  if (a.rfind("http://", 0) == 0) a = a.substr(7);
  else if (a.rfind("https://", 0) == 0)
    throw std::runtime_error("the agent API is plain HTTP; use http:// or HOST:PORT, not " + address);
  while (!a.empty() && a.back() == '/') a.pop_back();
  // A port past 65535 is refused, not read modulo 65536 by the resolver (85117 would reach
  // 19581: another application's agent, perhaps).
  uint16_t port = 0;
  if (!http::split_host_port(a, host_, port))
    throw std::runtime_error("agent address \"" + address + "\" is not HOST:PORT (a port from 1 to 65535)");
  if (port == 0) throw std::runtime_error("agent address \"" + address + "\": the port must be from 1 to 65535");
  port_ = std::to_string(port);
  host_port_ = a;
}

ApiResponse ApiClient::request(const std::string& method, const std::string& target, const std::string& body,
                               std::chrono::milliseconds timeout) const {
  using namespace std::chrono_literals;
  const std::chrono::milliseconds total = timeout.count() > 0 ? timeout : std::chrono::milliseconds(11min);
  const auto deadline = std::chrono::steady_clock::now() + total;
  asio::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  beast::error_code ec;
  auto endpoints = resolver.resolve(host_, port_, ec);
  if (ec) throw AgentUnreachable("cannot resolve agent " + host_port_ + ": " + ec.message());
  stream.expires_after(std::min<std::chrono::milliseconds>(total, 10s));
  stream.connect(endpoints, ec);
  if (ec)
    throw AgentUnreachable("cannot reach the flotilla agent at " + host_port_ + " (" + ec.message() +
                               "); is it running? (--api or FLOTILLA_API picks another)",
                           ec == asio::error::connection_refused);
  bhttp::request<bhttp::string_body> req{bhttp::string_to_verb(method), target, 11};
  req.set(bhttp::field::host, host_port_);
  req.set(bhttp::field::user_agent, "flotilla-cli");
  if (!token_.empty()) req.set("X-Consul-Token", token_);
  req.body() = body;
  req.prepare_payload();
  stream.expires_at(deadline);
  bhttp::write(stream, req, ec);
  if (ec) throw std::runtime_error("sending to the agent at " + host_port_ + " failed: " + ec.message());
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  bhttp::read(stream, buffer, parser, ec);
  if (ec == beast::error::timeout)
    throw std::runtime_error("the agent at " + host_port_ + " did not answer within " + format_duration(total));
  if (ec) throw std::runtime_error("reading the agent's answer failed: " + ec.message());
  auto& res = parser.get();
  ApiResponse out;
  out.status = static_cast<int>(res.result_int());
  out.body = std::move(res.body());
  for (const auto& f : res) out.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return out;
}

std::string url_encode_path(const std::string& s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string error_message(const ApiResponse& r) {
  try {
    auto j = nlohmann::json::parse(r.body);
    if (j.is_object() && j.contains("error")) return j["error"].get<std::string>();
  } catch (const std::exception&) {
  }
  // flotilla answers every error as {"error": …}: anything else (an HTML page, say) came from
  // another server on that address. Its first line says which.
  std::string first = r.body.substr(0, r.body.find('\n'));
  if (first.size() > 80) first = first.substr(0, 80) + "…";
  return "HTTP " + std::to_string(r.status) + " from a server that is not a flotilla agent" +
         (first.empty() ? "" : " (\"" + first + "\")");
}

}  // namespace flotilla::cli
