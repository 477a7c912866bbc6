#include "gateway/http1/chunked_decoder.h"

#include <algorithm>
#include <limits>

#include "gateway/http1/syntax.h"

namespace flotilla::gateway::http1 {

using syntax::is_ows;
using syntax::is_tchar;

namespace {
// qdtext of a quoted-string (RFC 9110 §5.6.4): HTAB, SP, VCHAR but '"' and '\', obs-text.
bool is_qdtext(char c) {
  auto u = static_cast<unsigned char>(c);
  return c == '\t' || c == ' ' || c == 0x21 || (u >= 0x23 && u <= 0x5b) || (u >= 0x5d && u <= 0x7e) || u >= 0x80;
}
// What may follow '\' in a quoted-string: HTAB, SP, VCHAR, obs-text.
bool is_quoted_pair_byte(char c) {
  auto u = static_cast<unsigned char>(c);
  return c == '\t' || (u >= 0x20 && u != 0x7f);
}
}  // namespace

ChunkedDecoder::Step ChunkedDecoder::fail(size_t consumed, int status, std::string_view reason) {
  state_ = State::failed;
  final_ = Step{Status::error, consumed, {}, status, reason};
  return final_;
}

ChunkedDecoder::Step ChunkedDecoder::step(std::string_view in) {
  if (state_ == State::done || state_ == State::failed) {
    Step s = final_;
    s.consumed = 0;
    return s;
  }
  const size_t n = in.size();
  size_t i = 0;
  while (i < n) {
    if (state_ == State::data) {
      // The bulk of the work: hand the data through, framing bytes before it counted as consumed.
      size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, n - i));
      remaining_ -= take;
      decoded_ += take;
      if (remaining_ == 0) state_ = State::data_cr;
      return Step{Status::data, i + take, in.substr(i, take), 0, {}};
    }

    const char c = in[i];
    switch (state_) {
      case State::ext_ws:
      case State::ext_name_first:
      case State::ext_name:
      case State::ext_after_name:
      case State::ext_value_first:
      case State::ext_token:
      case State::ext_quoted:
      case State::ext_quoted_pair:
      case State::ext_value_end:
        if (c != '\r' && ++ext_bytes_ > limits_.max_chunk_extension) return fail(i, 400, "chunk extension too long");
        break;
      case State::trailer_start:
      case State::trailer_name:
      case State::trailer_value:
      case State::trailer_lf:
      case State::final_lf:
        if (++trailer_bytes_ > limits_.max_header_bytes) return fail(i, 431, "trailer section too large");
        break;
      default:
        break;
    }

    switch (state_) {
      case State::size_first: {
        int v = syntax::hex_value(c);
        if (v < 0) return fail(i, 400, "invalid chunk size");
        size_ = static_cast<uint64_t>(v);
        digits_ = 1;
        state_ = State::size;
        break;
      }
      case State::size: {
        int v = syntax::hex_value(c);
        if (v >= 0) {
          // 16 hex digits are 64 bits: more could overflow, and leading zeros have no business here.
          if (digits_ == 16) return fail(i, 400, "chunk size too long");
          size_ = size_ * 16 + static_cast<uint64_t>(v);
          ++digits_;
        } else if (c == ';' || is_ows(c)) {
          ext_bytes_ = 1;
          if (ext_bytes_ > limits_.max_chunk_extension) return fail(i, 400, "chunk extension too long");
          state_ = c == ';' ? State::ext_name_first : State::ext_ws;
        } else if (c == '\r') {
          state_ = State::size_lf;
        } else {
          return fail(i, 400, "invalid chunk size");
        }
        break;
      }
      // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )
      case State::ext_ws:
        if (c == ';') state_ = State::ext_name_first;
        else if (!is_ows(c)) return fail(i, 400, "invalid chunk extension");
        break;
      case State::ext_name_first:
        if (is_tchar(c)) state_ = State::ext_name;
        else if (!is_ows(c)) return fail(i, 400, "invalid chunk extension");
        break;
      case State::ext_name:
        if (is_tchar(c)) break;
        if (is_ows(c)) state_ = State::ext_after_name;
        else if (c == '=') state_ = State::ext_value_first;
        else if (c == ';') state_ = State::ext_name_first;
        else if (c == '\r') state_ = State::size_lf;
        else return fail(i, 400, "invalid chunk extension");
        break;
      case State::ext_after_name:
        if (c == '=') state_ = State::ext_value_first;
        else if (c == ';') state_ = State::ext_name_first;
        else if (!is_ows(c)) return fail(i, 400, "invalid chunk extension");
        break;
      case State::ext_value_first:
        if (c == '"') state_ = State::ext_quoted;
        else if (is_tchar(c)) state_ = State::ext_token;
        else if (!is_ows(c)) return fail(i, 400, "invalid chunk extension");
        break;
      case State::ext_token:
        if (is_tchar(c)) break;
        if (is_ows(c)) state_ = State::ext_ws;
        else if (c == ';') state_ = State::ext_name_first;
        else if (c == '\r') state_ = State::size_lf;
        else return fail(i, 400, "invalid chunk extension");
        break;
      case State::ext_quoted:
        if (c == '"') state_ = State::ext_value_end;
        else if (c == '\\') state_ = State::ext_quoted_pair;
        else if (!is_qdtext(c)) return fail(i, 400, "invalid chunk extension");
        break;
      case State::ext_quoted_pair:
        if (!is_quoted_pair_byte(c)) return fail(i, 400, "invalid chunk extension");
        state_ = State::ext_quoted;
        break;
      case State::ext_value_end:
        if (is_ows(c)) state_ = State::ext_ws;
        else if (c == ';') state_ = State::ext_name_first;
        else if (c == '\r') state_ = State::size_lf;
        else return fail(i, 400, "invalid chunk extension");
        break;
      case State::size_lf:
        if (c != '\n') return fail(i, 400, "chunk size line not ended by CRLF");
        if (size_ == 0) {
          state_ = State::trailer_start;
        } else {
          if (size_ > std::numeric_limits<uint64_t>::max() - decoded_) return fail(i, 400, "chunked body too large");
          remaining_ = size_;
          state_ = State::data;
        }
        break;
      case State::data_cr:
        if (c != '\r') return fail(i, 400, "chunk data not followed by CRLF");
        state_ = State::data_lf;
        break;
      case State::data_lf:
        if (c != '\n') return fail(i, 400, "chunk data not followed by CRLF");
        size_ = 0;
        digits_ = 0;
        ext_bytes_ = 0;
        state_ = State::size_first;
        break;
      // The trailer section: field lines as in a head, then CRLF.
      case State::trailer_start:
        if (c == '\r') {
          state_ = State::final_lf;
        } else if (is_tchar(c)) {
          if (++trailer_fields_ > limits_.max_header_count) return fail(i, 431, "too many trailer fields");
          state_ = State::trailer_name;
        } else if (is_ows(c)) {
          return fail(i, 400, "obs-fold (folded trailer line)");
        } else if (c == ':') {
          return fail(i, 400, "empty field name");
        } else if (c == '\n') {
          return fail(i, 400, "LF without CR");
        } else {
          return fail(i, 400, "invalid character in field name");
        }
        break;
      case State::trailer_name:
        if (is_tchar(c)) break;
        if (c == ':') state_ = State::trailer_value;
        else if (is_ows(c)) return fail(i, 400, "whitespace in field name or before colon");
        else if (c == '\r' || c == '\n') return fail(i, 400, "trailer line without colon");
        else return fail(i, 400, "invalid character in field name");
        break;
      case State::trailer_value:
        if (c == '\r') state_ = State::trailer_lf;
        else if (c == '\n') return fail(i, 400, "LF without CR");
        else if (!syntax::is_field_value_byte(c))
          return fail(i, 400, c == '\0' ? "NUL in field value" : "control character in field value");
        break;
      case State::trailer_lf:
        if (c != '\n') return fail(i, 400, "CR without LF");
        state_ = State::trailer_start;
        break;
      case State::final_lf:
        if (c != '\n') return fail(i, 400, "CR without LF");
        state_ = State::done;
        final_ = Step{Status::done, i + 1, {}, 0, {}};
        return final_;
      case State::data:
      case State::done:
      case State::failed:
        break;  // handled above
    }
    ++i;
  }
  return Step{Status::need_more, n, {}, 0, {}};
}

}  // namespace flotilla::gateway::http1
