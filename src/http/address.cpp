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

std::set<std::string> own_addresses() {
  std::set<std::string> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr) continue;
    if (i->ifa_addr->sa_family == AF_INET) {
      out.insert(asio::ip::address_v4(ntohl(reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr))
                     .to_string());
    } else if (i->ifa_addr->sa_family == AF_INET6) {
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr.s6_addr, b.size());
      out.insert(asio::ip::address_v6(b).to_string());
    }
  }
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
  // picks for its default route (a UDP connect() sends nothing). Not the first private address
  // of the interface list, which may be a container bridge (docker0's 172.17.0.1 exists on many
  // hosts, so other hosts would send this node's traffic to themselves).
  if (int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); fd >= 0) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    to.sin_addr.s_addr = htonl(0x08080808);  // any address off this host's networks will do
    sockaddr_in from{};
    socklen_t len = sizeof from;
    const bool routed = ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0 &&
                        ::getsockname(fd, reinterpret_cast<sockaddr*>(&from), &len) == 0;
    ::close(fd);
    if (routed) {
      auto a = asio::ip::address_v4(ntohl(from.sin_addr.s_addr));
      if (!a.is_loopback() && !a.is_unspecified()) return a.to_string();
    }
  }
  // An IPv6 listener on a host whose only default route is IPv6's.
  if (listen.is_v6()) {
    if (int fd = ::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0); fd >= 0) {
      sockaddr_in6 to{};
      to.sin6_family = AF_INET6;
      to.sin6_port = htons(53);
      const uint8_t off_host[16] = {0x20, 0x01, 0x48, 0x60, 0x48, 0x60, 0, 0, 0, 0, 0, 0, 0, 0, 0x88, 0x88};
      std::memcpy(to.sin6_addr.s6_addr, off_host, 16);
      sockaddr_in6 from{};
      socklen_t len = sizeof from;
      const bool routed = ::connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) == 0 &&
                          ::getsockname(fd, reinterpret_cast<sockaddr*>(&from), &len) == 0;
      ::close(fd);
      if (routed) {
        asio::ip::address_v6::bytes_type b;
        std::memcpy(b.data(), from.sin6_addr.s6_addr, b.size());
        auto a = asio::ip::address_v6(b);
        if (!a.is_loopback() && !a.is_unspecified() && !a.is_link_local()) return a.to_string();
      }
    }
  }
  // No default route: the first private IPv4 address of an interface that is up and running
  // (a container bridge without containers has no carrier), else any other non-loopback one.
  std::string best, other;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "127.0.0.1";
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || (i->ifa_flags & (IFF_UP | IFF_RUNNING)) != (IFF_UP | IFF_RUNNING)) continue;
    asio::ip::address a;
    if (i->ifa_addr->sa_family == AF_INET) {
      a = asio::ip::address_v4(ntohl(reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr));
    } else if (i->ifa_addr->sa_family == AF_INET6 && listen.is_v6()) {
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), reinterpret_cast<const sockaddr_in6*>(i->ifa_addr)->sin6_addr.s6_addr, b.size());
      a = asio::ip::address_v6(b);
      if (a.to_v6().is_link_local() || a.to_v6().is_v4_mapped()) continue;
    } else {
      continue;
    }
    if (a.is_loopback() || a.is_unspecified()) continue;
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
