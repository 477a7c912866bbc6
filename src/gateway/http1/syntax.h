// The character classes of HTTP/1.1 (RFC 9110 §5.6, RFC 9112) that the request parser and the
// chunked decoder share, so a header line and a trailer line are judged by the same rules.
// Header-only and constexpr: every test is one table load.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace flotilla::gateway::http1::syntax {

namespace detail {
constexpr std::array<bool, 256> make_tchar() {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}
// field-vchar / SP / HTAB: VCHAR, obs-text (0x80-0xFF), SP and HTAB; never NUL, CR, LF, other
// controls or DEL.
constexpr std::array<bool, 256> make_field_value() {
  std::array<bool, 256> t{};
  for (int c = 0x20; c < 0x100; ++c) t[c] = c != 0x7f;
  t['\t'] = true;
  return t;
}
inline constexpr std::array<bool, 256> kTchar = make_tchar();
inline constexpr std::array<bool, 256> kFieldValue = make_field_value();
}  // namespace detail

// tchar: the bytes of a token (method, field name, coding, chunk-extension name).
inline bool is_tchar(char c) { return detail::kTchar[static_cast<unsigned char>(c)]; }
// A byte allowed inside a field value (after the OWS around it is trimmed).
inline bool is_field_value_byte(char c) { return detail::kFieldValue[static_cast<unsigned char>(c)]; }
inline bool is_ows(char c) { return c == ' ' || c == '\t'; }
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }
// VCHAR: visible ASCII.
inline bool is_vchar(char c) { return c > 0x20 && c < 0x7f; }
// The value of a hex digit, or -1.
inline int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Word-at-a-time scans (8 bytes per step, any endianness) for the loops that see every byte of
// a head: finding line ends and validating values and targets. Each word test is exact as a
// yes/no (a borrow can only spill upward from a byte that really matched); the byte itself is
// then found one at a time within the word.
namespace swar {
inline constexpr uint64_t kOnes = 0x0101010101010101ull;
inline constexpr uint64_t kHighs = 0x8080808080808080ull;
inline uint64_t load(const char* p) {
  uint64_t x;
  std::memcpy(&x, p, 8);
  return x;
}
inline uint64_t has_zero(uint64_t x) { return (x - kOnes) & ~x & kHighs; }
inline uint64_t has_byte(uint64_t x, unsigned char b) { return has_zero(x ^ (kOnes * b)); }
// Some byte < n (n <= 128).
inline uint64_t has_less(uint64_t x, unsigned char n) { return (x - kOnes * n) & ~x & kHighs; }
// Some byte >= 0x7f.
inline uint64_t has_del_or_high(uint64_t x) { return (x | (x + kOnes)) & kHighs; }
}  // namespace swar

// The offset of the first CR or LF in [from, end) of p, or end. On a little-endian machine the
// lowest flagged byte of a word is the match itself (nothing below it borrows), so its offset is
// a count of trailing zeros, and the last few bytes are one word too: the 8 bytes ending at `end`,
// shifted so the bytes before `from` fall off (zeros come in at the top, which match nothing).
inline size_t find_cr_or_lf(const char* p, size_t from, size_t end) {
  size_t i = from;
  if constexpr (std::endian::native == std::endian::little) {
    for (; i + 8 <= end; i += 8) {
      const uint64_t x = swar::load(p + i);
      if (uint64_t m = swar::has_byte(x, '\r') | swar::has_byte(x, '\n')) return i + (std::countr_zero(m) >> 3);
    }
    if (i < end && end >= 8) {
      const uint64_t x = swar::load(p + end - 8) >> ((8 - (end - i)) * 8);
      const uint64_t m = swar::has_byte(x, '\r') | swar::has_byte(x, '\n');
      return m ? i + (std::countr_zero(m) >> 3) : end;
    }
  } else {
    while (i + 8 <= end && !(swar::has_byte(swar::load(p + i), '\r') | swar::has_byte(swar::load(p + i), '\n'))) i += 8;
  }
  for (; i < end; ++i)
    if (p[i] == '\r' || p[i] == '\n') return i;
  return end;
}

// The offset of the first byte of s that is_field_value_byte() refuses, or npos. The last few
// bytes are one word as in find_cr_or_lf(), the bytes shifted in at the top being spaces; a word
// that flags anything (a control byte, or only an HTAB) is looked at byte by byte.
inline size_t find_invalid_value_byte(std::string_view s) {
  const char* p = s.data();
  const size_t n = s.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x = swar::load(p + i);
    if (!(swar::has_less(x, 0x20) | swar::has_byte(x, 0x7f))) continue;
    for (size_t j = i; j < i + 8; ++j)  // a control byte, or only an HTAB
      if (!is_field_value_byte(p[j])) return j;
  }
  if constexpr (std::endian::native == std::endian::little) {
    if (i < n && n >= 8) {
      const unsigned shift = static_cast<unsigned>(8 - (n - i)) * 8;
      const uint64_t spaces = shift ? (swar::kOnes * 0x20) << (64 - shift) : 0;
      const uint64_t x = (swar::load(p + n - 8) >> shift) | spaces;
      if (!(swar::has_less(x, 0x20) | swar::has_byte(x, 0x7f))) return std::string_view::npos;
    }
  }
  for (; i < n; ++i)
    if (!is_field_value_byte(p[i])) return i;
  return std::string_view::npos;
}

// Whether every byte of s is VCHAR (visible ASCII) other than `except`.
inline bool all_vchar_except(std::string_view s, char except) {
  const char* p = s.data();
  const size_t n = s.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x = swar::load(p + i);
    if (swar::has_less(x, 0x21) | swar::has_del_or_high(x) | swar::has_byte(x, static_cast<unsigned char>(except)))
      return false;
  }
  for (; i < n; ++i)
    if (!is_vchar(p[i]) || p[i] == except) return false;
  return true;
}

inline bool is_token(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_tchar(c)) return false;
  return true;
}

// Case-insensitive equality against a lower-case ASCII literal. `s` may hold any bytes.
inline bool iequals(std::string_view s, std::string_view lower) {
  if (s.size() != lower.size()) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
    if (c != lower[i]) return false;
  }
  return true;
}

// iequals() for a token (tchars only: the parsers validate field names and the list elements
// they compare) against a lower-case literal of letters, digits and '-', eight bytes at a time.
// OR-ing 0x20 lower-cases a letter and maps no other tchar onto a letter, a digit or '-' (only
// CR would become '-', and CR is no tchar), so for a token the answer is iequals()'s.
inline bool iequals_token(std::string_view s, std::string_view lower) {
  const size_t n = s.size();
  if (n != lower.size()) return false;
  constexpr uint64_t kCase = 0x2020202020202020ull;
  if (n >= 8) {
    for (size_t i = 0; i + 8 <= n; i += 8)
      if ((swar::load(s.data() + i) | kCase) != swar::load(lower.data() + i)) return false;
    return (swar::load(s.data() + n - 8) | kCase) == swar::load(lower.data() + n - 8);
  }
  for (size_t i = 0; i < n; ++i)
    if ((s[i] | 0x20) != lower[i]) return false;
  return true;
}

inline std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// Calls fn(element) for each element of a comma-separated list (RFC 9110 §5.6.1), OWS trimmed;
// empty elements are passed too (the caller decides whether they are allowed).
template <typename Fn>
void for_each_list_element(std::string_view list, Fn&& fn) {
  for (;;) {
    size_t comma = list.find(',');
    fn(trim_ows(list.substr(0, comma)));
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

}  // namespace flotilla::gateway::http1::syntax
