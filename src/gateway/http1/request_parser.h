// The gateway's downstream HTTP/1.1 request-head parser: strict (every request-smuggling shape is
// refused with the status to answer), incremental (call again with the same bytes plus more) and
// allocation-free per request (the field vector keeps its capacity across reset()).
//
// Parsing is a single left-to-right pass: each call scans only the bytes it has not seen, and
// each line is validated once, when its CRLF arrives, so feeding N bytes in any number of pieces
// costs O(N) and gives the same answer as feeding them at once. An error is reported at the
// first byte position where it becomes certain; a line is judged only once it is complete.
//
// The body is not the parser's business: after `done`, the caller reads content_length bytes,
// or feeds the bytes after the head to a ChunkedDecoder, then calls reset() and parses the next
// pipelined request from where the body ended. The 408 (slow head) and 413 (body over the
// route's limit) answers are the connection's, not the parser's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace flotilla::gateway::http1 {

// DESIGN §6 defaults.
struct Limits {
  // The request line without its CRLF (empty lines before it count too) → 414.
  size_t max_request_line = 8 * 1024;
  // The header section: the field lines and the empty line ending them, CRLFs included → 431.
  // The chunked decoder holds a trailer section to the same bound.
  size_t max_header_bytes = 60 * 1024;
  // Field lines → 431 (trailer fields too).
  size_t max_header_count = 100;
  // Chunk extensions: bytes after the chunk size on one chunk line → 400.
  size_t max_chunk_extension = 4 * 1024;
};

enum class TargetForm : uint8_t {
  origin,    // "/path?query"
  absolute,  // "http://authority/path?query" (what a client sends to a proxy)
  asterisk,  // "*", OPTIONS only
};

struct Field {
  std::string_view name;   // as received (case preserved), a token
  std::string_view value;  // without the OWS around it; no CR, LF, NUL or other control but HTAB
};

// A parsed request head. Every view points into the buffer given to the latest parse() (the one
// that returned `done`, or a later one with the same bytes), and is valid while those bytes stay
// where they are.
struct RequestHead {
  std::string_view method;  // a token; never CONNECT
  std::string_view target;  // as received
  TargetForm target_form = TargetForm::origin;
  // What to forward upstream as the target: the target itself in origin- and asterisk-form; in
  // absolute-form the part after the authority, which may be empty or start with '?' (forward
  // "/" + path then).
  std::string_view path;
  // The host the request is for: the absolute-form target's authority when there is one (RFC
  // 9112 §3.2.2 says it wins over Host), the Host value otherwise. host[:port], validated.
  std::string_view authority;
  // The Host field value; empty only in an HTTP/1.0 request without one.
  std::string_view host;
  int version_minor = 1;     // HTTP/1.<minor>: 0 or 1
  std::vector<Field> fields;  // in order of arrival, duplicates kept
  std::optional<uint64_t> content_length;
  bool chunked = false;          // Transfer-Encoding: chunked (never together with content_length)
  bool keep_alive = true;        // 1.1: unless Connection: close; 1.0: only with Connection: keep-alive
  bool expect_continue = false;  // Expect: 100-continue in an HTTP/1.1 request
  bool upgrade = false;          // HTTP/1.1, Connection: upgrade and an Upgrade field
  std::string_view upgrade_protocols;  // the Upgrade value when `upgrade`

  bool has_body() const { return chunked || (content_length && *content_length > 0); }
  // The first value of a field by name, case-insensitive (`lower_name` in lower case).
  std::optional<std::string_view> field(std::string_view lower_name) const;
};

class RequestParser {
 public:
  enum class Status : uint8_t { need_more, done, error };
  struct Result {
    Status status = Status::need_more;
    size_t head_length = 0;   // done: bytes of the head, its final empty line included
    int http_status = 0;      // error: 400, 414, 431, 501 or 505
    std::string_view reason;  // error: a short static text for logs and the answer body
    bool operator==(const Result&) const = default;
  };

  explicit RequestParser(const Limits& limits = {});

  // `buffer` holds the request from its first byte: what the previous call got, possibly moved,
  // plus whatever arrived since. Once done or error, returns the same result until reset().
  Result parse(std::string_view buffer);
  // Valid after `done`.
  const RequestHead& head() const { return head_; }
  // Ready for the next request; keeps the capacity of the field vectors.
  void reset();

  // Test hook: bytes looked at so far (scanning and validating), to check the work is linear.
  uint64_t bytes_examined() const { return examined_; }

 private:
  // Offsets into the buffer: the buffer may move between calls, so no views until done.
  struct Span {
    uint32_t off = 0;
    uint32_t len = 0;
  };
  struct FieldSpan {
    Span name, value;
  };
  enum class Phase : uint8_t { request_line, fields, finished };
  struct NoReserve {};
  explicit RequestParser(NoReserve) {}

  Result fail(int status, std::string_view reason);
  Result request_line(std::string_view buffer, size_t cr);  // the line [line_start_, cr)
  Result field_line(std::string_view buffer, size_t cr);
  Result finish(std::string_view buffer);
  void bind(std::string_view buffer);  // the head's views into `buffer`
  std::string_view view(std::string_view buffer, Span s) const { return buffer.substr(s.off, s.len); }

  Limits limits_;
  Phase phase_ = Phase::request_line;
  Result result_;
  size_t line_start_ = 0;     // first byte of the line being scanned
  size_t scan_ = 0;           // next byte to look at
  size_t section_start_ = 0;  // where the current size limit starts counting
  bool method_seen_ = false;  // the request line's method and its SP have been checked
  uint64_t examined_ = 0;

  // What the lines said so far.
  Span method_, target_, path_, target_authority_, host_, upgrade_;
  TargetForm form_ = TargetForm::origin;
  int minor_ = 1;
  std::optional<uint64_t> content_length_;
  bool host_seen_ = false, te_seen_ = false, chunked_ = false;
  bool conn_close_ = false, conn_keep_alive_ = false, conn_upgrade_ = false;
  bool expect_continue_ = false, upgrade_seen_ = false;
  std::vector<FieldSpan> spans_;

  RequestHead head_;
};

// host[:port] as Host or an absolute-form authority may carry it: a DNS-style reg-name
// (ALPHA / DIGIT / "-" / "." / "_" / "~", at most 255 bytes; this covers IPv4 too) or an
// [IPv6] literal, and an optional port of 1-5 digits up to 65535. Stricter than RFC 3986,
// which also admits sub-delims and %-escapes in reg-name: no client sends those to a gateway,
// and they would let a Host look like a list (',') or alias another name (%61).
bool valid_authority(std::string_view authority);
bool valid_ipv6(std::string_view address);
bool valid_ipv4(std::string_view address);

}  // namespace flotilla::gateway::http1
