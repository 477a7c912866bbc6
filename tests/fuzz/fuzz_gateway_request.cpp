// Feeds raw bytes, as a client would send them, to the gateway's downstream request parser and
// chunked decoder. What the parser accepts is all the proxy would ever forward, so an accepted
// head must hold every invariant the proxy relies on: no CR/LF/NUL in what it would copy
// upstream, one framing (never both Content-Length and chunked), a valid Host on HTTP/1.1, views
// inside the head, and the same answer when re-read. The answer must not depend on how the
// bytes were split on arrival: every input is also parsed and decoded in two pieces, split at a
// point derived from the input (so the fuzzer steers it), and byte at a time when short.
// Any violation aborts.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "gateway/http1/chunked_decoder.h"
#include "gateway/http1/request_parser.h"
#include "gateway/http1/syntax.h"
#include "gateway/forward_headers.h"
#include "gateway/path.h"
#include "gateway/trusted_proxies.h"

using namespace flotilla::gateway::http1;
namespace syntax = flotilla::gateway::http1::syntax;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

using PResult = RequestParser::Result;

// The parse result and everything the head says, as one comparable string.
std::string describe(const RequestParser& p, const PResult& r) {
  std::string o = std::to_string(static_cast<int>(r.status)) + "|" + std::to_string(r.head_length) + "|" +
                  std::to_string(r.http_status) + "|" + std::string(r.reason);
  if (r.status != RequestParser::Status::done) return o;
  const RequestHead& h = p.head();
  o += "|" + std::string(h.method) + "|" + std::string(h.target) + "|" + std::to_string(int(h.target_form)) + "|" +
       std::string(h.path) + "|" + std::string(h.authority) + "|" + std::string(h.host) + "|" +
       std::to_string(h.version_minor) + "|" + (h.content_length ? std::to_string(*h.content_length) : "-") + "|" +
       char('0' + h.chunked) + char('0' + h.keep_alive) + char('0' + h.expect_continue) + char('0' + h.upgrade) +
       "|" + std::string(h.upgrade_protocols);
  for (const auto& f : h.fields) o += "|" + std::string(f.name) + ":" + std::string(f.value);
  return o;
}

bool inside(std::string_view part, std::string_view whole) {
  if (part.empty() && part.data() == nullptr) return true;
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

void check_accepted_head(const RequestParser& p, const PResult& r, std::string_view input) {
  check(r.head_length <= input.size() && r.head_length >= 4);
  std::string_view head = input.substr(0, r.head_length);
  check(head.substr(head.size() - 4) == "\r\n\r\n");
  const RequestHead& h = p.head();

  for (auto v : {h.method, h.target, h.path, h.authority, h.host, h.upgrade_protocols}) check(inside(v, head));
  check(syntax::is_token(h.method) && h.method != "CONNECT");
  check(!h.target.empty());
  for (char c : h.target) check(syntax::is_vchar(c));
  check(h.version_minor == 0 || h.version_minor == 1);
  check(!(h.content_length && h.chunked));
  if (h.version_minor == 1) check(!h.host.empty() && valid_authority(h.host));
  if (!h.host.empty()) check(valid_authority(h.host));
  check(valid_authority(h.authority) || (h.version_minor == 0 && h.authority.empty()));
  if (h.chunked) check(h.version_minor == 1);

  int content_lengths = 0, transfer_encodings = 0, hosts = 0;
  for (const auto& f : h.fields) {
    check(inside(f.name, head) && inside(f.value, head));
    check(syntax::is_token(f.name));
    if (!f.value.empty()) check(!syntax::is_ows(f.value.front()) && !syntax::is_ows(f.value.back()));
    for (char c : f.value) check(syntax::is_field_value_byte(c) && c != '\r' && c != '\n' && c != '\0');
    if (syntax::iequals(f.name, "content-length")) {
      ++content_lengths;
      // The number it holds, without the leading zeros the field may carry.
      std::string_view digits = f.value.substr(std::min(f.value.find_first_not_of('0'), f.value.size() - 1));
      check(h.content_length && std::to_string(*h.content_length) == digits);
    }
    if (syntax::iequals(f.name, "transfer-encoding")) {
      ++transfer_encodings;
      check(h.chunked && syntax::iequals(f.value, "chunked"));
    }
    if (syntax::iequals(f.name, "host")) ++hosts;
  }
  check(content_lengths == (h.content_length ? 1 : 0));
  check(transfer_encodings == (h.chunked ? 1 : 0));
  check(hosts == (h.host.empty() ? 0 : 1));

  // One line per field, plus the request line, the final empty line and any empty lines before
  // the request line: no CR or LF hides anywhere else.
  size_t lines = 0;
  for (size_t i = 0; i + 1 < head.size(); ++i)
    if (head[i] == '\r') {
      check(head[i + 1] == '\n');
      ++lines;
    }
  for (char c : head) check(c != '\0');
  size_t leading = 0;
  while (head.substr(leading * 2, 2) == "\r\n") ++leading;
  check(lines == h.fields.size() + 2 + leading);
}

// What the proxy would send upstream: the head re-serialized. It must parse to the same head.
void check_reserialized(const RequestParser& p, Limits limits) {
  // The copy may be longer (": " after every name), so only the field count keeps its limit.
  limits.max_request_line = limits.max_header_bytes = size_t{1} << 20;
  const RequestHead& h = p.head();
  std::string out = std::string(h.method) + " " + std::string(h.target) + " HTTP/1." + char('0' + h.version_minor) +
                    "\r\n";
  for (const auto& f : h.fields) out += std::string(f.name) + ": " + std::string(f.value) + "\r\n";
  out += "\r\n";
  RequestParser again(limits);
  auto r = again.parse(out);
  check(r.status == RequestParser::Status::done && r.head_length == out.size());
  const RequestHead& g = again.head();
  check(g.method == h.method && g.target == h.target && g.fields.size() == h.fields.size());
  for (size_t i = 0; i < g.fields.size(); ++i) check(g.fields[i].name == h.fields[i].name && g.fields[i].value == h.fields[i].value);
  check(g.content_length == h.content_length && g.chunked == h.chunked && g.keep_alive == h.keep_alive &&
        g.upgrade == h.upgrade && g.authority == h.authority && g.host == h.host);
}

struct Decoded {
  ChunkedDecoder::Status status;
  std::string body;
  size_t consumed = 0;
  int http_status = 0;
  std::string reason;
  bool operator==(const Decoded&) const = default;
};

// An independent, whole-buffer reading of RFC 9112 §7.1 with the same limits, written for
// clarity rather than speed: the decoder must finish exactly when this does, with the same bytes.
struct Reference {
  bool done = false;
  std::string body;
  size_t consumed = 0;
};

bool ref_token(std::string_view s, size_t& i) {
  size_t from = i;
  while (i < s.size() && syntax::is_tchar(s[i])) ++i;
  return i > from;
}
void ref_ws(std::string_view s, size_t& i) {
  while (i < s.size() && syntax::is_ows(s[i])) ++i;
}
// *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
bool ref_extensions(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    ref_ws(s, i);
    if (i == s.size() || s[i] != ';') return false;
    ++i;
    ref_ws(s, i);
    if (!ref_token(s, i)) return false;
    size_t j = i;
    ref_ws(s, j);
    if (j < s.size() && s[j] == '=') {
      i = j + 1;
      ref_ws(s, i);
      if (i < s.size() && s[i] == '"') {
        ++i;
        for (;;) {
          if (i == s.size()) return false;
          unsigned char c = static_cast<unsigned char>(s[i]);
          if (c == '"') break;
          if (c == '\\') {
            if (++i == s.size()) return false;
            c = static_cast<unsigned char>(s[i]);
            if (!(c == '\t' || (c >= 0x20 && c != 0x7f))) return false;
          } else if (!(c == '\t' || (c >= 0x20 && c != 0x7f))) {
            return false;
          }
          ++i;
        }
        ++i;
      } else if (!ref_token(s, i)) {
        return false;
      }
    }
  }
  return true;
}

Reference reference_decode(std::string_view b, const Limits& limits) {
  Reference out;
  size_t pos = 0;
  uint64_t total = 0;
  for (;;) {
    size_t eol = b.find("\r\n", pos);
    if (eol == std::string_view::npos) return out;
    std::string_view line = b.substr(pos, eol - pos);
    size_t digits = 0;
    uint64_t size = 0;
    while (digits < line.size() && syntax::hex_value(line[digits]) >= 0) {
      if (digits == 16) return out;
      size = size * 16 + static_cast<uint64_t>(syntax::hex_value(line[digits]));
      ++digits;
    }
    if (digits == 0) return out;
    std::string_view ext = line.substr(digits);
    if (ext.size() > limits.max_chunk_extension || !ref_extensions(ext)) return out;
    pos = eol + 2;
    if (size == 0) break;
    if (size > UINT64_MAX - total) return out;
    total += size;
    if (b.size() - pos < size || b.size() - pos - size < 2) return out;
    out.body += b.substr(pos, size);
    if (b.substr(pos + size, 2) != "\r\n") return out;
    pos += size + 2;
  }
  const size_t start = pos;
  size_t fields = 0;
  for (;;) {
    size_t eol = b.find("\r\n", pos);
    if (eol == std::string_view::npos || eol + 2 - start > limits.max_header_bytes) return out;
    std::string_view line = b.substr(pos, eol - pos);
    if (line.empty()) {
      out.done = true;
      out.consumed = eol + 2;
      return out;
    }
    if (++fields > limits.max_header_count) return out;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || !syntax::is_token(line.substr(0, colon))) return out;
    for (char c : line.substr(colon + 1))
      if (!syntax::is_field_value_byte(c)) return out;
    pos = eol + 2;
  }
}

// Decodes `body` fed in pieces that end at each cut (then the rest), each piece in its own
// buffer so a view outliving its piece would show under ASan.
template <typename Cuts>
Decoded decode(std::string_view body, const Cuts& cuts, size_t ncuts, const Limits& limits) {
  ChunkedDecoder d(limits);
  Decoded out{ChunkedDecoder::Status::need_more, {}, 0, 0, {}};
  size_t from = 0;
  for (size_t k = 0; k <= ncuts; ++k) {
    size_t to = k < ncuts ? cuts[k] : body.size();
    if (to < from) continue;
    std::string piece(body.substr(from, to - from));
    auto s = d.feed(piece, [&](std::string_view data) {
      check(!data.empty() && inside(data, piece));
      out.body += data;
    });
    out.consumed += s.consumed;
    out.status = s.status;
    out.http_status = s.http_status;
    out.reason = std::string(s.reason);
    if (s.status != ChunkedDecoder::Status::need_more) break;
    from = to;
  }
  check(d.decoded_size() == out.body.size());
  check(d.announced_size() >= d.decoded_size());
  if (out.status == ChunkedDecoder::Status::done) check(out.consumed <= body.size() && out.consumed >= 5);
  if (out.status == ChunkedDecoder::Status::error) check(out.http_status == 400 || out.http_status == 431);
  if (out.status == ChunkedDecoder::Status::need_more) check(out.consumed == body.size());
  return out;
}


// Every check on one input under one set of limits.
// What the proxy forwards for an accepted head (built as src/gateway/connection.cpp builds it) must
// be exactly one request head that the same strict parser accepts, with the framing the proxy
// chose, the same method and authority, and nothing after it: no input can make the gateway
// forward bytes an upstream would read as a second request.
void check_forwarded(const RequestParser& p) {
  const RequestHead& head = p.head();
  if (head.target_form == TargetForm::asterisk) return;  // refused by the proxy
  std::string_view target = head.path, path = target, query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q);
  }
  auto normalized = flotilla::gateway::normalize_path(path.empty() ? std::string_view("/") : path);
  if (!normalized) return;  // refused by the proxy (400)
  std::string up_target = *normalized + std::string(query);
  flotilla::gateway::UpstreamRequest ur;
  ur.method = head.method;
  ur.target = up_target;
  ur.client_ip = "192.0.2.1";
  ur.default_host = "service-name";
  ur.upgrade = head.upgrade;
  if (head.chunked) ur.chunked = true;
  else if (head.content_length) ur.content_length = head.content_length;
  // As for anyone, and as for a trusted proxy (gateway.trusted_proxies: the scheme its
  // X-Forwarded-Proto says, the client its X-Forwarded-For names): the same invariants either
  // way, one X-Forwarded-Proto, the gateway's, of http or https, and one X-Real-IP, the client
  // the gateway believes (never one the request brought).
  const auto proto = flotilla::gateway::TrustedProxies::forwarded_proto(head);
  check(!proto || *proto == "http" || *proto == "https");
  // The client a trusted proxy's X-Forwarded-For names is an address that prints and parses back
  // to itself (it keys rate limits and the access log).
  static const flotilla::gateway::TrustedProxies trusted({*flotilla::gateway::parse_cidr("10.0.0.0/8"),
                                                           *flotilla::gateway::parse_cidr("fd00::/8")});
  std::string named;
  if (auto c = trusted.client_of(head)) {
    named = flotilla::gateway::to_string(*c);
    auto back = flotilla::gateway::parse_ip(named);
    check(!named.empty() && back && *back == *c);
  }
  for (bool trusted_peer : {false, true}) {
    ur.proto = trusted_peer && proto ? *proto : std::string_view("http");
    ur.real_ip = trusted_peer ? std::string_view(named) : std::string_view();
    ur.trusted_peer = trusted_peer;
    const std::string_view real_ip = ur.real_ip.empty() ? ur.client_ip : ur.real_ip;
    std::string out;
    flotilla::gateway::build_upstream_head(head, ur, out);
    Limits roomy;  // the gateway adds a few fields
    roomy.max_request_line = 64 * 1024;
    roomy.max_header_bytes = 256 * 1024;
    roomy.max_header_count = 1000;
    RequestParser q(roomy);
    const PResult r = q.parse(out);
    check(r.status == RequestParser::Status::done);
    check(r.head_length == out.size());
    const RequestHead& f = q.head();
    check(f.method == head.method);
    check(f.authority == (head.authority.empty() ? std::string_view("service-name") : head.authority));
    check(f.chunked == ur.chunked);
    check(f.content_length == ur.content_length);
    check(f.version_minor == 1);
    check(f.upgrade == head.upgrade);
    int protos = 0, real_ips = 0;
    for (const auto& field : f.fields) {
      check(!syntax::iequals(field.name, "expect") && !syntax::iequals(field.name, "te"));
      if (syntax::iequals(field.name, "x-forwarded-proto")) {
        ++protos;
        check(field.value == ur.proto);
      } else if (syntax::iequals(field.name, "x-real-ip")) {
        ++real_ips;
        check(field.value == real_ip);
      }
      // No field a service could read as the gateway's word on the request's origin unless the
      // gateway wrote it or a trusted proxy did: no Forwarded; X-Forwarded-* (but -For, -Proto,
      // -Host) and the scheme fields only from a trusted peer; no underscore spelling of any of
      // them, of X-Real-IP or of X-Request-Id.
      std::string folded(field.name);
      for (char& c : folded) c = c == '_' ? '-' : static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
      const bool scheme = folded == "x-scheme" || folded == "x-url-scheme" || folded == "front-end-https";
      const bool forwarding = folded.rfind("x-forwarded-", 0) == 0;
      const bool ours = folded == "x-real-ip" || folded == "x-request-id";
      check(folded != "forwarded");
      check(!((forwarding || scheme || ours) && field.name.find('_') != std::string_view::npos));
      if (!trusted_peer) {
        check(!scheme);
        check(!forwarding || folded == "x-forwarded-for" || folded == "x-forwarded-proto" ||
              folded == "x-forwarded-host");
      }
    }
    check(protos == 1 && real_ips == 1);
  }
}

void exercise(std::string_view input, const Limits& limits, uint64_t h) {
  const size_t size = input.size();

  // All at once.
  RequestParser p(limits);
  const PResult r = p.parse(input);
  const std::string once = describe(p, r);

  switch (r.status) {
    case RequestParser::Status::error:
      check(r.http_status == 400 || r.http_status == 414 || r.http_status == 431 || r.http_status == 501 ||
            r.http_status == 505);
      check(!r.reason.empty());
      break;
    case RequestParser::Status::need_more:
      check(size <= limits.max_request_line + 2 + limits.max_header_bytes);
      break;
    case RequestParser::Status::done:
      check_accepted_head(p, r, input);
      check(r.head_length <= limits.max_request_line + 2 + limits.max_header_bytes);
      check(p.head().fields.size() <= limits.max_header_count);
      check_reserialized(p, limits);
      check_forwarded(p);
      break;
  }

  // In two pieces, the second arriving in a new buffer: the same outcome.
  {
    const size_t cut = size ? h % (size + 1) : 0;
    RequestParser q(limits);
    std::string first(input.substr(0, cut));
    q.parse(first);
    std::string whole(input);
    PResult r2 = q.parse(whole);
    check(describe(q, r2) == once);
    if (r2.status == RequestParser::Status::done) check_accepted_head(q, r2, whole);
  }
  // Byte at a time, when short enough to afford it.
  if (size <= 2048) {
    RequestParser q(limits);
    PResult r3;
    for (size_t n = 0; n <= size; ++n) {
      r3 = q.parse(input.substr(0, n));
      if (r3.status != RequestParser::Status::need_more) break;
    }
    r3 = q.parse(input);
    check(describe(q, r3) == once);
  }

  // The body of an accepted chunked request: whole, in two pieces, in three, byte at a time.
  size_t next_request = std::string_view::npos;
  if (r.status == RequestParser::Status::done && p.head().chunked) {
    std::string_view body = input.substr(r.head_length);
    const size_t none[1] = {0};
    const Decoded whole = decode(body, none, 0, limits);
    const Reference ref = reference_decode(body, limits);
    check(ref.done == (whole.status == ChunkedDecoder::Status::done));
    if (ref.done) check(ref.body == whole.body && ref.consumed == whole.consumed);
    const size_t bs = body.size();
    size_t two[1] = {bs ? (h >> 20) % (bs + 1) : 0};
    check(decode(body, two, 1, limits) == whole);
    size_t three[2] = {bs ? (h >> 32) % (bs + 1) : 0, bs ? (h >> 44) % (bs + 1) : 0};
    if (three[0] > three[1]) std::swap(three[0], three[1]);
    check(decode(body, three, 2, limits) == whole);
    if (bs <= 512) {
      size_t bytes[512];
      for (size_t i = 0; i < bs; ++i) bytes[i] = i + 1;
      check(decode(body, bytes, bs, limits) == whole);
    }
    if (whole.status == ChunkedDecoder::Status::done) next_request = r.head_length + whole.consumed;
  } else if (r.status == RequestParser::Status::done && p.head().content_length.value_or(0) <= size - r.head_length) {
    next_request = r.head_length + p.head().content_length.value_or(0);
  }
  // What follows the body is the next pipelined request: the same parser, reset, reads it.
  if (next_request != std::string_view::npos) {
    p.reset();
    std::string_view rest = input.substr(next_request);
    auto rn = p.parse(rest);
    if (rn.status == RequestParser::Status::done) check_accepted_head(p, rn, rest);
    RequestParser fresh(limits);
    check(describe(fresh, fresh.parse(rest)) == describe(p, rn));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const uint64_t h = fnv1a(input);
  // The defaults, and small limits (chosen by the input) so short inputs reach every limit path.
  exercise(input, Limits{}, h);
  Limits small;
  small.max_request_line = 8 + (h >> 8) % 64;
  small.max_header_bytes = 2 + (h >> 16) % 256;
  small.max_header_count = (h >> 24) % 6;
  small.max_chunk_extension = (h >> 32) % 24;
  exercise(input, small, h);
  return 0;
}
