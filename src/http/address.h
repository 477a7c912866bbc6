// Listen and connect addresses ("host:port"), without the HTTP server: light enough for the
// config parser (and its fuzz target).
#pragma once

#include <cstdint>
#include <set>
#include <string>

namespace flotilla::http {

// Splits "host:port" / "[v6]:port"; false when malformed.
bool split_host_port(const std::string& address, std::string& host, uint16_t& port);
// True for 127.0.0.0/8 and ::1 (and "localhost").
bool is_loopback_host(const std::string& host);
// True for an IPv4/IPv6 address or "localhost" (what listen() accepts).
bool is_ip_or_localhost(const std::string& host);
// The address other hosts reach this one at, for an agent whose API listens on `listen_host`
// (its node address, as Consul's advertise address): that address itself when it is one
// ("localhost": 127.0.0.1); for 0.0.0.0 or :: the IPv4 address the host sends from on its
// default route; without one, its first private IPv4 address (RFC 1918), else its first other
// non-loopback, non-link-local one (IPv6 too for ::), else 127.0.0.1.
std::string advertise_address(const std::string& listen_host);
// True when `host` (an IP literal, or "localhost") is one of this host's own addresses: loopback,
// or an address of one of its interfaces.
bool is_own_address(const std::string& host);
// This host's interface addresses (loopback included), as text (IPv6 without brackets).
std::set<std::string> own_addresses();

}  // namespace flotilla::http
