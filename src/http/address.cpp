#include "http/address.h"

#include <boost/asio/ip/address.hpp>

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
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

namespace {
// An IPv4 or IPv6 socket address's IP; unspecified for other families.
asio::ip::address ip_of(const sockaddr* sa) {
  if (sa->sa_family == AF_INET) return asio::ip::address_v4(ntohl(reinterpret_cast<const sockaddr_in*>(sa)->sin_addr.s_addr));
  if (sa->sa_family != AF_INET6) return {};
  asio::ip::address_v6::bytes_type b;
  std::memcpy(b.data(), reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr.s6_addr, b.size());
  return asio::ip::address_v6(b);
}

// The source address the kernel picks for sending to `to` (a UDP connect() sends nothing);
// unspecified when there is no route.
asio::ip::address route_source(const asio::ip::address& to) {
  sockaddr_storage dst{}, src{};
  socklen_t dst_len = 0;
  if (to.is_v4()) {
    auto* d = reinterpret_cast<sockaddr_in*>(&dst);
    d->sin_family = AF_INET;
    d->sin_port = htons(53);
    d->sin_addr.s_addr = htonl(to.to_v4().to_uint());
    dst_len = sizeof(sockaddr_in);
  } else {
    auto* d = reinterpret_cast<sockaddr_in6*>(&dst);
    d->sin6_family = AF_INET6;
    d->sin6_port = htons(53);
    std::memcpy(d->sin6_addr.s6_addr, to.to_v6().to_bytes().data(), 16);
    dst_len = sizeof(sockaddr_in6);
  }
  int fd = ::socket(dst.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return {};
  socklen_t src_len = sizeof src;
  const bool routed = ::connect(fd, reinterpret_cast<const sockaddr*>(&dst), dst_len) == 0 &&
                      ::getsockname(fd, reinterpret_cast<sockaddr*>(&src), &src_len) == 0;
  ::close(fd);
  return routed ? ip_of(reinterpret_cast<const sockaddr*>(&src)) : asio::ip::address();
}
}  // namespace

std::set<std::string> own_addresses() {
  std::set<std::string> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next)
    if (i->ifa_addr && (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6))
      out.insert(ip_of(i->ifa_addr).to_string());
  ::freeifaddrs(list);
  return out;
}

bool is_own_address(const std::string& host) {
  if (is_loopback_host(host)) return true;
  boost::system::error_code ec;
  auto want = asio::ip::make_address(host, ec);
  return !ec && own_addresses().count(want.to_string()) > 0;
}

std::string advertise_address(const std::string& listen_host) {
  if (listen_host == "localhost") return "127.0.0.1";
  boost::system::error_code ec;
  auto listen = asio::ip::make_address(listen_host, ec);
  if (ec) return listen_host;
  if (!listen.is_unspecified()) return listen.to_string();
  // The address this host sends from towards the rest of the network: the source the kernel
  // picks for its default route. Not the first private address of the interface list, which
  // may be a container bridge (docker0's 172.17.0.1 exists on many hosts, so other hosts would
  // send this node's traffic to themselves). Any address off this host's networks will do.
  if (auto a = route_source(asio::ip::make_address_v4("8.8.8.8")); !a.is_unspecified() && !a.is_loopback())
    return a.to_string();
  if (listen.is_v6()) {  // a host whose only default route is IPv6's
    auto a = route_source(asio::ip::make_address_v6("2001:4860:4860::8888"));
    if (!a.is_unspecified() && !a.is_loopback() && !a.to_v6().is_link_local()) return a.to_string();
  }
  // No default route: the first private IPv4 address of an interface that is up and running
  // (a container bridge without containers has no carrier), else any other non-loopback one.
  std::string best, other;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "127.0.0.1";
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || (i->ifa_flags & (IFF_UP | IFF_RUNNING)) != (IFF_UP | IFF_RUNNING)) continue;
    if (i->ifa_addr->sa_family != AF_INET && !(i->ifa_addr->sa_family == AF_INET6 && listen.is_v6())) continue;
    const asio::ip::address a = ip_of(i->ifa_addr);
    if (a.is_loopback() || a.is_unspecified()) continue;
    if (a.is_v6() && (a.to_v6().is_link_local() || a.to_v6().is_v4_mapped())) continue;
    if (a.is_v4()) {
      const uint32_t v = a.to_v4().to_uint();
      if ((v >> 16) == 0xa9fe) continue;  // 169.254/16, link-local
      const bool rfc1918 = (v >> 24) == 10 || (v >> 20) == 0xac1 || (v >> 16) == 0xc0a8;
      if (rfc1918 && best.empty()) best = a.to_string();
    }
    if (other.empty() || (a.is_v4() && other.find(':') != std::string::npos)) other = a.to_string();
  }
  ::freeifaddrs(list);
  return !best.empty() ? best : !other.empty() ? other : "127.0.0.1";
}

}  // namespace flotilla::http
