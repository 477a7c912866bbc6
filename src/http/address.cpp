#include "http/address.h"

#include <boost/asio/ip/address.hpp>

#include <charconv>
#include <string_view>

namespace flotilla::http {

namespace asio = boost::asio;

bool split_host_port(const std::string& address, std::string& host, uint16_t& port) {
  std::string_view a = address;
  std::string_view h, p;
  if (!a.empty() && a[0] == '[') {
    auto close = a.find(']');
    if (close == std::string_view::npos || close + 1 >= a.size() || a[close + 1] != ':') return false;
    h = a.substr(1, close - 1);
    p = a.substr(close + 2);
  } else {
    auto colon = a.rfind(':');
    if (colon == std::string_view::npos) return false;
    h = a.substr(0, colon);
    p = a.substr(colon + 1);
    // "::1:8080" could be the address ::1:8080 as well as ::1 and a port: IPv6 goes in brackets.
    if (h.find(':') != std::string_view::npos) return false;
  }
  if (h.empty() || p.empty()) return false;
  unsigned v = 0;
  auto [ptr, ec] = std::from_chars(p.data(), p.data() + p.size(), v);
  if (ec != std::errc() || ptr != p.data() + p.size() || v > 65535) return false;
  host = std::string(h);
  port = static_cast<uint16_t>(v);
  return true;
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  return !ec && addr.is_loopback();
}

bool is_ip_or_localhost(const std::string& host) {
  if (host == "localhost") return true;
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

}  // namespace flotilla::http
