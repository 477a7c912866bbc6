// Listen and connect addresses ("host:port"), without the HTTP server: light enough for the
// config parser (and its fuzz target).
#pragma once

#include <cstdint>
#include <string>

namespace flotilla::http {

// Splits "host:port" / "[v6]:port"; false when malformed.
bool split_host_port(const std::string& address, std::string& host, uint16_t& port);
// True for 127.0.0.0/8 and ::1 (and "localhost").
bool is_loopback_host(const std::string& host);
// True for an IPv4/IPv6 address or "localhost" (what listen() accepts).
bool is_ip_or_localhost(const std::string& host);

}  // namespace flotilla::http
