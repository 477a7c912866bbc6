#include "gateway/path.h"

#include "gateway/http1/syntax.h"

#include <vector>

namespace flotilla::gateway {

namespace {
using http1::syntax::hex_value;

bool unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
         c == '_' || c == '~';
}

// Visible characters a URI cannot hold raw (RFC 3986 §2: neither unreserved, reserved nor '%').
// Some clients send them %-escaped (browsers: " < > ` { }), others raw (curl -g): escaped here,
// both spellings are one path.
bool never_raw_in_a_uri(unsigned char c) {
  return c == '"' || c == '<' || c == '>' || c == '\\' || c == '^' || c == '`' || c == '{' || c == '|' || c == '}';
}

constexpr char kPathHex[] = "0123456789ABCDEF";
}  // namespace

std::optional<std::string> normalize_path(std::string_view in) {
  if (in.empty() || in[0] != '/') return std::nullopt;
  // 1. Escapes: decode unreserved ones, canonicalise the rest.
  std::string decoded;
  decoded.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (never_raw_in_a_uri(static_cast<unsigned char>(c))) {
      decoded += {'%', kPathHex[static_cast<unsigned char>(c) >> 4], kPathHex[c & 15]};
      continue;
    }
    if (c != '%') {
      decoded += c;
      continue;
    }
    if (i + 2 >= in.size()) return std::nullopt;
    int h = hex_value(in[i + 1]), l = hex_value(in[i + 2]);
    if (h < 0 || l < 0) return std::nullopt;
    auto byte = static_cast<unsigned char>(h * 16 + l);
    if (byte < 0x20 || byte == 0x7F) return std::nullopt;
    if (unreserved(byte)) {
      decoded += static_cast<char>(byte);
    } else {
      decoded += {'%', kPathHex[byte >> 4], kPathHex[byte & 15]};
    }
    i += 2;
  }
  // 2. Segments: merge slashes, drop ".", resolve "..". An empty, "." or ".." last segment
  // leaves a directory path ("/a/b/.." is "/a/").
  std::vector<std::string_view> segments;
  std::string_view d(decoded);
  bool directory = false;
  for (size_t pos = 1;;) {
    size_t end = d.find('/', pos);
    if (end == std::string_view::npos) end = d.size();
    std::string_view seg = d.substr(pos, end - pos);
    if (seg == "..") {
      if (!segments.empty()) segments.pop_back();
      directory = true;
    } else if (seg.empty() || seg == ".") {
      directory = true;
    } else {
      segments.push_back(seg);
      directory = false;
    }
    if (end == d.size()) break;
    pos = end + 1;
  }
  std::string out;
  out.reserve(decoded.size());
  for (auto seg : segments) {
    out += '/';
    out += seg;
  }
  if (out.empty() || directory) out += '/';
  return out;
}

}  // namespace flotilla::gateway
