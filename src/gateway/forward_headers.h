// The header rewriting a proxy owes both sides (RFC 9110 §7.6): hop-by-hop fields (the fixed
// list and whatever Connection names) are not forwarded; the upstream learns who asked
// (X-Forwarded-For/-Proto/-Host, X-Real-IP) and from no one else (a client's own claims about
// its origin are dropped), every request gets an X-Request-Id, and W3C trace context is
// propagated with a new parent span per hop. Pure functions over parsed heads: unit-tested
// without sockets.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/http1/request_parser.h"

namespace flotilla::gateway::http1 {
struct ResponseHead;
}

namespace flotilla::gateway {

// Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade,
// Proxy-Authenticate, Proxy-Authorization (case-insensitive).
bool is_hop_by_hop(std::string_view name);
// Whether `name` is one of the comma-separated tokens of the Connection field values of `fields`.
template <typename Fields>
bool named_by_connection(const Fields& fields, std::string_view name);

struct TraceParent {
  std::string trace_id;   // 32 lower-case hex digits, not all zero
  std::string parent_id;  // 16 lower-case hex digits, not all zero
  std::string flags;      // 2 hex digits
};
// Version 00 as W3C Trace Context defines it; a future version is read by its first four fields.
std::optional<TraceParent> parse_traceparent(std::string_view value);

struct UpstreamRequest {
  std::string_view method;
  std::string_view target;      // path (+ "?query") to send
  std::string_view client_ip;   // appended to X-Forwarded-For: the connection's peer
  // Sent as X-Real-IP: the client the gateway believes, which is the peer or, behind one of
  // gateway.trusted_proxies, the client it named. Empty: client_ip.
  std::string_view real_ip;
  // The peer is one of gateway.trusted_proxies: its X-Forwarded-* fields (but -Proto and -Host,
  // which the gateway sets) and X-Scheme-like ones pass on; anyone else's never reach the service
  // (see unvouched_forwarding in forward_headers.cpp).
  bool trusted_peer = false;
  std::string_view proto = "http";
  std::optional<uint64_t> content_length;  // framing to send (the body is re-framed)
  bool chunked = false;
  bool upgrade = false;         // forward Upgrade and Connection: upgrade
  std::string_view default_host;  // Host to send for an HTTP/1.0 request without one (the service name)
  uint64_t random[3] = {};      // entropy for new ids (request id, trace id, span id)
};

// Appends the request head to send upstream (HTTP/1.1) to `out`. Returns the X-Request-Id used
// (the client's when it sent a sane one, else a new one) as a view into `out`.
std::string_view build_upstream_head(const http1::RequestHead& head, const UpstreamRequest& request, std::string& out);

struct DownstreamResponse {
  int version_minor = 1;     // the client's HTTP/1.<minor>
  bool keep_alive = true;    // the gateway keeps the client connection after this response
  bool chunked = false;      // the body is sent chunked (passed through as it came)
  std::optional<uint64_t> content_length;  // the body's length when known
  bool upgrade = false;      // a 101 being passed on
  // Added as `Date` when the service sent none (RFC 9110 6.6.1: a proxy with a clock must).
  std::string_view date;
};
// Appends the response head to send downstream to `out`.
void build_downstream_head(const http1::ResponseHead& head, const DownstreamResponse& response, std::string& out);

}  // namespace flotilla::gateway
