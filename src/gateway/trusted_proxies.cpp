#include "gateway/trusted_proxies.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "gateway/http1/syntax.h"

namespace flotilla::gateway {

namespace {

constexpr std::array<uint8_t, 12> kV4Mapped = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

// Whether `s` is a port: 1 to 5 digits, at most 65535.
bool is_port_number(std::string_view s) {
  if (s.empty() || s.size() > 5) return false;
  unsigned v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc() && end == s.data() + s.size() && v <= 65535;
}

}  // namespace

bool IpAddress::v4() const { return std::memcmp(bytes.data(), kV4Mapped.data(), kV4Mapped.size()) == 0; }

std::optional<IpAddress> parse_ip(std::string_view text) {
  // inet_pton wants a terminated string; the longest IPv6 text is 45 characters
  // (ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255).
  char buf[46];
  if (text.empty() || text.size() >= sizeof buf) return std::nullopt;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress out;
  if (text.find(':') == std::string_view::npos) {
    in_addr a4{};
    if (inet_pton(AF_INET, buf, &a4) != 1) return std::nullopt;
    std::memcpy(out.bytes.data(), kV4Mapped.data(), kV4Mapped.size());
    std::memcpy(out.bytes.data() + 12, &a4, 4);
    return out;
  }
  in6_addr a6{};
  if (inet_pton(AF_INET6, buf, &a6) != 1) return std::nullopt;
  std::memcpy(out.bytes.data(), &a6, 16);
  return out;
}

std::optional<IpAddress> parse_forwarded_element(std::string_view text) {
  text = http1::syntax::trim_ows(text);
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    std::string_view rest = text.substr(close + 1);
    if (!rest.empty() && !(rest.front() == ':' && is_port_number(rest.substr(1)))) return std::nullopt;
    auto a = parse_ip(text.substr(1, close - 1));
    if (!a || a->v4()) return std::nullopt;  // brackets hold IPv6 only
    return a;
  }
  // One colon: IPv4 with a port. More: IPv6 without brackets (its own colons).
  size_t colon = text.find(':');
  if (colon != std::string_view::npos && colon == text.rfind(':')) {
    if (!is_port_number(text.substr(colon + 1))) return std::nullopt;
    auto a = parse_ip(text.substr(0, colon));
    if (!a || !a->v4()) return std::nullopt;
    return a;
  }
  return parse_ip(text);
}

std::string to_string(const IpAddress& address) {
  char buf[INET6_ADDRSTRLEN];
  if (address.v4()) {
    if (!inet_ntop(AF_INET, address.bytes.data() + 12, buf, sizeof buf)) return {};
  } else if (!inet_ntop(AF_INET6, address.bytes.data(), buf, sizeof buf)) {
    return {};
  }
  return buf;
}

std::optional<Cidr> parse_cidr(std::string_view text) {
  size_t slash = text.find('/');
  auto address = parse_ip(text.substr(0, slash));
  if (!address) return std::nullopt;
  const int width = address->v4() ? 32 : 128;
  int prefix = width;
  if (slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3) return std::nullopt;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (ec != std::errc() || end != digits.data() + digits.size() || prefix < 0 || prefix > width) return std::nullopt;
  }
  Cidr out;
  out.prefix = prefix + (128 - width);
  out.base = *address;
  for (int bit = out.prefix; bit < 128; ++bit) out.base.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  return out;
}

bool TrustedProxies::contains(const IpAddress& address) const {
  for (const auto& b : blocks_) {
    const int whole = b.prefix / 8, rest = b.prefix % 8;
    if (std::memcmp(address.bytes.data(), b.base.bytes.data(), whole) != 0) continue;
    if (rest != 0) {
      const auto mask = static_cast<uint8_t>(0xff00u >> rest);
      if ((address.bytes[whole] & mask) != b.base.bytes[whole]) continue;
    }
    return true;
  }
  return false;
}

std::optional<IpAddress> TrustedProxies::client_of(const http1::RequestHead& head) const {
  std::optional<IpAddress> last_trusted;
  // Fields from the last, elements of each from the last.
  for (auto f = head.fields.rbegin(); f != head.fields.rend(); ++f) {
    if (f->name.size() != 15 || !http1::syntax::iequals(f->name, "x-forwarded-for")) continue;
    std::string_view v = f->value;
    while (true) {
      size_t comma = v.rfind(',');
      std::string_view element = comma == std::string_view::npos ? v : v.substr(comma + 1);
      // Empty elements ("a, , b", a trailing comma) are list syntax, not addresses (RFC 9110 §5.6.1).
      if (!http1::syntax::trim_ows(element).empty()) {
        auto a = parse_forwarded_element(element);
        if (!a) return last_trusted;
        if (!contains(*a)) return a;
        last_trusted = a;
      }
      if (comma == std::string_view::npos) break;
      v = v.substr(0, comma);
    }
  }
  return last_trusted;
}

}  // namespace flotilla::gateway
