#include "http/address.h"

#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <string>
#include <vector>

namespace flotilla::http {
namespace {

TEST(AddressTest, SplitsHostAndPort) {
  std::string host;
  uint16_t port = 0;
  EXPECT_TRUE(split_host_port("127.0.0.1:7700", host, port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 7700);
  EXPECT_TRUE(split_host_port("[::1]:80", host, port));
  EXPECT_EQ(host, "::1");
  for (const char* bad : {"::1:80", "127.0.0.1", "127.0.0.1:", ":80", "[::1]80", "h:65536", "h:8o"})
    EXPECT_FALSE(split_host_port(bad, host, port)) << bad;
}

TEST(AddressTest, AdvertisesAGivenAddressAsItIs) {
  EXPECT_EQ(advertise_address("10.1.2.3"), "10.1.2.3");
  EXPECT_EQ(advertise_address("127.0.0.1"), "127.0.0.1");
  EXPECT_EQ(advertise_address("localhost"), "127.0.0.1");
  EXPECT_EQ(advertise_address("::1"), "::1");
  EXPECT_EQ(advertise_address("fd00::5"), "fd00::5");
}

// The host's IPv4 addresses other than loopback and 169.254/16.
std::vector<std::string> outside_ipv4() {
  std::vector<std::string> out;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    uint32_t v = ntohl(reinterpret_cast<const sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr);
    if ((v >> 24) != 127 && (v >> 16) != 0xa9fe) out.push_back(boost::asio::ip::address_v4(v).to_string());
  }
  ::freeifaddrs(list);
  return out;
}

TEST(AddressTest, AdvertisesOneOfTheHostsOwnAddressesForAWildcard) {
  // 0.0.0.0 listens everywhere: other hosts reach it at one of this host's addresses, never at
  // 0.0.0.0, and at loopback only when the host has nothing else.
  std::string a = advertise_address("0.0.0.0");
  boost::system::error_code ec;
  auto addr = boost::asio::ip::make_address(a, ec);
  ASSERT_FALSE(ec) << a;
  EXPECT_TRUE(addr.is_v4()) << a;
  EXPECT_FALSE(addr.is_unspecified()) << a;
  const auto own = outside_ipv4();
  if (own.empty()) EXPECT_TRUE(addr.is_loopback()) << a;
  else EXPECT_NE(std::find(own.begin(), own.end(), a), own.end()) << a << " is not one of this host's addresses";
  auto any6 = boost::asio::ip::make_address(advertise_address("::"), ec);
  ASSERT_FALSE(ec);
  EXPECT_FALSE(any6.is_unspecified());
}

TEST(AddressTest, KnowsThisHostsOwnAddresses) {
  EXPECT_TRUE(is_own_address("127.0.0.1"));
  EXPECT_TRUE(is_own_address("127.0.0.5"));
  EXPECT_TRUE(is_own_address("::1"));
  EXPECT_TRUE(is_own_address("localhost"));
  for (const auto& a : outside_ipv4()) EXPECT_TRUE(is_own_address(a)) << a;
  EXPECT_FALSE(is_own_address("203.0.113.77"));  // TEST-NET-3: on no interface here
  EXPECT_FALSE(is_own_address("host.example"));
  EXPECT_FALSE(is_own_address(""));
}

}  // namespace
}  // namespace flotilla::http
