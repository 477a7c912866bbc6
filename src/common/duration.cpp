#include "common/duration.h"

#include <cmath>
#include <cstdint>
#include <limits>

namespace flotilla {

std::optional<Duration> parse_duration(std::string_view s) {
  if (s.empty()) return std::nullopt;
  bool negative = false;
  if (s[0] == '-' || s[0] == '+') {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return Duration::zero();
  if (s.empty()) return std::nullopt;
  long double total = 0;
  while (!s.empty()) {
    // number: digits [. digits]
    size_t i = 0;
    long double whole = 0, frac = 0, scale = 1;
    bool digits = false;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      whole = whole * 10 + (s[i] - '0');
      ++i;
      digits = true;
    }
    if (i < s.size() && s[i] == '.') {
      ++i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        frac = frac * 10 + (s[i] - '0');
        scale *= 10;
        ++i;
        digits = true;
      }
    }
    if (!digits) return std::nullopt;
    s.remove_prefix(i);
    size_t u = 0;
    while (u < s.size() && !(s[u] >= '0' && s[u] <= '9') && s[u] != '.') ++u;
    std::string_view unit = s.substr(0, u);
    s.remove_prefix(u);
    long double mult;
    if (unit == "ns") mult = 1;
    else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") mult = 1e3;
    else if (unit == "ms") mult = 1e6;
    else if (unit == "s") mult = 1e9;
    else if (unit == "m") mult = 60e9;
    else if (unit == "h") mult = 3600e9;
    else return std::nullopt;
    total += (whole + frac / scale) * mult;
    if (total > static_cast<long double>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  }
  auto ns = static_cast<int64_t>(std::llround(total));
  return Duration(negative ? -ns : ns);
}

std::string format_duration(Duration d) {
  int64_t ns = d.count();
  if (ns == 0) return "0s";
  std::string out;
  if (ns < 0) {
    out = "-";
    ns = -ns;
  }
  auto frac = [](int64_t v, int64_t unit) {
    std::string s = std::to_string(v / unit);
    int64_t rem = v % unit;
    if (rem) {
      std::string f = std::to_string(rem + unit).substr(1);  // zero-padded
      while (!f.empty() && f.back() == '0') f.pop_back();
      s += "." + f;
    }
    return s;
  };
  if (ns < 1000) return out + std::to_string(ns) + "ns";
  if (ns < 1000000) return out + frac(ns, 1000) + "us";
  if (ns < 1000000000) return out + frac(ns, 1000000) + "ms";
  int64_t h = ns / 3600000000000LL;
  ns %= 3600000000000LL;
  int64_t m = ns / 60000000000LL;
  ns %= 60000000000LL;
  if (h) out += std::to_string(h) + "h";
  if (h || m) out += std::to_string(m) + "m";
  out += frac(ns, 1000000000) + "s";
  return out;
}

}  // namespace flotilla
