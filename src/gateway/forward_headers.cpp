#include "gateway/forward_headers.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <charconv>
#include <vector>

#include "gateway/http1/response_parser.h"
#include "gateway/http1/syntax.h"

namespace flotilla::gateway {

namespace {
using namespace std::string_view_literals;
using http1::syntax::iequals;
// Field names come from the parsers, which accept tokens only.
constexpr auto iequals_name = http1::syntax::iequals_token;

bool is_hex_lower(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}
bool all_zero(std::string_view s) { return s.find_first_not_of('0') == std::string_view::npos; }

void field(std::string& out, std::string_view name, std::string_view value) {
  out.append(name);
  out.append(": "sv);
  out.append(value);
  out.append("\r\n"sv);
}

// Whether a request's field `name` is one a service could take for the gateway's (or a trusted
// proxy's) word on where the request came from, and so is not passed on:
// - `Forwarded` (RFC 7239), from anyone: few load balancers set it and most pass a client's on,
//   while Rack and Spring read its host= and proto= ahead of X-Forwarded-*; the gateway's
//   X-Forwarded-* and X-Real-IP say the same things.
// - from anyone but a trusted proxy, every `X-Forwarded-*` but X-Forwarded-For (which the gateway
//   extends): -Ssl, -Port, -Prefix, -Scheme, an auth proxy's -User, … (Rack takes
//   `X-Forwarded-Ssl: on` for HTTPS ahead of X-Forwarded-Proto), and the other scheme fields
//   frameworks read: `X-Scheme` (Tornado, ahead of X-Forwarded-Proto), `X-Url-Scheme`,
//   `Front-End-Https`;
// - from anyone, any of these, X-Real-IP or X-Request-Id spelt with underscores
//   (X_Forwarded_Host), which CGI, WSGI, PHP and Rack read as the hyphenated field
//   (HTTP_X_FORWARDED_HOST), beside or instead of the gateway's own (the trick of CVE-2022-31813).
bool unvouched_forwarding(std::string_view name, bool trusted_peer) {
  const char first = static_cast<char>(name[0] | 0x20);
  if ((first != 'x' && first != 'f') || name.size() < 8) return false;
  char lower[16];  // the name's start, lower case, '_' read as '-'
  const size_t n = std::min(name.size(), sizeof lower);
  for (size_t i = 0; i < n; ++i) {
    char c = name[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
    lower[i] = c == '_' ? '-' : c;
  }
  const std::string_view start(lower, n);
  const bool underscore = name.find('_') != std::string_view::npos;
  auto is = [&](std::string_view folded) { return name.size() == folded.size() && start == folded; };
  if (is("forwarded"sv)) return true;
  if (n >= 12 && start.substr(0, 12) == "x-forwarded-"sv) {
    if (underscore) return true;
    return !trusted_peer && !is("x-forwarded-for"sv);
  }
  // The hyphenated ones: X-Real-IP is replaced (replaced_upstream), X-Request-Id kept when sane.
  if (is("x-real-ip"sv) || is("x-request-id"sv)) return underscore;
  if (is("x-scheme"sv) || is("x-url-scheme"sv) || is("front-end-https"sv)) return underscore || !trusted_peer;
  return false;
}

// Fields the gateway sets itself on the upstream request, on top of the hop-by-hop ones.
bool replaced_upstream(std::string_view name) {
  switch (name.size()) {
    case 4:
      return iequals_name(name, "host");
    case 6:
      return iequals_name(name, "expect");
    case 9:
      return iequals_name(name, "x-real-ip");
    case 11:
      return iequals_name(name, "traceparent");
    case 14:
      // HTTP2-Settings belongs to an h2c upgrade, which the gateway never passes on (RFC 9113
      // §3.2 makes it connection-specific even when Connection does not name it).
      return iequals_name(name, "content-length") || iequals_name(name, "http2-settings");
    case 15:
      return iequals_name(name, "x-forwarded-for");
    case 16:
      return iequals_name(name, "x-forwarded-host");
    case 17:
      return iequals_name(name, "x-forwarded-proto");
    default:
      return false;
  }
}

bool sane_request_id(std::string_view v) {
  if (v.empty() || v.size() > 200) return false;
  for (char c : v)
    if (!http1::syntax::is_vchar(c)) return false;
  return true;
}
}  // namespace

bool is_hop_by_hop(std::string_view n) {
  switch (n.size()) {
    case 2:
      return iequals_name(n, "te");
    case 7:
      return iequals_name(n, "trailer") || iequals_name(n, "upgrade");
    case 10:
      return iequals_name(n, "connection") || iequals_name(n, "keep-alive");
    case 16:
      return iequals_name(n, "proxy-connection");
    case 17:
      return iequals_name(n, "transfer-encoding");
    case 18:
      return iequals_name(n, "proxy-authenticate");
    case 19:
      return iequals_name(n, "proxy-authorization");
    default:
      return false;
  }
}

template <typename Fields>
bool named_by_connection(const Fields& fields, std::string_view name) {
  for (const auto& f : fields) {
    if (!iequals(f.name, "connection")) continue;
    std::string_view v = f.value;
    while (!v.empty()) {
      auto comma = v.find(',');
      auto token = v.substr(0, comma);
      while (!token.empty() && http1::syntax::is_ows(token.front())) token.remove_prefix(1);
      while (!token.empty() && http1::syntax::is_ows(token.back())) token.remove_suffix(1);
      if (token.size() == name.size()) {
        bool eq = true;
        for (size_t i = 0; i < token.size() && eq; ++i) {
          char a = token[i], b = name[i];
          if (a >= 'A' && a <= 'Z') a = static_cast<char>(a + 32);
          if (b >= 'A' && b <= 'Z') b = static_cast<char>(b + 32);
          eq = a == b;
        }
        if (eq) return true;
      }
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  return false;
}
template bool named_by_connection(const std::vector<http1::Field>&, std::string_view);

std::optional<TraceParent> parse_traceparent(std::string_view v) {
  // version "-" trace-id "-" parent-id "-" flags; version ff is invalid; 00 has exactly 55 bytes.
  if (v.size() < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-') return std::nullopt;
  auto version = v.substr(0, 2), trace = v.substr(3, 32), parent = v.substr(36, 16), flags = v.substr(53, 2);
  if (!is_hex_lower(version) || version == "ff" || !is_hex_lower(trace) || !is_hex_lower(parent) ||
      !is_hex_lower(flags) || all_zero(trace) || all_zero(parent))
    return std::nullopt;
  if (version == "00" && v.size() != 55) return std::nullopt;
  if (version != "00" && v.size() > 55 && v[55] != '-') return std::nullopt;
  return TraceParent{std::string(trace), std::string(parent), std::string(flags)};
}

namespace {
// `digits` lower-case hex digits of value (the low ones) into p.
void write_hex(char* p, uint64_t value, int digits) {
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = digits - 1; i >= 0; --i, value >>= 4) p[i] = kHex[value & 0xf];
}
}  // namespace

std::string_view build_upstream_head(const http1::RequestHead& head, const UpstreamRequest& r, std::string& out) {
  out.append(r.method);
  out.push_back(' ');
  out.append(r.target);
  out.append(" HTTP/1.1\r\nHost: "sv);
  out.append(head.authority.empty() ? r.default_host : head.authority);
  out.append("\r\n"sv);
  std::string_view request_id, traceparent;
  bool has_connection = false;
  for (const auto& f : head.fields) {
    if (iequals_name(f.name, "connection")) has_connection = true;
    else if (f.name.size() == 11 && iequals_name(f.name, "traceparent") && traceparent.empty()) traceparent = f.value;
  }
  auto tp = traceparent.empty() ? std::nullopt : parse_traceparent(traceparent);
  for (const auto& f : head.fields) {
    if (is_hop_by_hop(f.name) || replaced_upstream(f.name) || unvouched_forwarding(f.name, r.trusted_peer)) continue;
    if (has_connection && named_by_connection(head.fields, f.name)) continue;
    // W3C Trace Context: without a valid traceparent, tracestate belongs to no trace we continue.
    if (!tp && f.name.size() == 10 && iequals_name(f.name, "tracestate")) continue;
    if (f.name.size() == 12 && iequals_name(f.name, "x-request-id")) {
      if (!sane_request_id(f.value) || !request_id.empty()) continue;
      request_id = f.value;
    }
    out.append(f.name);
    out.append(": "sv);
    out.append(f.value);
    out.append("\r\n"sv);
  }
  // X-Forwarded-For: every value the client sent, in order, then the client's address.
  out.append("X-Forwarded-For: "sv);
  for (const auto& f : head.fields)
    if (f.name.size() == 15 && iequals_name(f.name, "x-forwarded-for") && !f.value.empty()) {
      out.append(f.value);
      out.append(", "sv);
    }
  out.append(r.client_ip);
  out.append("\r\n"sv);
  // X-Real-IP: the one client address, as nginx users set it and Traefik does; a client's own
  // never passes (replaced_upstream), so a service may believe it.
  field(out, "X-Real-IP", r.real_ip.empty() ? r.client_ip : r.real_ip);
  field(out, "X-Forwarded-Proto", r.proto);
  if (!head.authority.empty()) field(out, "X-Forwarded-Host", head.authority);
  size_t id_at = 0;  // where a generated id starts in `out` (a view is taken once `out` stops growing)
  if (request_id.empty()) {
    // "X-Request-Id: " 32 hex digits CRLF, written in place.
    constexpr std::string_view kName = "X-Request-Id: ";
    size_t at = out.size();
    out.resize(at + kName.size() + 32 + 2);
    char* p = out.data() + at;
    std::memcpy(p, kName.data(), kName.size());
    id_at = at + kName.size();
    write_hex(p + kName.size(), r.random[0], 16);
    write_hex(p + kName.size() + 16, r.random[1] ^ r.random[2], 16);
    std::memcpy(p + kName.size() + 32, "\r\n", 2);
  }
  // traceparent: keep the trace, new parent span id (this hop), same flags; or start a trace.
  {
    // "traceparent: 00-" trace-id(32) "-" parent-id(16) "-" flags(2) CRLF, written in place.
    constexpr std::string_view kPrefix = "traceparent: 00-";
    size_t at = out.size();
    out.resize(at + kPrefix.size() + 32 + 1 + 16 + 1 + 2 + 2);
    char* p = out.data() + at;
    std::memcpy(p, kPrefix.data(), kPrefix.size());
    p += kPrefix.size();
    if (tp) {
      std::memcpy(p, tp->trace_id.data(), 32);
    } else {
      write_hex(p, r.random[1] | 1, 16);  // never all zero
      write_hex(p + 16, r.random[2], 16);
    }
    p[32] = '-';
    write_hex(p + 33, (r.random[0] ^ (r.random[2] << 1)) | 1, 16);
    p[49] = '-';
    std::memcpy(p + 50, tp ? tp->flags.data() : "01", 2);
    std::memcpy(p + 52, "\r\n", 2);
  }
  if (r.upgrade) {
    out.append("Connection: upgrade\r\nUpgrade: "sv);
    out.append(head.upgrade_protocols);
    out.append("\r\n"sv);
  }
  if (r.chunked) {
    out.append("Transfer-Encoding: chunked\r\n"sv);
  } else if (r.content_length) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, *r.content_length);
    out.append("Content-Length: "sv);
    out.append(buf, static_cast<size_t>(end - buf));
    out.append("\r\n"sv);
  }
  out.append("\r\n"sv);
  return request_id.empty() ? std::string_view(out).substr(id_at, 32) : request_id;
}

void build_downstream_head(const http1::ResponseHead& head, const DownstreamResponse& r, std::string& out) {
  // HTTP/1.1 to HTTP/1.0 clients too (RFC 9110 §6.2: the highest minor version the server
  // conforms to, as nginx and Envoy answer); what the answer may use (no chunked, no interim
  // answers, keep-alive only when asked) still follows the client's version.
  out.append("HTTP/1.1 ");
  char buf[8];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, head.status);
  out.append(buf, static_cast<size_t>(end - buf));
  out.push_back(' ');
  out.append(head.reason);
  out.append("\r\n"sv);
  // The parser marked the fields a Connection option names (connection_listed, parallel to
  // fields): no second pass over the Connection values per field.
  const bool marks = head.has_connection_tokens && head.connection_listed.size() == head.fields.size();
  bool has_date = false;
  for (size_t i = 0; i < head.fields.size(); ++i) {
    const auto& f = head.fields[i];
    // Trailer announces the fields after the last chunk, which a chunked answer passed on as it
    // came keeps (an HTTP/1.0 client gets the body decoded, without them).
    if (is_hop_by_hop(f.name) && !(r.chunked && f.name.size() == 7 && iequals_name(f.name, "trailer"))) continue;
    if (f.name.size() == 14 && iequals_name(f.name, "content-length")) continue;
    if (marks && head.connection_listed[i]) continue;
    if (f.name.size() == 4 && iequals_name(f.name, "date")) has_date = true;
    out.append(f.name);
    out.append(": "sv);
    out.append(f.value);
    out.append("\r\n"sv);
  }
  if (!has_date && !r.date.empty()) field(out, "Date", r.date);
  if (r.upgrade) {
    out.append("Connection: upgrade\r\n"sv);
    if (auto u = head.field("upgrade")) field(out, "Upgrade", *u);
  } else if (!r.keep_alive) {
    out.append("Connection: close\r\n"sv);
  } else if (r.version_minor == 0) {
    out.append("Connection: keep-alive\r\n"sv);
  }
  if (r.chunked) {
    out.append("Transfer-Encoding: chunked\r\n"sv);
  } else if (r.content_length) {
    char cl[24];
    auto [e2, ec2] = std::to_chars(cl, cl + sizeof cl, *r.content_length);
    out.append("Content-Length: "sv);
    out.append(cl, static_cast<size_t>(e2 - cl));
    out.append("\r\n"sv);
  }
  out.append("\r\n"sv);
}

}  // namespace flotilla::gateway
