// Decodes a chunked request body (RFC 9112 §7.1) as it arrives, split anywhere: a byte-level
// state machine that copies nothing and buffers nothing. Each step() hands back body bytes as a
// view into the input it was given, so the proxy can forward them as they are.
//
// Strict where parsers disagree (the request-smuggling surface): chunk sizes of 1-16 hex digits,
// chunk extensions only as the grammar allows (BWS ";" name ["=" token / quoted-string], at
// most Limits::max_chunk_extension bytes per chunk line), CRLF and nothing else after every size
// line and every chunk's data, and trailer fields judged by the same rules as header fields
// (no obs-fold, no whitespace before the colon, token names, no control bytes in values) and
// bounded by the same limits (431 beyond them). Trailers are validated and dropped: RFC 9110
// §6.5.1 lets a recipient that removes the chunked coding discard them.
//
// Every error is 400 but the trailer limits (431). The body-size limit (413) is the caller's:
// decoded_size() counts the data bytes handed out, announced_size() also the rest of the
// current chunk, so an oversized chunk can be refused before its first byte is forwarded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "gateway/http1/request_parser.h"

namespace flotilla::gateway::http1 {

class ChunkedDecoder {
 public:
  enum class Status : uint8_t {
    need_more,  // all of the input was used; call again with what arrives next
    data,       // `data` holds body bytes; call again with the input after `consumed`
    done,       // the body ended after `consumed` bytes; what follows is the next request
    error,      // refuse the request with http_status
  };
  struct Step {
    Status status = Status::need_more;
    size_t consumed = 0;      // bytes of the input this step used (framing and data)
    std::string_view data;    // Status::data: a view into the input, never empty
    int http_status = 0;      // Status::error: 400 or 431
    std::string_view reason;  // Status::error: a short static text
  };

  explicit ChunkedDecoder(const Limits& limits = {}) : limits_(limits) {}

  // Decodes from the start of `input` up to the next run of body bytes, the end of the body or
  // the end of the input. After done or error, returns that again (consuming nothing).
  Step step(std::string_view input);

  // Runs step() over all of `input`, calling on_data(std::string_view) for each run of body bytes.
  // Returns the last step, with `consumed` counting the whole input used.
  template <typename OnData>
  Step feed(std::string_view input, OnData&& on_data) {
    size_t used = 0;
    for (;;) {
      Step s = step(input.substr(used));
      used += s.consumed;
      if (s.status != Status::data) {
        s.consumed = used;
        return s;
      }
      on_data(s.data);
    }
  }

  bool finished() const { return state_ == State::done || state_ == State::failed; }
  // Body bytes handed out so far.
  uint64_t decoded_size() const { return decoded_; }
  // decoded_size() plus what remains of the chunk being read: what the body will have grown to
  // by the end of this chunk.
  uint64_t announced_size() const { return decoded_ + remaining_; }

  void reset() { *this = ChunkedDecoder(limits_); }

 private:
  enum class State : uint8_t {
    size_first,      // the first hex digit of a chunk size
    size,            // more hex digits, ';', whitespace before ';', or CR
    ext_ws,          // whitespace after the size or an extension: only ';' or more whitespace
    ext_name_first,  // after ';' (and BWS): the extension name
    ext_name,
    ext_after_name,  // whitespace after a name: '=' or ';' or more whitespace
    ext_value_first,
    ext_token,
    ext_quoted,
    ext_quoted_pair,
    ext_value_end,   // after a quoted value: whitespace, ';' or CR
    size_lf,         // the LF ending the size line
    data,
    data_cr,
    data_lf,
    trailer_start,   // the first byte of a trailer line, or the CR of the final empty line
    trailer_name,
    trailer_value,
    trailer_lf,
    final_lf,
    done,
    failed,
  };

  Step fail(size_t consumed, int status, std::string_view reason);

  Limits limits_;
  State state_ = State::size_first;
  Step final_;               // the result once done or failed
  uint64_t size_ = 0;        // the chunk size being read
  int digits_ = 0;           // its hex digits so far
  size_t ext_bytes_ = 0;     // bytes after the size on this chunk line
  uint64_t remaining_ = 0;   // data bytes left in the current chunk
  uint64_t decoded_ = 0;
  size_t trailer_bytes_ = 0;
  size_t trailer_fields_ = 0;
};

}  // namespace flotilla::gateway::http1
