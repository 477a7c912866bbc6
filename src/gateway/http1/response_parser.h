// The gateway's upstream HTTP/1.1 response-head parser: the counterpart of RequestParser for
// what an upstream sends back. Same design: one left-to-right pass over the bytes not seen yet,
// each line validated once when its CRLF arrives, offsets kept until `done` (the buffer may move
// between calls), so feeding N bytes in any number of pieces costs O(N) and gives the same
// answer as feeding them at once; no allocation per response once the vectors have grown.
//
// A proxy must not be desynchronised by a bad upstream, but real servers must work. Every error
// means the same thing to the proxy (answer 502, close the upstream connection), so errors carry
// only a reason for the log. The choices, one by one:
//
// Status line: "HTTP/1.0" or "HTTP/1.1", one SP, a three-digit status 100-599, then either the
//   end of the line or one SP and a reason phrase of HTAB / SP / VCHAR / obs-text (possibly
//   empty). "HTTP/1.1 200" without the SP before an empty reason is tolerated (RFC 9112 §4
//   requires the SP, but some servers omit it and nothing depends on it). Refused: any other
//   version, lower-case "http/", extra or missing spaces, a tab as separator, status digits
//   other than three, status < 100 or > 599, control bytes in the reason, and anything before
//   the status line, empty lines included (RFC 9112 §2.2 lets a *server* skip CRLFs before a
//   request; bytes before a response mean the previous body was mis-framed). The first seven
//   bytes are checked as they arrive, so an upstream that does not speak HTTP/1 is refused at
//   its first wrong byte. The status line is bounded by Limits::max_request_line.
// Line endings: CRLF only. A bare LF or a bare CR anywhere in the head is an error (RFC 9112
//   §2.2 lets a recipient accept bare LF; a proxy that did would read a different message than
//   a downstream that does not).
// Field lines: the RequestParser's rules and limits (max_header_bytes, max_header_count): a
//   token name directly followed by ':', no obs-fold, no NUL/CR/LF/other control but HTAB in
//   values, OWS around the value trimmed.
// Content-Length: one or more plain decimal fields; duplicates with the same value are accepted
//   (RFC 9110 §8.6 allows a recipient to), different values, an empty value, a sign, a list
//   ("5, 5") or overflow are errors.
// Transfer-Encoding: a list of transfer-coding tokens, possibly over several fields (combined in
//   order, RFC 9110 §5.3). Empty elements, parameters (no registered transfer coding has any),
//   non-tokens and chunked twice are errors, and so is Transfer-Encoding in an HTTP/1.0 response
//   (RFC 9112 §6.1: its framing is faulty). Chunked as the final coding → `chunked`; any other
//   final coding → the body runs until the upstream closes (RFC 9112 §6.3 item 4).
// Transfer-Encoding with Content-Length: Transfer-Encoding wins, `content_length` is left empty
//   and `keep_alive` is false (RFC 9112 §6.3 item 3: close after this response).
// Connection: a comma list of tokens (empty elements ignored, anything else malformed → error);
//   "close" and "keep-alive" decide `keep_alive`; the other tokens name fields the proxy must
//   not forward, marked in `connection_listed`.
// 1xx: a complete head like any other (body_kind() says none); the proxy forwards or drops it,
//   calls reset() and parses the final response from the bytes after head_length. 101 parses
//   too; what follows it is no longer HTTP.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "gateway/http1/request_parser.h"  // Limits, Field

namespace flotilla::gateway::http1 {

// A parsed response head. Every view points into the buffer given to the latest parse() (the one
// that returned `done`, or a later one with the same bytes), valid while those bytes stay put.
struct ResponseHead {
  int status = 0;             // 100-599
  int version_minor = 1;      // HTTP/1.<minor>: 0 or 1
  std::string_view reason;    // as received, possibly empty; no CR, LF, NUL or other control but HTAB
  std::vector<Field> fields;  // in order of arrival, duplicates kept
  // The body length, when Content-Length framed the message: empty when Transfer-Encoding is
  // present too (it wins), so body_kind() and a plain read of this field agree.
  std::optional<uint64_t> content_length;
  bool chunked = false;  // the final transfer coding is chunked
  // Transfer-Encoding names a coding other than chunked (gzip, …; possibly before a final
  // chunked): the body is coded in a way a proxy that does not decode it cannot pass on once it
  // drops the hop-by-hop Transfer-Encoding field.
  bool other_coding = false;
  // Whether the response's fields let the upstream connection be reused afterwards: HTTP/1.1
  // unless Connection: close, HTTP/1.0 only with Connection: keep-alive (and not close), never
  // with both Transfer-Encoding and Content-Length. A body that runs until close, or a 101, ends
  // the connection whatever this says: see connection_reusable().
  bool keep_alive = true;
  // Some field of `fields` is named by a Connection option (RFC 9110 §7.6.1), i.e. some entry of
  // connection_listed is set. False for the usual "Connection: close" / "Connection: keep-alive".
  bool has_connection_tokens = false;
  // Parallel to `fields`: 1 when a Connection option names that field (case-insensitively), so a
  // proxy must not forward it. The options "close" and "keep-alive" mark nothing (they are about
  // the connection; Keep-Alive is on the fixed list below). Content-Length and Transfer-Encoding
  // are never marked: framing is decided by body_kind(), and an upstream that could strip it
  // from the forwarded message could change how the downstream frames the body. The Connection
  // field itself and the fixed hop-by-hop fields (Keep-Alive, Proxy-Connection, TE, Trailer,
  // Transfer-Encoding, Upgrade) are the proxy's to drop by name, marked or not.
  std::vector<uint8_t> connection_listed;

  // The first value of a field by name, case-insensitive (`lower_name` in lower case).
  std::optional<std::string_view> field(std::string_view lower_name) const;
};

enum class BodyKind : uint8_t {
  none,            // the message ends with its head
  content_length,  // exactly *content_length bytes (possibly 0)
  chunked,         // feed the bytes after the head to a ChunkedDecoder
  until_close,     // everything until the upstream closes the connection
};

// RFC 9112 §6.3, in its order: responses to HEAD, 1xx, 204 and 304 have no body (whatever their
// fields say); chunked as the final coding → chunked; another final coding → until_close;
// Content-Length → content_length; neither → until_close. (A 2xx to CONNECT never happens: the
// gateway refuses CONNECT.)
BodyKind body_kind(const ResponseHead& head, bool request_was_head);

// Whether the upstream connection may carry another request once this response's body has been
// read: keep_alive, not a body delimited by the close, and not 101 (the connection is a tunnel).
bool connection_reusable(const ResponseHead& head, bool request_was_head);

class ResponseParser {
 public:
  enum class Status : uint8_t { need_more, done, error };
  struct Result {
    Status status = Status::need_more;
    size_t head_length = 0;   // done: bytes of the head, its final empty line included
    std::string_view reason;  // error: a short static text for the log (the answer is always 502)
    bool operator==(const Result&) const = default;
  };

  explicit ResponseParser(const Limits& limits = {});

  // `buffer` holds the response from its first byte: what the previous call got, possibly moved,
  // plus whatever arrived since. Once done or error, returns the same result until reset().
  Result parse(std::string_view buffer);
  // Valid after `done`.
  const ResponseHead& head() const { return head_; }
  // Ready for the next response (after a 1xx, or on a reused connection); keeps the capacity of
  // the vectors.
  void reset();

  // Test hook: bytes looked at so far (scanning and validating), to check the work is linear.
  uint64_t bytes_examined() const { return examined_; }

 private:
  struct Span {
    uint32_t off = 0;
    uint32_t len = 0;
  };
  struct FieldSpan {
    Span name, value;
  };
  // A slot of the field-name hash table built only when Connection names fields.
  struct NameSlot {
    uint32_t hash = 0;
    uint32_t field = 0;  // index + 1; 0 = empty
  };
  enum class Phase : uint8_t { status_line, fields, finished };
  struct NoReserve {};
  explicit ResponseParser(NoReserve) {}

  Result fail(std::string_view reason);
  Result status_line(std::string_view buffer, size_t cr);  // the line [0, cr)
  Result field_line(std::string_view buffer, size_t cr);   // the line [line_start_, cr)
  Result transfer_encoding(std::string_view value);
  Result finish(std::string_view buffer);
  void mark_connection_listed(std::string_view buffer);
  void bind(std::string_view buffer);  // the head's views into `buffer`
  std::string_view view(std::string_view buffer, Span s) const { return buffer.substr(s.off, s.len); }

  Limits limits_;
  Phase phase_ = Phase::status_line;
  Result result_;
  size_t line_start_ = 0;     // first byte of the line being scanned
  size_t scan_ = 0;           // next byte to look at
  size_t section_start_ = 0;  // where the current size limit starts counting
  uint64_t examined_ = 0;

  // What the lines said so far.
  int status_ = 0;
  int minor_ = 1;
  Span reason_;
  std::optional<uint64_t> content_length_;
  bool te_seen_ = false, chunked_ = false, chunked_seen_ = false;  // chunked_: the last coding so far
  bool other_coding_ = false;
  bool conn_close_ = false, conn_keep_alive_ = false, conn_names_ = false;
  std::vector<FieldSpan> spans_;
  // Scratch for mark_connection_listed(), kept across reset().
  std::vector<NameSlot> names_;
  std::vector<uint32_t> first_of_name_;

  ResponseHead head_;
};

}  // namespace flotilla::gateway::http1
