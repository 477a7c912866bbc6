#include "gateway/http1/response_parser.h"

#include <algorithm>
#include <cassert>
#include <limits>

#include "gateway/http1/syntax.h"

namespace flotilla::gateway::http1 {

using syntax::is_ows;
using syntax::is_tchar;

namespace {
// Most responses carry 5-15 fields; the vectors grow past this once per connection at most.
constexpr size_t kInitialFields = 32;
// Offsets are kept as uint32_t; no sane limit comes near this.
constexpr size_t kLimitCap = size_t{1} << 30;
// Checked byte by byte as it arrives: the rest of the status line is judged once it is complete.
constexpr std::string_view kVersionPrefix = "HTTP/1.";

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

// FNV-1a over the lower-cased bytes: field names and Connection options are compared
// case-insensitively.
uint32_t name_hash(std::string_view s) {
  uint32_t h = 2166136261u;
  for (char c : s) h = (h ^ static_cast<unsigned char>(lower(c))) * 16777619u;
  return h;
}

bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}
}  // namespace

std::optional<std::string_view> ResponseHead::field(std::string_view lower_name) const {
  for (const auto& f : fields)
    if (syntax::iequals(f.name, lower_name)) return f.value;
  return std::nullopt;
}

BodyKind body_kind(const ResponseHead& head, bool request_was_head) {
  if (request_was_head || (head.status >= 100 && head.status < 200) || head.status == 204 || head.status == 304)
    return BodyKind::none;
  if (head.chunked) return BodyKind::chunked;
  // Empty when Transfer-Encoding was present, whose final coding was then not chunked.
  if (head.content_length) return BodyKind::content_length;
  return BodyKind::until_close;
}

bool connection_reusable(const ResponseHead& head, bool request_was_head) {
  return head.keep_alive && head.status != 101 && body_kind(head, request_was_head) != BodyKind::until_close;
}

ResponseParser::ResponseParser(const Limits& limits) : limits_(limits) {
  limits_.max_request_line = std::min(limits_.max_request_line, kLimitCap);
  limits_.max_header_bytes = std::min(limits_.max_header_bytes, kLimitCap);
  const size_t fields = std::min(limits_.max_header_count, kInitialFields);
  spans_.reserve(fields);
  head_.fields.reserve(fields);
  head_.connection_listed.reserve(fields);
}

void ResponseParser::reset() {
  // Everything back to its initial value but the vectors, which keep their capacity.
  std::vector<FieldSpan> spans = std::move(spans_);
  std::vector<Field> fields = std::move(head_.fields);
  std::vector<uint8_t> listed = std::move(head_.connection_listed);
  std::vector<NameSlot> names = std::move(names_);
  std::vector<uint32_t> first_of_name = std::move(first_of_name_);
  spans.clear();
  fields.clear();
  listed.clear();
  const Limits limits = limits_;
  *this = ResponseParser(NoReserve{});
  limits_ = limits;
  spans_ = std::move(spans);
  head_.fields = std::move(fields);
  head_.connection_listed = std::move(listed);
  names_ = std::move(names);
  first_of_name_ = std::move(first_of_name);
}

ResponseParser::Result ResponseParser::fail(std::string_view reason) {
  phase_ = Phase::finished;
  result_ = Result{Status::error, 0, reason};
  return result_;
}

ResponseParser::Result ResponseParser::parse(std::string_view buffer) {
  if (phase_ == Phase::finished) {
    // The buffer may have moved since: the head's views follow it.
    if (result_.status == Status::done && buffer.size() >= result_.head_length) bind(buffer);
    return result_;
  }
  assert(buffer.size() >= scan_ && "the buffer must hold at least the bytes given before");
  if (buffer.size() < scan_) return fail("response buffer shrank");
  const char* p = buffer.data();

  for (;;) {
    // Each line is scanned within the window its size limit allows, so an upstream that never
    // sends CRLF is refused as soon as it has sent one byte too many.
    const bool in_status_line = phase_ == Phase::status_line;
    const size_t window_end =
        section_start_ + (in_status_line ? limits_.max_request_line + 2 : limits_.max_header_bytes);
    const size_t end = std::min(buffer.size(), window_end);
    auto too_long = [&] {
      return in_status_line ? fail("status line too long") : fail("header section too large");
    };

    if (in_status_line && scan_ < kVersionPrefix.size()) {
      // Bytes that are not the start of an HTTP/1 status line (an HTTP/0.9 body, a TLS record,
      // leftovers of a mis-framed previous body) are refused at once, not after 8 KiB.
      const size_t stop = std::min(end, kVersionPrefix.size());
      for (; scan_ < stop; ++scan_) {
        ++examined_;
        if (p[scan_] != kVersionPrefix[scan_]) return fail("not an HTTP/1.x status line");
      }
    }

    // Find the CRLF that ends the line; any other CR or LF is an error.
    size_t cr = std::string_view::npos;
    if (scan_ < end) {
      size_t stop = syntax::find_cr_or_lf(p, scan_, end);
      examined_ += stop - scan_ + (stop < end ? 1 : 0);
      scan_ = stop;
      if (stop < end) {
        if (p[stop] == '\n') return fail("LF without CR");
        // The LF would be past the limit, whatever it turns out to be.
        if (scan_ + 1 >= window_end) return too_long();
        if (scan_ + 1 >= buffer.size()) return Result{};  // the LF may still come
        if (p[scan_ + 1] != '\n') return fail("CR without LF");
        cr = scan_;
      }
    }
    if (cr == std::string_view::npos) {
      if (scan_ >= window_end) return too_long();
      return Result{};
    }

    scan_ = cr + 2;
    Result r = in_status_line ? status_line(buffer, cr) : field_line(buffer, cr);
    if (r.status != Status::need_more) return r;
    line_start_ = scan_;
  }
}

// The status line [0, cr): "HTTP/1." (already checked), the minor digit, SP, three digits, and
// nothing or SP reason-phrase.
ResponseParser::Result ResponseParser::status_line(std::string_view buffer, size_t cr) {
  std::string_view line = buffer.substr(0, cr);
  examined_ += line.size();
  if (line.size() < 8 || !syntax::is_digit(line[7])) return fail("malformed HTTP version");
  if (line[7] > '1') return fail("unsupported HTTP version");
  // "HTTP/1.10 200" lands here too: its ninth byte is not the SP.
  if (line.size() < 12 || line[8] != ' ') return fail("malformed status line");
  if (!syntax::is_digit(line[9]) || !syntax::is_digit(line[10]) || !syntax::is_digit(line[11]) ||
      (line.size() > 12 && line[12] != ' '))
    return fail("malformed status code");
  const int status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (status < 100 || status > 599) return fail("status code out of range");
  std::string_view reason = line.size() > 12 ? line.substr(13) : std::string_view();
  if (syntax::find_invalid_value_byte(reason) != std::string_view::npos)
    return fail("invalid character in reason phrase");

  status_ = status;
  minor_ = line[7] - '0';
  reason_ = Span{static_cast<uint32_t>(line.size() > 12 ? 13 : 12), static_cast<uint32_t>(reason.size())};
  phase_ = Phase::fields;
  section_start_ = scan_;
  return Result{};
}

// One field line [line_start_, cr), or the empty line that ends the head. The field rules and
// their reasons are the RequestParser's, so a line is judged the same in both directions.
ResponseParser::Result ResponseParser::field_line(std::string_view buffer, size_t cr) {
  std::string_view line = buffer.substr(line_start_, cr - line_start_);
  examined_ += line.size();
  if (line.empty()) return finish(buffer);
  if (spans_.size() >= limits_.max_header_count) return fail("too many header fields");
  if (is_ows(line[0])) return fail("obs-fold (folded header line)");

  size_t colon = 0;
  while (colon < line.size() && is_tchar(line[colon])) ++colon;
  if (colon == line.size()) return fail("header line without colon");
  if (line[colon] != ':')
    return fail(is_ows(line[colon]) ? "whitespace in field name or before colon" : "invalid character in field name");
  if (colon == 0) return fail("empty field name");

  std::string_view name = line.substr(0, colon);
  std::string_view raw = line.substr(colon + 1);
  std::string_view value = syntax::trim_ows(raw);
  if (size_t bad = syntax::find_invalid_value_byte(value); bad != std::string_view::npos)
    return fail(value[bad] == '\0' ? "NUL in field value" : "control character in field value");
  const Span value_span{static_cast<uint32_t>(line_start_ + colon + 1 + static_cast<size_t>(value.data() - raw.data())),
                        static_cast<uint32_t>(value.size())};
  spans_.push_back({Span{static_cast<uint32_t>(line_start_), static_cast<uint32_t>(colon)}, value_span});

  // The fields that decide framing and the connection's fate. Dispatch on length first: most
  // fields are none of these.
  switch (name.size()) {
    case 10:
      if (syntax::iequals_token(name, "connection")) {
        bool ok = true;
        syntax::for_each_list_element(value, [&](std::string_view e) {
          if (e.empty()) return;  // RFC 9110 §5.6.1: empty list elements are ignored
          if (!syntax::is_token(e)) ok = false;
          else if (syntax::iequals_token(e, "close")) conn_close_ = true;
          else if (syntax::iequals_token(e, "keep-alive")) conn_keep_alive_ = true;
          else conn_names_ = true;  // names a field, perhaps; finish() looks
        });
        if (!ok) return fail("malformed Connection");
      }
      break;
    case 14:
      if (syntax::iequals_token(name, "content-length")) {
        // A plain decimal per field; equal duplicates are one length (RFC 9110 §8.6), unequal
        // ones two framings. A list ("5, 5") is refused with the non-digits.
        if (value.empty()) return fail("empty Content-Length");
        uint64_t n = 0;
        for (char c : value) {
          if (!syntax::is_digit(c)) return fail("Content-Length is not a number");
          auto d = static_cast<uint64_t>(c - '0');
          if (n > (std::numeric_limits<uint64_t>::max() - d) / 10) return fail("Content-Length overflows");
          n = n * 10 + d;
        }
        if (content_length_ && *content_length_ != n) return fail("conflicting Content-Length values");
        content_length_ = n;
      }
      break;
    case 17:
      if (syntax::iequals_token(name, "transfer-encoding")) return transfer_encoding(value);
      break;
    default:
      break;
  }
  return Result{};
}

// One Transfer-Encoding field: its codings continue the list of any earlier field (RFC 9110
// §5.3), so only the last one seen decides `chunked`.
ResponseParser::Result ResponseParser::transfer_encoding(std::string_view value) {
  // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing; the part the
  // sender meant as body cannot be told from what follows.
  if (minor_ == 0) return fail("Transfer-Encoding in an HTTP/1.0 response");
  te_seen_ = true;
  std::string_view reason;
  syntax::for_each_list_element(value, [&](std::string_view coding) {
    if (!reason.empty()) return;
    // Empty elements are refused, unlike in Connection: "chunked," must not be read as either
    // chunked or not. A token only: no parameters, no quotes.
    if (!syntax::is_token(coding)) {
      reason = "malformed Transfer-Encoding";
    } else if (syntax::iequals(coding, "chunked")) {
      // RFC 9112 §6.1: chunked is never applied twice.
      if (chunked_seen_) reason = "chunked applied more than once";
      chunked_seen_ = chunked_ = true;
    } else {
      chunked_ = false;
      other_coding_ = true;
    }
  });
  if (!reason.empty()) return fail(reason);
  return Result{};
}

ResponseParser::Result ResponseParser::finish(std::string_view buffer) {
  const bool both_framings = te_seen_ && content_length_.has_value();
  if (te_seen_) content_length_.reset();  // RFC 9112 §6.3 item 3: Transfer-Encoding wins

  head_.status = status_;
  head_.version_minor = minor_;
  head_.content_length = content_length_;
  head_.chunked = chunked_;
  head_.other_coding = other_coding_;
  head_.keep_alive = (minor_ == 1 ? !conn_close_ : conn_keep_alive_ && !conn_close_) && !both_framings;
  mark_connection_listed(buffer);

  phase_ = Phase::finished;
  result_ = Result{Status::done, scan_, {}};
  bind(buffer);
  return result_;
}

// Sets head_.connection_listed. Usually no Connection option names a field and this is one
// memset; otherwise a hash table of the field names (at most 50 % full) makes it O(bytes of the
// head) whatever the number of fields and options.
void ResponseParser::mark_connection_listed(std::string_view buffer) {
  const size_t n = spans_.size();
  std::vector<uint8_t>& listed = head_.connection_listed;
  listed.assign(n, 0);
  head_.has_connection_tokens = false;
  if (!conn_names_) return;

  size_t capacity = 16;
  while (capacity < 2 * n) capacity *= 2;
  names_.assign(capacity, NameSlot{});
  first_of_name_.resize(n);
  const size_t mask = capacity - 1;
  // The slot holding `name`, or the empty slot where it would go.
  auto slot_of = [&](std::string_view name, uint32_t hash) -> NameSlot& {
    for (size_t s = hash & mask;; s = (s + 1) & mask) {
      NameSlot& slot = names_[s];
      if (slot.field == 0 || (slot.hash == hash && same_name(view(buffer, spans_[slot.field - 1].name), name)))
        return slot;
    }
  };
  // Fields that share a name (case-insensitively) share the mark of the first of them.
  for (size_t i = 0; i < n; ++i) {
    std::string_view name = view(buffer, spans_[i].name);
    const uint32_t hash = name_hash(name);
    NameSlot& slot = slot_of(name, hash);
    if (slot.field == 0) slot = NameSlot{hash, static_cast<uint32_t>(i + 1)};
    first_of_name_[i] = slot.field - 1;
  }
  for (const auto& s : spans_) {
    if (!syntax::iequals(view(buffer, s.name), "connection")) continue;
    // Already validated as a list of tokens by field_line().
    syntax::for_each_list_element(view(buffer, s.value), [&](std::string_view option) {
      if (option.empty() || syntax::iequals(option, "close") || syntax::iequals(option, "keep-alive") ||
          syntax::iequals(option, "content-length") || syntax::iequals(option, "transfer-encoding"))
        return;
      const NameSlot& slot = slot_of(option, name_hash(option));
      if (slot.field != 0) listed[slot.field - 1] = 1;
    });
  }
  for (size_t i = 0; i < n; ++i) {
    listed[i] = listed[first_of_name_[i]];  // first_of_name_[i] <= i: already final
    head_.has_connection_tokens |= listed[i] != 0;
  }
}

void ResponseParser::bind(std::string_view buffer) {
  head_.reason = view(buffer, reason_);
  head_.fields.clear();
  for (const auto& s : spans_) head_.fields.push_back(Field{view(buffer, s.name), view(buffer, s.value)});
}

}  // namespace flotilla::gateway::http1
