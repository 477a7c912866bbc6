// gateway.trusted_proxies: the load balancers and proxies in front of the gateway whose
// X-Forwarded-For and X-Forwarded-Proto it believes (nginx's set_real_ip_from with
// real_ip_recursive, Envoy's trusted hops). A request from one of them is taken as coming from
// the client X-Forwarded-For names, and keeps the scheme X-Forwarded-Proto says (http or https),
// so a service behind a TLS-terminating load balancer still learns the scheme was https. Requests
// from anyone else get the gateway's own fields, as without the list: a client cannot choose the
// address its rate limit is counted under. X-Forwarded-Host is never taken from a peer (load
// balancers commonly pass a client's own through). Pure functions: unit-tested without sockets.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/http1/request_parser.h"

namespace flotilla::gateway {

// An IPv4 or IPv6 address. IPv4 is held IPv4-mapped (::ffff:a.b.c.d), so a listener on an IPv6
// socket that sees IPv4 clients as ::ffff:a.b.c.d matches the IPv4 blocks too.
struct IpAddress {
  std::array<uint8_t, 16> bytes{};
  bool v4() const;
  bool operator==(const IpAddress&) const = default;
};
// "192.0.2.7" or "2001:db8::1" (no port, no brackets); nullopt for anything else. An IPv4-mapped
// IPv6 text ("::ffff:192.0.2.7") is that IPv4 address.
std::optional<IpAddress> parse_ip(std::string_view text);
// One X-Forwarded-For element: an address, also "192.0.2.7:51000", "[2001:db8::1]" or
// "[2001:db8::1]:51000" (some load balancers add the client's port; brackets hold IPv6 text,
// which may be IPv4-mapped); spaces around are ignored.
std::optional<IpAddress> parse_forwarded_element(std::string_view text);
// The canonical text: dotted quad for IPv4 (mapped ones too), RFC 5952 for IPv6.
std::string to_string(const IpAddress& address);

// An address block of one family: an IPv4 block holds only IPv4 addresses, an IPv6 block only
// IPv6 ones (::/0 is every IPv6 address, not every IPv4 address too). `prefix` counts bits of
// the 128-bit form (an IPv4 /8 is 96 + 8).
struct Cidr {
  IpAddress base;  // bits past the prefix cleared
  int prefix = 128;
  bool v4 = false;
  bool operator==(const Cidr&) const = default;
};
// "10.0.0.0/8", "fd00::/8", or one address ("192.0.2.7", "::1"). The prefix is decimal without
// a sign or leading zeros, at most 32 for IPv4 and 128 for IPv6. An IPv4-mapped block of /96 or
// more ("::ffff:10.0.0.0/104") is the IPv4 block it maps (10.0.0.0/8). Bits set past the prefix
// are ignored ("10.1.2.3/8" is 10.0.0.0/8), as Go's ParseCIDR and nginx read it. nullopt for
// anything else: a missing or out-of-range prefix, spaces, a port.
std::optional<Cidr> parse_cidr(std::string_view text);

class TrustedProxies {
 public:
  TrustedProxies() = default;
  explicit TrustedProxies(std::vector<Cidr> blocks) : blocks_(std::move(blocks)) {}
  bool empty() const { return blocks_.empty(); }
  bool contains(const IpAddress& address) const;
  const std::vector<Cidr>& blocks() const { return blocks_; }

  // The client that a request from `peer` (a trusted proxy) stands for: X-Forwarded-For's
  // elements, every field's in order, walked from the last; trusted addresses are passed over
  // and the first one that is not trusted is the client. An element that is not an address ends
  // the walk at the last trusted one passed (nothing before it can be believed); when every
  // element is trusted, the first one is the client. nullopt: no usable element (the peer is the
  // client).
  std::optional<IpAddress> client_of(const http1::RequestHead& head) const;
  // The scheme a trusted proxy's X-Forwarded-Proto says: the last element of the last such
  // field (a proxy that adds its own comes after a client's), "http" or "https" in any case.
  // nullopt for anything else (then the gateway sends its own).
  static std::optional<std::string_view> forwarded_proto(const http1::RequestHead& head);

 private:
  std::vector<Cidr> blocks_;
};

}  // namespace flotilla::gateway
