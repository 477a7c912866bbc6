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
    std::string_view inner = text.substr(1, close - 1);
    if (inner.find(':') == std::string_view::npos) return std::nullopt;  // brackets hold IPv6 text
    return parse_ip(inner);
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
  std::string_view address_text = text.substr(0, slash);
  auto address = parse_ip(address_text);
  if (!address) return std::nullopt;
  const bool v6_text = address_text.find(':') != std::string_view::npos;
  const int width = v6_text ? 128 : 32;
  int prefix = width;
  if (slash != std::string_view::npos) {
    std::string_view digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3 || (digits.size() > 1 && digits.front() == '0')) return std::nullopt;
    for (char c : digits)
      if (c < '0' || c > '9') return std::nullopt;
    std::from_chars(digits.data(), digits.data() + digits.size(), prefix);
    if (prefix > width) return std::nullopt;
  }
  Cidr out;
  out.prefix = prefix + (128 - width);
  // IPv4 text is an IPv4 block; so is IPv4-mapped text covering only mapped addresses (/96 or
  // more). Any other IPv6 block holds no IPv4 address.
  out.v4 = !v6_text || (address->v4() && out.prefix >= 96);
  out.base = *address;
  for (int bit = out.prefix; bit < 128; ++bit) out.base.bytes[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  return out;
}

bool TrustedProxies::contains(const IpAddress& address) const {
  const bool v4 = address.v4();
  for (const auto& b : blocks_) {
    if (b.v4 != v4) continue;
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

std::optional<std::string_view> TrustedProxies::forwarded_proto(const http1::RequestHead& head) {
  for (auto f = head.fields.rbegin(); f != head.fields.rend(); ++f) {
    if (f->name.size() != 17 || !http1::syntax::iequals(f->name, "x-forwarded-proto")) continue;
    size_t comma = f->value.rfind(',');
    std::string_view last = http1::syntax::trim_ows(comma == std::string_view::npos ? f->value : f->value.substr(comma + 1));
    if (http1::syntax::iequals(last, "https")) return "https";
    if (http1::syntax::iequals(last, "http")) return "http";
    return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace flotilla::gateway
