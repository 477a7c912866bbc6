#include "gateway/http1/request_parser.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <limits>

#include "gateway/http1/syntax.h"

namespace flotilla::gateway::http1 {

using syntax::is_ows;
using syntax::is_tchar;

namespace {
// Most requests carry 10-25 fields; the vectors grow past this once per connection at most.
constexpr size_t kInitialFields = 32;
// Offsets are kept as uint32_t; no sane limit comes near this.
constexpr size_t kLimitCap = size_t{1} << 30;

// The bytes of a host name: ALPHA, DIGIT, "-", ".", "_", "~" (RFC 3986 unreserved).
constexpr std::array<bool, 256> make_reg_name() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("-._~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
constexpr std::array<bool, 256> kRegName = make_reg_name();

bool valid_reg_name(std::string_view s) {
  if (s.empty() || s.size() > 255) return false;
  // No name has an empty label ("a..example.com"); refused, as nginx does.
  if (s.find("..") != std::string_view::npos) return false;
  for (char c : s)
    if (!kRegName[static_cast<unsigned char>(c)]) return false;
  return true;
}

// port = *DIGIT (RFC 3986 §3.2.3): "host:" is the default port (RFC 9110 §4.2.3), as nginx takes it.
bool valid_port(std::string_view s) {
  if (s.size() > 5) return false;
  uint32_t n = 0;
  for (char c : s) {
    if (!syntax::is_digit(c)) return false;
    n = n * 10 + static_cast<uint32_t>(c - '0');
  }
  return n <= 65535;
}
}  // namespace

bool valid_ipv4(std::string_view s) {
  int octets = 0;
  for (;;) {
    size_t dot = s.find('.');
    std::string_view o = s.substr(0, dot);
    if (o.empty() || o.size() > 3 || (o.size() > 1 && o[0] == '0')) return false;  // dec-octet: no leading 0
    int n = 0;
    for (char c : o) {
      if (!syntax::is_digit(c)) return false;
      n = n * 10 + (c - '0');
    }
    if (n > 255) return false;
    ++octets;
    if (dot == std::string_view::npos) break;
    s.remove_prefix(dot + 1);
  }
  return octets == 4;
}

// RFC 3986 IPv6address: up to 8 groups of 1-4 hex digits, one "::" standing for one or more
// zero groups, and optionally an IPv4 address in place of the last two groups. No zone id.
bool valid_ipv6(std::string_view s) {
  const size_t n = s.size();
  if (n < 2) return false;
  size_t i = 0;
  int groups = 0;
  bool compressed = false;
  if (s[0] == ':') {
    if (s[1] != ':') return false;
    compressed = true;
    i = 2;
  }
  while (i < n) {
    size_t start = i;
    while (i < n && syntax::hex_value(s[i]) >= 0) ++i;
    if (i < n && s[i] == '.') {  // the IPv4 tail
      if (!valid_ipv4(s.substr(start))) return false;
      groups += 2;
      break;
    }
    if (i == start || i - start > 4) return false;
    ++groups;
    if (i == n) break;
    if (s[i] != ':') return false;
    ++i;
    if (i == n) return false;  // a single trailing ':'
    if (s[i] == ':') {
      if (compressed) return false;
      compressed = true;
      ++i;
    }
  }
  return compressed ? groups <= 7 : groups == 8;
}

bool valid_authority(std::string_view s) {
  if (s.empty()) return false;
  std::string_view rest;
  if (s[0] == '[') {
    size_t close = s.find(']');
    if (close == std::string_view::npos || !valid_ipv6(s.substr(1, close - 1))) return false;
    rest = s.substr(close + 1);
  } else {
    size_t colon = s.find(':');
    if (!valid_reg_name(s.substr(0, colon))) return false;
    if (colon != std::string_view::npos) rest = s.substr(colon);
  }
  if (rest.empty()) return true;
  return rest[0] == ':' && valid_port(rest.substr(1));
}

std::optional<std::string_view> RequestHead::field(std::string_view lower_name) const {
  for (const auto& f : fields)
    if (syntax::iequals(f.name, lower_name)) return f.value;
  return std::nullopt;
}

RequestParser::RequestParser(const Limits& limits) : limits_(limits) {
  limits_.max_request_line = std::min(limits_.max_request_line, kLimitCap);
  limits_.max_header_bytes = std::min(limits_.max_header_bytes, kLimitCap);
  spans_.reserve(std::min(limits_.max_header_count, kInitialFields));
  head_.fields.reserve(std::min(limits_.max_header_count, kInitialFields));
}

void RequestParser::reset() {
  // Everything back to its initial value but the two vectors, which keep their capacity.
  std::vector<FieldSpan> spans = std::move(spans_);
  std::vector<Field> fields = std::move(head_.fields);
  spans.clear();
  fields.clear();
  const Limits limits = limits_;
  *this = RequestParser(NoReserve{});
  limits_ = limits;
  spans_ = std::move(spans);
  head_.fields = std::move(fields);
}

RequestParser::Result RequestParser::fail(int status, std::string_view reason) {
  phase_ = Phase::finished;
  result_ = Result{Status::error, 0, status, reason};
  return result_;
}

RequestParser::Result RequestParser::parse(std::string_view buffer) {
  if (phase_ == Phase::finished) {
    // The buffer may have moved since: the head's views follow it.
    if (result_.status == Status::done && buffer.size() >= result_.head_length) bind(buffer);
    return result_;
  }
  assert(buffer.size() >= scan_ && "the buffer must hold at least the bytes given before");
  if (buffer.size() < scan_) return fail(400, "request buffer shrank");
  const char* p = buffer.data();

  for (;;) {
    // Each line is scanned within the window its size limit allows, so a peer that never sends
    // CRLF is refused as soon as it has sent one byte too many.
    const bool in_request_line = phase_ == Phase::request_line;
    const size_t window_end =
        section_start_ + (in_request_line ? limits_.max_request_line + 2 : limits_.max_header_bytes);
    const size_t end = std::min(buffer.size(), window_end);
    auto too_long = [&] {
      return in_request_line ? fail(414, "request line too long") : fail(431, "header section too large");
    };

    if (in_request_line && !method_seen_) {
      // The method is checked as it arrives, so a stream that is not HTTP at all (a TLS hello on
      // the plain port) is refused at its first byte instead of after 8 KiB or the head timeout.
      size_t from = scan_;
      while (scan_ < end && is_tchar(p[scan_])) ++scan_;
      examined_ += scan_ - from;
      if (scan_ < end) {
        char c = p[scan_];
        if (c == ' ' && scan_ > line_start_) {
          method_seen_ = true;
          ++scan_;
          ++examined_;
        } else if (c != '\r' && c != '\n') {
          return fail(400, scan_ == line_start_ ? "malformed request line" : "invalid character in method");
        }
        // CR or LF: the line scan below judges it (an empty line before the request, or an error).
      }
    }

    // Find the CRLF that ends the line; any other CR or LF is an error.
    size_t cr = std::string_view::npos;
    if (scan_ < end) {
      size_t stop = syntax::find_cr_or_lf(p, scan_, end);
      examined_ += stop - scan_ + (stop < end ? 1 : 0);
      scan_ = stop;
      if (stop < end) {
        if (p[stop] == '\n') return fail(400, "LF without CR");
        // The LF would be past the limit, whatever it turns out to be.
        if (scan_ + 1 >= window_end) return too_long();
        if (scan_ + 1 >= buffer.size()) return Result{};  // the LF may still come
        if (p[scan_ + 1] != '\n') return fail(400, "CR without LF");
        cr = scan_;
      }
    }
    if (cr == std::string_view::npos) {
      if (scan_ >= window_end) return too_long();
      return Result{};
    }

    scan_ = cr + 2;
    Result r = in_request_line ? request_line(buffer, cr) : field_line(buffer, cr);
    if (r.status != Status::need_more) return r;
    line_start_ = scan_;
  }
}

// The request line [line_start_, cr): method SP request-target SP HTTP-version, single spaces.
RequestParser::Result RequestParser::request_line(std::string_view buffer, size_t cr) {
  std::string_view line = buffer.substr(line_start_, cr - line_start_);
  examined_ += line.size();
  if (line.empty()) return Result{};  // RFC 9112 §2.2: ignore empty lines before a request
  if (!method_seen_) return fail(400, "malformed request line");

  size_t sp1 = line.find(' ');
  size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos) return fail(400, "malformed request line");
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (target.empty() || version.find(' ') != std::string_view::npos) return fail(400, "malformed request line");

  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || !syntax::is_digit(version[5]) || version[6] != '.' ||
      !syntax::is_digit(version[7]))
    return fail(400, "malformed HTTP version");
  if (version[5] != '1') return fail(505, "HTTP version not supported");
  // A higher minor version is processed as the highest this recipient implements (RFC 9110 §2.5):
  // HTTP/1.2 is answered, and forwarded, as HTTP/1.1.
  minor_ = std::min(version[7] - '0', 1);

  if (method == "CONNECT") return fail(501, "CONNECT is not supported");

  // Visible ASCII only; '#' too is refused: a fragment is never sent, and servers disagree on
  // whether it ends the path.
  if (!syntax::all_vchar_except(target, '#')) return fail(400, "invalid character in request target");

  const size_t base = line_start_ + sp1 + 1;
  if (target[0] == '/') {
    form_ = TargetForm::origin;
    path_ = Span{static_cast<uint32_t>(base), static_cast<uint32_t>(target.size())};
  } else if (target == "*") {
    if (method != "OPTIONS") return fail(400, "asterisk-form target outside OPTIONS");
    form_ = TargetForm::asterisk;
    path_ = Span{static_cast<uint32_t>(base), 1};
  } else {
    size_t scheme = syntax::iequals(target.substr(0, 7), "http://")    ? 7
                    : syntax::iequals(target.substr(0, 8), "https://") ? 8
                                                                        : 0;
    if (scheme == 0) return fail(400, "request target is neither origin-form nor absolute-form");
    std::string_view rest = target.substr(scheme);
    std::string_view authority = rest.substr(0, rest.find_first_of("/?"));
    if (authority.find('@') != std::string_view::npos) return fail(400, "userinfo in request target");
    if (!valid_authority(authority)) return fail(400, "invalid authority in request target");
    form_ = TargetForm::absolute;
    target_authority_ = Span{static_cast<uint32_t>(base + scheme), static_cast<uint32_t>(authority.size())};
    path_ = Span{static_cast<uint32_t>(base + scheme + authority.size()),
                 static_cast<uint32_t>(rest.size() - authority.size())};
  }

  method_ = Span{static_cast<uint32_t>(line_start_), static_cast<uint32_t>(sp1)};
  target_ = Span{static_cast<uint32_t>(base), static_cast<uint32_t>(target.size())};
  phase_ = Phase::fields;
  section_start_ = scan_;
  return Result{};
}

// One field line [line_start_, cr), or the empty line that ends the head.
RequestParser::Result RequestParser::field_line(std::string_view buffer, size_t cr) {
  std::string_view line = buffer.substr(line_start_, cr - line_start_);
  examined_ += line.size();
  if (line.empty()) return finish(buffer);
  if (spans_.size() >= limits_.max_header_count) return fail(431, "too many header fields");
  if (is_ows(line[0])) return fail(400, "obs-fold (folded header line)");

  size_t colon = 0;
  while (colon < line.size() && is_tchar(line[colon])) ++colon;
  if (colon == line.size()) return fail(400, "header line without colon");
  if (line[colon] != ':')
    return fail(400, is_ows(line[colon]) ? "whitespace in field name or before colon" : "invalid character in field name");
  if (colon == 0) return fail(400, "empty field name");

  std::string_view name = line.substr(0, colon);
  std::string_view raw = line.substr(colon + 1);
  std::string_view value = syntax::trim_ows(raw);
  if (size_t bad = syntax::find_invalid_value_byte(value); bad != std::string_view::npos)
    return fail(400, value[bad] == '\0' ? "NUL in field value" : "control character in field value");
  const Span value_span{static_cast<uint32_t>(line_start_ + colon + 1 + static_cast<size_t>(value.data() - raw.data())),
                        static_cast<uint32_t>(value.size())};
  spans_.push_back({Span{static_cast<uint32_t>(line_start_), static_cast<uint32_t>(colon)}, value_span});

  // The fields that decide framing, routing and the connection's fate. Dispatch on length first:
  // most fields are none of these.
  switch (name.size()) {
    case 4:
      if (syntax::iequals_token(name, "host")) {
        if (host_seen_) return fail(400, "more than one Host");
        host_seen_ = true;
        if (!valid_authority(value)) return fail(400, "invalid Host");
        host_ = value_span;
      }
      break;
    case 6:
      // Other expectations are not refused (RFC 9110 §10.1.1 allows but does not require 417).
      if (syntax::iequals_token(name, "expect") && syntax::iequals(value, "100-continue")) expect_continue_ = true;
      break;
    case 7:
      if (syntax::iequals_token(name, "upgrade") && !upgrade_seen_) {
        upgrade_seen_ = true;
        upgrade_ = value_span;
      }
      break;
    case 10:
      if (syntax::iequals_token(name, "connection")) {
        bool ok = true;
        syntax::for_each_list_element(value, [&](std::string_view e) {
          if (e.empty()) return;  // RFC 9110 §5.6.1: empty list elements are ignored
          if (!syntax::is_token(e)) ok = false;
          else if (syntax::iequals_token(e, "close")) conn_close_ = true;
          else if (syntax::iequals_token(e, "keep-alive")) conn_keep_alive_ = true;
          else if (syntax::iequals_token(e, "upgrade")) conn_upgrade_ = true;
        });
        if (!ok) return fail(400, "malformed Connection");
      }
      break;
    case 14:
      if (syntax::iequals_token(name, "content-length")) {
        // One field, one plain decimal: no lists, no duplicates even when equal (RFC 9112 §6.3
        // would allow equal duplicates; refusing them leaves no room for disagreement).
        if (content_length_) return fail(400, "more than one Content-Length");
        if (te_seen_) return fail(400, "both Content-Length and Transfer-Encoding");
        if (value.empty()) return fail(400, "empty Content-Length");
        uint64_t n = 0;
        for (char c : value) {
          if (!syntax::is_digit(c)) return fail(400, "Content-Length is not a number");
          auto d = static_cast<uint64_t>(c - '0');
          if (n > (std::numeric_limits<uint64_t>::max() - d) / 10) return fail(400, "Content-Length overflows");
          n = n * 10 + d;
        }
        content_length_ = n;
      }
      break;
    case 17:
      if (syntax::iequals_token(name, "transfer-encoding")) {
        if (te_seen_) return fail(400, "more than one Transfer-Encoding");
        te_seen_ = true;
        if (content_length_) return fail(400, "both Content-Length and Transfer-Encoding");
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        if (minor_ == 0) return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
        if (syntax::iequals(value, "chunked")) {
          chunked_ = true;
          break;
        }
        // Anything but exactly "chunked": 501 when it is a well-formed list naming a coding we do
        // not implement, 400 when it is malformed or repeats chunked.
        bool well_formed = true, other = false;
        syntax::for_each_list_element(value, [&](std::string_view e) {
          std::string_view coding = syntax::trim_ows(e.substr(0, e.find(';')));
          if (!syntax::is_token(coding)) well_formed = false;
          else if (!syntax::iequals(coding, "chunked")) other = true;
        });
        if (well_formed && other) return fail(501, "unsupported transfer coding");
        return fail(400, "malformed Transfer-Encoding");
      }
      break;
    default:
      break;
  }
  return Result{};
}

RequestParser::Result RequestParser::finish(std::string_view buffer) {
  // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400.
  if (minor_ == 1 && !host_seen_) return fail(400, "missing Host");

  phase_ = Phase::finished;
  result_ = Result{Status::done, scan_, 0, {}};
  bind(buffer);
  return result_;
}

void RequestParser::bind(std::string_view buffer) {
  head_.method = view(buffer, method_);
  head_.target = view(buffer, target_);
  head_.target_form = form_;
  head_.path = view(buffer, path_);
  head_.host = host_seen_ ? view(buffer, host_) : std::string_view();
  head_.authority = form_ == TargetForm::absolute ? view(buffer, target_authority_) : head_.host;
  head_.version_minor = minor_;
  head_.fields.clear();
  for (const auto& s : spans_) head_.fields.push_back(Field{view(buffer, s.name), view(buffer, s.value)});
  head_.content_length = content_length_;
  head_.chunked = chunked_;
  head_.keep_alive = minor_ == 1 ? !conn_close_ : (conn_keep_alive_ && !conn_close_);
  head_.expect_continue = minor_ == 1 && expect_continue_;
  head_.upgrade = minor_ == 1 && conn_upgrade_ && upgrade_seen_ && upgrade_.len > 0;
  head_.upgrade_protocols = head_.upgrade ? view(buffer, upgrade_) : std::string_view();
}

}  // namespace flotilla::gateway::http1
