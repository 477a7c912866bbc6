// Feeds raw bytes, as an upstream would send them, to the gateway's response-head parser. What
// the parser accepts is what the proxy frames the body by and copies downstream, so an accepted
// head must hold every invariant the proxy relies on: no CR/LF/NUL in any view, views inside the
// head, Content-Length and Transfer-Encoding read as an independent reading of the fields reads
// them, keep_alive and the Connection-listed fields likewise, and the same head when the head is
// re-serialised and parsed again. The answer must not depend on how the bytes were split on
// arrival: every input is also parsed in two pieces, split at a point derived from the input (so
// the fuzzer steers it), and byte at a time when short. After an accepted head whose body length
// is known, the same parser, reset, reads the next response exactly as a fresh one does.
// Any violation aborts.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/http1/request_parser.h"
#include "gateway/http1/response_parser.h"
#include "gateway/http1/syntax.h"

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

using PResult = ResponseParser::Result;

// The parse result and everything the head says, as one comparable string.
std::string describe(const ResponseParser& p, const PResult& r) {
  std::string o = std::to_string(static_cast<int>(r.status)) + "|" + std::to_string(r.head_length) + "|" +
                  std::string(r.reason);
  if (r.status != ResponseParser::Status::done) return o;
  const ResponseHead& h = p.head();
  o += "|" + std::to_string(h.status) + "|" + std::to_string(h.version_minor) + "|" + std::string(h.reason) + "|" +
       (h.content_length ? std::to_string(*h.content_length) : "-") + "|" + char('0' + h.chunked) +
       char('0' + h.keep_alive) + char('0' + h.has_connection_tokens);
  check(h.connection_listed.size() == h.fields.size());
  for (size_t i = 0; i < h.fields.size(); ++i)
    o += "|" + std::string(h.fields[i].name) + ":" + std::string(h.fields[i].value) +
         char('0' + h.connection_listed[i]);
  return o;
}

bool inside(std::string_view part, std::string_view whole) {
  if (part.empty() && part.data() == nullptr) return true;
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

// Every element of a comma list, OWS trimmed, empty ones included.
std::vector<std::string_view> elements(std::string_view list) {
  std::vector<std::string_view> out;
  syntax::for_each_list_element(list, [&](std::string_view e) { out.push_back(e); });
  return out;
}

void check_accepted_head(const ResponseParser& p, const PResult& r, std::string_view input) {
  check(r.head_length <= input.size() && r.head_length >= 16);  // "HTTP/1.1 200\r\n\r\n"
  std::string_view head = input.substr(0, r.head_length);
  check(head.substr(0, 7) == "HTTP/1." && head.substr(head.size() - 4) == "\r\n\r\n");
  const ResponseHead& h = p.head();

  check(h.status >= 100 && h.status <= 599);
  check(h.version_minor == 0 || h.version_minor == 1);
  check(head[7] == '0' + h.version_minor && head[8] == ' ' && head.substr(9, 3) == std::to_string(h.status));
  check(inside(h.reason, head));
  for (char c : h.reason) check(syntax::is_field_value_byte(c) && c != '\r' && c != '\n' && c != '\0');
  check(h.connection_listed.size() == h.fields.size());

  // An independent reading of the fields.
  size_t cl_fields = 0, te_fields = 0;
  std::optional<uint64_t> cl;
  std::string_view last_coding;
  bool close = false, keep_alive_option = false;
  std::vector<std::string_view> options;
  for (const auto& f : h.fields) {
    check(inside(f.name, head) && inside(f.value, head));
    check(syntax::is_token(f.name));
    if (!f.value.empty()) check(!syntax::is_ows(f.value.front()) && !syntax::is_ows(f.value.back()));
    for (char c : f.value) check(syntax::is_field_value_byte(c) && c != '\r' && c != '\n' && c != '\0');
    if (same_name(f.name, "content-length")) {
      ++cl_fields;
      check(!f.value.empty());  // any number of digits: leading zeros are valid (RFC 9110 §8.6)
      uint64_t n = 0;
      for (char c : f.value) {
        check(syntax::is_digit(c));
        check(n <= (UINT64_MAX - static_cast<uint64_t>(c - '0')) / 10);
        n = n * 10 + static_cast<uint64_t>(c - '0');
      }
      check(!cl || *cl == n);  // equal duplicates only
      cl = n;
    }
    if (same_name(f.name, "transfer-encoding")) {
      ++te_fields;
      for (auto e : elements(f.value)) {
        check(syntax::is_token(e));
        last_coding = e;
      }
    }
    if (same_name(f.name, "connection")) {
      for (auto e : elements(f.value)) {
        check(e.empty() || syntax::is_token(e));
        if (same_name(e, "close")) close = true;
        else if (same_name(e, "keep-alive")) keep_alive_option = true;
        else if (!e.empty()) options.push_back(e);
      }
    }
  }
  if (te_fields > 0) {
    check(h.version_minor == 1);
    check(!h.content_length);
    check(h.chunked == same_name(last_coding, "chunked"));
  } else {
    check(!h.chunked);
    check(h.content_length == cl);
  }
  const bool keep_alive = (h.version_minor == 1 ? !close : keep_alive_option && !close) && !(te_fields && cl_fields);
  check(h.keep_alive == keep_alive);

  // Connection-listed fields, the quadratic way.
  bool any = false;
  for (size_t i = 0; i < h.fields.size(); ++i) {
    bool named = false;
    if (!same_name(h.fields[i].name, "content-length") && !same_name(h.fields[i].name, "transfer-encoding"))
      for (auto o : options) named |= same_name(o, h.fields[i].name);
    check(h.connection_listed[i] == (named ? 1 : 0));
    any |= named;
  }
  check(h.has_connection_tokens == any);

  // body_kind(), from RFC 9112 §6.3 directly.
  for (bool to_head : {false, true}) {
    BodyKind k = body_kind(h, to_head);
    if (to_head || h.status < 200 || h.status == 204 || h.status == 304) check(k == BodyKind::none);
    else if (h.chunked) check(k == BodyKind::chunked);
    else if (te_fields == 0 && cl_fields > 0) check(k == BodyKind::content_length);
    else check(k == BodyKind::until_close);
    check(connection_reusable(h, to_head) == (h.keep_alive && h.status != 101 && k != BodyKind::until_close));
  }

  // One line per field, plus the status line and the final empty line: no CR or LF hides
  // anywhere else.
  size_t lines = 0;
  for (size_t i = 0; i + 1 < head.size(); ++i)
    if (head[i] == '\r') {
      check(head[i + 1] == '\n');
      ++lines;
    }
  for (char c : head) check(c != '\0');
  check(lines == h.fields.size() + 2);
}

// The head re-serialised, as the proxy would write it downstream (all fields kept): it must parse
// to the same head.
void check_reserialized(const ResponseParser& p, Limits limits) {
  // The copy may be longer (": " after every name), so only the field count keeps its limit.
  limits.max_request_line = limits.max_header_bytes = size_t{1} << 20;
  const ResponseHead& h = p.head();
  std::string out = "HTTP/1." + std::string(1, char('0' + h.version_minor)) + " " + std::to_string(h.status) + " " +
                    std::string(h.reason) + "\r\n";
  for (const auto& f : h.fields) out += std::string(f.name) + ": " + std::string(f.value) + "\r\n";
  out += "\r\n";
  ResponseParser again(limits);
  auto r = again.parse(out);
  check(r.status == ResponseParser::Status::done && r.head_length == out.size());
  const ResponseHead& g = again.head();
  check(g.status == h.status && g.version_minor == h.version_minor && g.reason == h.reason);
  check(g.fields.size() == h.fields.size());
  for (size_t i = 0; i < g.fields.size(); ++i)
    check(g.fields[i].name == h.fields[i].name && g.fields[i].value == h.fields[i].value);
  check(g.content_length == h.content_length && g.chunked == h.chunked && g.keep_alive == h.keep_alive &&
        g.has_connection_tokens == h.has_connection_tokens && g.connection_listed == h.connection_listed);
}

// Every check on one input under one set of limits.
void exercise(std::string_view input, const Limits& limits, uint64_t h) {
  const size_t size = input.size();

  // All at once.
  ResponseParser p(limits);
  const PResult r = p.parse(input);
  const std::string once = describe(p, r);

  switch (r.status) {
    case ResponseParser::Status::error:
      check(!r.reason.empty() && r.head_length == 0);
      break;
    case ResponseParser::Status::need_more:
      check(size <= limits.max_request_line + 2 + limits.max_header_bytes);
      break;
    case ResponseParser::Status::done:
      check_accepted_head(p, r, input);
      check(r.head_length <= limits.max_request_line + 2 + limits.max_header_bytes);
      check(p.head().fields.size() <= limits.max_header_count);
      check_reserialized(p, limits);
      break;
  }
  // The same answer when asked again, with the bytes moved.
  {
    std::string moved(input);
    check(p.parse(moved) == r);
    if (r.status == ResponseParser::Status::done) check_accepted_head(p, r, moved);
  }

  // In two pieces, the second arriving in a new buffer: the same outcome.
  {
    const size_t cut = size ? h % (size + 1) : 0;
    ResponseParser q(limits);
    std::string first(input.substr(0, cut));
    q.parse(first);
    std::string whole(input);
    PResult r2 = q.parse(whole);
    check(describe(q, r2) == once);
    if (r2.status == ResponseParser::Status::done) check_accepted_head(q, r2, whole);
  }
  // Byte at a time, when short enough to afford it.
  if (size <= 2048) {
    ResponseParser q(limits);
    PResult r3;
    for (size_t n = 0; n <= size; ++n) {
      r3 = q.parse(input.substr(0, n));
      if (r3.status != ResponseParser::Status::need_more) break;
    }
    r3 = q.parse(input);
    check(describe(q, r3) == once);
  }

  // What follows a body of known length is the next response (or, after a 1xx, the final one):
  // the same parser, reset, reads it as a fresh one does.
  if (r.status == ResponseParser::Status::done) {
    const bool to_head = (h >> 40) & 1;
    size_t body = 0;
    switch (body_kind(p.head(), to_head)) {
      case BodyKind::none:
        break;
      case BodyKind::content_length:
        body = *p.head().content_length <= size - r.head_length ? static_cast<size_t>(*p.head().content_length)
                                                                 : std::string_view::npos;
        break;
      default:
        body = std::string_view::npos;
        break;
    }
    if (body != std::string_view::npos) {
      std::string_view rest = input.substr(r.head_length + body);
      p.reset();
      auto rn = p.parse(rest);
      if (rn.status == ResponseParser::Status::done) check_accepted_head(p, rn, rest);
      ResponseParser fresh(limits);
      check(describe(fresh, fresh.parse(rest)) == describe(p, rn));
    }
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
  exercise(input, small, h);
  return 0;
}
