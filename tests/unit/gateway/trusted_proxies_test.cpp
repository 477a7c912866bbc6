#include "gateway/trusted_proxies.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "gateway/http1/request_parser.h"

using namespace flotilla::gateway;

namespace {

TrustedProxies trust(std::vector<std::string> blocks) {
  std::vector<Cidr> out;
  for (const auto& b : blocks) {
    auto c = parse_cidr(b);
    EXPECT_TRUE(c) << b;
    if (c) out.push_back(*c);
  }
  return TrustedProxies(std::move(out));
}

IpAddress ip(const std::string& text) {
  auto a = parse_ip(text);
  EXPECT_TRUE(a) << text;
  return a.value_or(IpAddress{});
}

// The client named by the X-Forwarded-For fields of a request, "" when none is.
std::string client_of(const TrustedProxies& t, const std::string& fields) {
  http1::RequestParser parser;
  std::string bytes = "GET / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n";
  auto r = parser.parse(bytes);
  EXPECT_EQ(r.status, http1::RequestParser::Status::done) << r.reason;
  auto c = t.client_of(parser.head());
  return c ? to_string(*c) : "";
}

}  // namespace

TEST(TrustedProxies, AddressesParseAndPrintCanonically) {
  EXPECT_EQ(to_string(ip("192.0.2.7")), "192.0.2.7");
  EXPECT_EQ(to_string(ip("2001:DB8:0:0::1")), "2001:db8::1");
  EXPECT_EQ(to_string(ip("::ffff:192.0.2.7")), "192.0.2.7");  // IPv4-mapped is IPv4
  EXPECT_TRUE(ip("192.0.2.7").v4());
  EXPECT_FALSE(ip("::1").v4());
  for (const char* bad : {"", "192.0.2", "192.0.2.256", "192.0.2.7 ", " 192.0.2.7", "1.2.3.4.5", "host.example",
                          "::1::2", "[::1]", "192.0.2.7:80", "fe80::1%eth0", "01.2.3.4"})
    EXPECT_FALSE(parse_ip(bad)) << bad;
  EXPECT_FALSE(parse_ip(std::string(60, '1')));
}

TEST(TrustedProxies, ForwardedElementsMayCarryBracketsAndPorts) {
  auto text = [](const char* e) {
    auto a = parse_forwarded_element(e);
    return a ? to_string(*a) : "<none>";
  };
  EXPECT_EQ(text(" 192.0.2.7 "), "192.0.2.7");
  EXPECT_EQ(text("192.0.2.7:51000"), "192.0.2.7");
  EXPECT_EQ(text("2001:db8::1"), "2001:db8::1");
  EXPECT_EQ(text("[2001:db8::1]"), "2001:db8::1");
  EXPECT_EQ(text("[2001:db8::1]:443"), "2001:db8::1");
  EXPECT_EQ(text("[::ffff:198.51.100.9]:80"), "198.51.100.9");  // IPv4-mapped, as dual-stack proxies write it
  for (const char* bad : {"", "unknown", "192.0.2.7:", "192.0.2.7:65536", "192.0.2.7:x", "[192.0.2.7]", "[::1",
                          "[::1]x", "[::1]:", "[::1]:99999", "2001:db8::1:", "_hidden", "192.0.2.7:80:80"})
    EXPECT_EQ(text(bad), "<none>") << bad;
}

TEST(TrustedProxies, CidrBlocksParseOrAreRefused) {
  auto c = parse_cidr("10.1.2.3/8");  // bits past the prefix are dropped
  ASSERT_TRUE(c);
  EXPECT_EQ(c->prefix, 96 + 8);
  EXPECT_EQ(to_string(c->base), "10.0.0.0");
  EXPECT_EQ(parse_cidr("192.0.2.7")->prefix, 128);  // one address
  EXPECT_EQ(parse_cidr("::1")->prefix, 128);
  EXPECT_EQ(parse_cidr("fd00::/8")->prefix, 8);
  EXPECT_EQ(parse_cidr("0.0.0.0/0")->prefix, 96);
  EXPECT_EQ(parse_cidr("::/0")->prefix, 0);
  EXPECT_TRUE(parse_cidr("10.0.0.0/8")->v4);
  EXPECT_FALSE(parse_cidr("::/0")->v4);
  // IPv4-mapped text of /96 or more is the IPv4 block it maps.
  EXPECT_EQ(parse_cidr("::ffff:10.0.0.0/104"), parse_cidr("10.0.0.0/8"));
  EXPECT_EQ(parse_cidr("::ffff:0:0/96"), parse_cidr("0.0.0.0/0"));
  EXPECT_FALSE(parse_cidr("::ffff:0:0/95")->v4);
  for (const char* bad : {"", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/-0", "10.0.0.0/032",
                          "10.0.0.0/08", "10.0.0.0/00", "10.0.0.0/+8", "10.0.0.0/8/8", "::ffff:10.0.0.0/8.0",
                          "10.0.0.0/ 8", "10.0.0.0 /8", "10.0.0/8", "fd00::/129", "fd00::/0128", "10.0.0.0/8x",
                          "localhost", "10.0.0.1:80", "[::1]/128"})
    EXPECT_FALSE(parse_cidr(bad)) << bad;
}

TEST(TrustedProxies, ContainsMatchesThePrefixOnly) {
  auto t = trust({"10.0.0.0/8", "192.0.2.7", "172.16.0.0/12", "fd00::/8", "2001:db8:1::/63"});
  for (const char* in : {"10.0.0.0", "10.255.255.255", "192.0.2.7", "172.31.255.255", "fd12::1",
                         "2001:db8:1:1::5", "::ffff:10.9.9.9"})
    EXPECT_TRUE(t.contains(ip(in))) << in;
  for (const char* out : {"11.0.0.0", "9.255.255.255", "192.0.2.8", "172.32.0.0", "fe00::1", "2001:db8:1:2::5",
                          "::a00:1" /* 10.0.0.1 as IPv4-compatible, not mapped */})
    EXPECT_FALSE(t.contains(ip(out))) << out;
  EXPECT_FALSE(TrustedProxies().contains(ip("10.0.0.1")));
  auto all = trust({"0.0.0.0/0"});
  EXPECT_TRUE(all.contains(ip("203.0.113.1")));
  EXPECT_FALSE(all.contains(ip("2001:db8::1")));  // IPv4's /0 is not every IPv6 address
  // Nor is an IPv6 block every IPv4 address, though IPv4 is held as ::ffff:a.b.c.d.
  for (const char* v6 : {"::/0", "::/64", "::/80"}) {
    EXPECT_FALSE(trust({v6}).contains(ip("203.0.113.1"))) << v6;
    EXPECT_TRUE(trust({v6}).contains(ip("::1"))) << v6;
  }
  EXPECT_FALSE(trust({"::ffff:0:0/95"}).contains(ip("203.0.113.1")));
  EXPECT_TRUE(trust({"::ffff:10.0.0.0/104"}).contains(ip("10.9.9.9")));
  EXPECT_TRUE(trust({"::ffff:10.0.0.0/104"}).contains(ip("::ffff:10.9.9.9")));
}

TEST(TrustedProxies, TheClientIsTheLastUntrustedForwardedAddress) {
  auto t = trust({"10.0.0.0/8"});
  EXPECT_EQ(client_of(t, "X-Forwarded-For: 203.0.113.7\r\n"), "203.0.113.7");
  // A client cannot hide behind an address it wrote itself: only trusted hops are passed over.
  EXPECT_EQ(client_of(t, "X-Forwarded-For: 1.1.1.1, 203.0.113.7, 10.0.0.2\r\n"), "203.0.113.7");
  // Several fields are one list, in order.
  EXPECT_EQ(client_of(t, "X-Forwarded-For: 198.51.100.1\r\nx-forwarded-for: 10.0.0.3, 10.0.0.2\r\n"), "198.51.100.1");
  // Every hop trusted: the first one.
  EXPECT_EQ(client_of(t, "X-Forwarded-For: 10.0.0.9, 10.0.0.2\r\n"), "10.0.0.9");
  // Something that is no address stops the walk at the last trusted hop passed.
  EXPECT_EQ(client_of(t, "X-Forwarded-For: 203.0.113.7, unknown, 10.0.0.2\r\n"), "10.0.0.2");
  EXPECT_EQ(client_of(t, "X-Forwarded-For: 203.0.113.7, garbage\r\n"), "");
  // Empty elements are list syntax; ports and brackets are read.
  EXPECT_EQ(client_of(t, "X-Forwarded-For: 203.0.113.7:5000, , 10.0.0.2,\r\n"), "203.0.113.7");
  EXPECT_EQ(client_of(t, "X-Forwarded-For: [2001:db8::7]:443\r\n"), "2001:db8::7");
  EXPECT_EQ(client_of(t, "X-Forwarded-For: \r\n"), "");
  EXPECT_EQ(client_of(t, "X-Real-IP: 203.0.113.7\r\n"), "");
}

TEST(TrustedProxies, TheProtoIsTheLastHttpOrHttps) {
  auto proto = [](const std::string& fields) {
    http1::RequestParser parser;
    std::string bytes = "GET / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n";
    EXPECT_EQ(parser.parse(bytes).status, http1::RequestParser::Status::done);
    auto p = TrustedProxies::forwarded_proto(parser.head());
    return p ? std::string(*p) : "<none>";
  };
  EXPECT_EQ(proto("X-Forwarded-Proto: https\r\n"), "https");
  EXPECT_EQ(proto("x-forwarded-proto: HTTPS\r\n"), "https");
  EXPECT_EQ(proto("X-Forwarded-Proto: http\r\n"), "http");
  // A proxy that adds its own comes after the client's: the last one counts.
  EXPECT_EQ(proto("X-Forwarded-Proto: http\r\nX-Forwarded-Proto: https\r\n"), "https");
  EXPECT_EQ(proto("X-Forwarded-Proto: https, http\r\n"), "http");
  for (const char* bad : {"", "X-Forwarded-Proto: \r\n", "X-Forwarded-Proto: javascript:alert(1)\r\n",
                          "X-Forwarded-Proto: https \"\r\n", "X-Forwarded-Proto: wss\r\n",
                          "X-Forwarded-Proto: https\r\nX-Forwarded-Proto: ftp\r\n"})
    EXPECT_EQ(proto(bad), "<none>") << bad;
}
