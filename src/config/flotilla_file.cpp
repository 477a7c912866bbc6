#include "config/flotilla_file.h"

#include <arpa/inet.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "gateway/http1/syntax.h"
#include "gateway/path.h"
#include "gateway/trusted_proxies.h"
#include "http/address.h"

namespace flotilla::config {

namespace {

// Reads one YAML document with positions; every accessor checks type and reports file:line:col.
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}
  // Whether the supervisor's files on this host are checked (working_dir exists, env_file
  // readable): not for the standalone gateway, which runs on another host than the services.
  bool host_files = true;

  [[noreturn]] void fail(const YAML::Node& at, const std::string& message) const {
    auto m = at.Mark();
    throw ConfigError(path_ + ":" + std::to_string(m.line + 1) + ":" + std::to_string(m.column + 1) + ": " +
                      message);
  }

  // Checks that `node` is a mapping whose keys are all in `allowed`.
  void mapping(const YAML::Node& node, const std::string& what, std::initializer_list<const char*> allowed) const {
    if (!node.IsMap()) fail(node, what + " must be a mapping (key: value lines)");
    std::set<std::string> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
      if (!it->first.IsScalar())
        fail(it->first, "a key in " + what + " must be a name, not a mapping or a list (a `{` too many?)");
      auto key = it->first.Scalar();
      if (!seen.insert(key).second) fail(it->first, "duplicate key \"" + key + "\" in " + what);
      if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; })) {
        std::string list;
        for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
        fail(it->first, "unknown key \"" + key + "\" in " + what + " (known: " + list + ")");
      }
    }
  }

  std::string string(const YAML::Node& n, const std::string& what) const {
    if (!n.IsScalar()) fail(n, what + " must be a string");
    return n.Scalar();
  }

  bool boolean(const YAML::Node& n, const std::string& what) const {
    if (n.IsScalar()) {
      const auto& s = n.Scalar();
      // YAML's booleans: 1.2's true/false and 1.1's yes/no/on/off, each lower-case, capitalised
      // or upper-case (not 1.1's y/n, which read as letters to most people).
      for (const char* t : {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"})
        if (s == t) return true;
      for (const char* f : {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"})
        if (s == f) return false;
    }
    fail(n, what + " must be true or false");
  }

  int64_t integer(const YAML::Node& n, const std::string& what, int64_t min, int64_t max) const {
    // Digits with an optional minus, as YAML writes an integer (stoll also takes " 80", "+5").
    const auto whole = [](const std::string& s) {
      size_t i = !s.empty() && s[0] == '-' ? 1 : 0;
      return i < s.size() && s.find_first_not_of("0123456789", i) == std::string::npos;
    };
    if (n.IsScalar() && whole(n.Scalar())) {
      const auto& s = n.Scalar();
      try {
        size_t used = 0;
        long long v = std::stoll(s, &used);
        if (used == s.size() && v >= min && v <= max) return v;
      } catch (const std::exception&) {
      }
    }
    fail(n, what + " must be a whole number from " + std::to_string(min) + " to " + std::to_string(max));
  }

  // [-+]? (digits [. digits?] | . digits) ([eE] [-+]? digits)?
  static bool is_decimal(std::string_view s) {
    size_t i = 0;
    auto digits = [&] {
      size_t from = i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
      return i > from;
    };
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    bool whole = digits();
    bool fraction = false;
    if (i < s.size() && s[i] == '.') {
      ++i;
      fraction = digits();
    }
    if (!whole && !fraction) return false;
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
      ++i;
      if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
      if (!digits()) return false;
    }
    return i == s.size();
  }

  // A scalar that is wholly a finite number written in decimal (YAML's float syntax: 2, 0.5,
  // 1e3), not what strtod also takes (0x10, " 5", "1e-x" prefixes, "infinity").
  static std::optional<double> finite_number(const YAML::Node& n) {
    if (!n.IsScalar()) return std::nullopt;
    if (!is_decimal(n.Scalar())) return std::nullopt;
    try {
      size_t used = 0;
      double v = std::stod(n.Scalar(), &used);
      if (used == n.Scalar().size() && std::isfinite(v)) return v;
    } catch (const std::exception&) {
    }
    return std::nullopt;
  }

  double number(const YAML::Node& n, const std::string& what, double min) const {
    if (auto v = finite_number(n); v && *v >= min) return *v;
    fail(n, what + " must be a number of at least " + std::to_string(static_cast<int64_t>(min)));
  }

  // A finite number above 0 (a rate: 0 would refuse everything, which is not a rate).
  double positive_number(const YAML::Node& n, const std::string& what) const {
    if (auto v = finite_number(n); v && *v > 0) return *v;
    fail(n, what + " must be a number above 0");
  }

  Duration duration(const YAML::Node& n, const std::string& what) const {
    if (n.IsScalar()) {
      if (auto d = parse_duration(n.Scalar()); d && d->count() >= 0) return *d;
    }
    fail(n, what + " must be a duration such as 250ms, 10s or 5m");
  }

  std::vector<std::string> strings(const YAML::Node& n, const std::string& what) const {
    std::vector<std::string> out;
    if (n.IsScalar()) return {n.Scalar()};
    if (!n.IsSequence()) fail(n, what + " must be a list of strings");
    for (const auto& e : n) out.push_back(string(e, what + " entries"));
    return out;
  }

  std::string address(const YAML::Node& n, const std::string& what) const {
    auto s = string(n, what);
    std::string host;
    uint16_t port;
    if (!http::split_host_port(s, host, port)) {
      // Only the port wrong (all digits, too big): said so, rather than the address's shape.
      const auto colon = s.rfind(':');
      const std::string p = colon == std::string::npos ? "" : s.substr(colon + 1);
      if (!p.empty() && p.find_first_not_of("0123456789") == std::string::npos &&
          http::split_host_port(s.substr(0, colon + 1) + "1", host, port))
        fail(n, what + ": port " + p + " is above 65535");
      fail(n, what + " must be HOST:PORT, such as 127.0.0.1:8080 or [::1]:8080 (IPv6 in brackets)");
    }
    // What the listeners can bind (an address, not a name to look up): found here, not at start.
    if (!http::is_ip_or_localhost(host))
      fail(n, what + ": \"" + host + "\" is not an IP address (use 0.0.0.0:PORT for every IPv4 address, [::]:PORT for IPv6, "
                     "or 127.0.0.1:PORT)");
    return s;
  }

 private:
  std::string path_;
};

uint64_t parse_size(const std::string& s, bool& ok) {
  ok = false;
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    if (v > (UINT64_MAX - 9) / 10) return 0;
    v = v * 10 + static_cast<uint64_t>(s[i++] - '0');
  }
  if (i == 0) return 0;
  std::string unit = s.substr(i);
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KiB" || unit == "k" || unit == "K" || unit == "KB") mult = 1024;
  else if (unit == "MiB" || unit == "m" || unit == "M" || unit == "MB") mult = 1024 * 1024;
  else if (unit == "GiB" || unit == "g" || unit == "G" || unit == "GB") mult = 1024ULL * 1024 * 1024;
  else return 0;
  if (v > UINT64_MAX / mult) return 0;
  ok = true;
  return v * mult;
}

// Whether two listening addresses (HOST:PORT, checked) would take the same port: the same
// address, or one of them any-address (0.0.0.0 covers IPv4, [::] every address). Port 0 asks
// the kernel for a free one, so it never collides.
bool binds_overlap(const std::string& a, const std::string& b) {
  std::string ha, hb;
  uint16_t pa = 0, pb = 0;
  if (!http::split_host_port(a, ha, pa) || !http::split_host_port(b, hb, pb) || pa != pb || pa == 0) return false;
  struct Addr {
    int family = 0;
    unsigned char bytes[16] = {};
    bool any() const {
      for (int i = 0; i < (family == AF_INET ? 4 : 16); ++i)
        if (bytes[i]) return false;
      return true;
    }
  };
  auto read = [](std::string h, Addr& out) {
    if (h == "localhost") h = "127.0.0.1";
    if (inet_pton(AF_INET, h.c_str(), out.bytes) == 1) out.family = AF_INET;
    else if (inet_pton(AF_INET6, h.c_str(), out.bytes) == 1) out.family = AF_INET6;
    return out.family != 0;
  };
  Addr x, y;
  if (!read(ha, x) || !read(hb, y)) return ha == hb;
  if (x.family == y.family) return x.any() || y.any() || std::memcmp(x.bytes, y.bytes, 16) == 0;
  // [::] takes IPv4 ports too, unless this host makes IPv6 sockets IPv6-only (the listeners
  // leave the kernel's default, net.ipv6.bindv6only, as it is).
  int v6only = 0;
  std::ifstream("/proc/sys/net/ipv6/bindv6only") >> v6only;
  if (v6only == 1) return false;
  return (x.family == AF_INET6 && x.any()) || (y.family == AF_INET6 && y.any());
}

bool valid_service_name(const std::string& s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

// Requests are matched on their normalised path (gateway/path.h), without the query: a route path
// that normalisation would change, or with a query, could never match. Say what to write instead.
void check_route_path(const Reader& r, const YAML::Node& node, const std::string& key, const std::string& path) {
  if (path.empty() || path[0] != '/') r.fail(node, key + " must start with /");
  if (path.find_first_of("?#") != std::string::npos)
    r.fail(node, key + " \"" + path + "\" has a query or fragment: routes match the path alone");
  // A space, a non-ASCII letter or a control character never comes raw in a request target (the
  // gateway refuses such a request): it comes %-escaped, and is matched so.
  std::string escaped;
  bool raw = false;
  for (unsigned char c : path) {
    if (c > 0x20 && c < 0x7f) {
      escaped.push_back(static_cast<char>(c));
      continue;
    }
    static constexpr char kHex[] = "0123456789ABCDEF";
    raw = true;
    escaped += {'%', kHex[c >> 4], kHex[c & 15]};
  }
  if (raw)
    r.fail(node, key + " \"" + path + "\" has characters that requests carry %-escaped (spaces, non-ASCII letters, "
                   "controls), so it would never match; write \"" + escaped + "\"");
  auto norm = gateway::normalize_path(path);
  if (!norm) r.fail(node, key + " \"" + path + "\" has a malformed or control-character %-escape");
  if (*norm != path)
    r.fail(node, key + " \"" + path + "\" would never match: requests are matched after normalisation (escapes of "
                   "letters and digits decoded, characters a URI cannot hold raw such as { } | escaped, dot segments and "
                   "repeated slashes removed); write \"" + *norm + "\"");
}

RouteMatch read_match(const Reader& r, const YAML::Node& n) {
  r.mapping(n, "match", {"path_prefix", "path", "host", "methods", "headers"});
  RouteMatch m;
  if (n["path_prefix"]) {
    m.path_prefix = r.string(n["path_prefix"], "match.path_prefix");
    check_route_path(r, n["path_prefix"], "match.path_prefix", m.path_prefix);
  }
  if (n["path"]) {
    m.path = r.string(n["path"], "match.path");
    check_route_path(r, n["path"], "match.path", m.path);
  }
  if (n["path"] && n["path_prefix"]) r.fail(n["path"], "give path or path_prefix, not both");
  if (n["host"]) {
    m.host = r.string(n["host"], "match.host");
    auto h = m.host.rfind("*.", 0) == 0 ? m.host.substr(2) : m.host;
    if (h.empty() || h.find('*') != std::string::npos || h.find('/') != std::string::npos)
      r.fail(n["host"], "match.host must be a host name, or *.domain for any subdomain");
    if (h.front() != '[' && h.find(':') != h.rfind(':'))
      r.fail(n["host"], "match.host \"" + m.host + "\" is an IPv6 address: write it in brackets, as a Host has it ([" +
                            h + "])");
    if (h.front() != '[' && h.find(':') != std::string::npos)
      r.fail(n["host"], "match.host must not have a port: the port in a request's Host is ignored when matching");
    if (h.front() == '[' && (h.back() != ']' || h.find(']') != h.size() - 1))
      r.fail(n["host"], "match.host must be an IPv6 address in brackets without a port, such as [::1] (the port in a "
                        "request's Host is ignored when matching)");
    if (h.front() == '.')
      r.fail(n["host"], "match.host \"" + m.host + "\" starts with a dot, which no Host does (nginx reads .example.com "
                        "as the domain and its subdomains: write two routes, example.com and *.example.com)");
    if (h.front() != '[')
      for (unsigned char c : h)
        if (!std::isalnum(c) && c != '-' && c != '.' && c != '_')
          r.fail(n["host"], "match.host \"" + m.host + "\" has a character no host name has (letters, digits, '-', "
                            "'.' and '_'; *.domain for any subdomain)");
    if (h.size() > 1 && h.back() == '.') m.host.pop_back();  // "a.example." is "a.example"
    std::transform(m.host.begin(), m.host.end(), m.host.begin(), [](unsigned char c) { return std::tolower(c); });
  }
  if (n["methods"]) {
    static const std::set<std::string> known = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"};
    if (!n["methods"].IsSequence()) r.fail(n["methods"], "match.methods must be a list such as [GET, POST]");
    // An empty list would match nothing, so the route would never be used.
    if (n["methods"].size() == 0)
      r.fail(n["methods"], "match.methods is empty, so the route would match no request (leave it out to match every method)");
    for (const auto& e : n["methods"]) {
      auto v = r.string(e, "match.methods entries");
      if (!known.count(v)) r.fail(e, "unknown method \"" + v + "\" (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE)");
      m.methods.push_back(v);
    }
  }
  if (n["headers"]) {
    if (!n["headers"].IsMap()) r.fail(n["headers"], "match.headers must be a mapping of header name to value");
    for (auto it = n["headers"].begin(); it != n["headers"].end(); ++it) {
      if (!it->first.IsScalar()) r.fail(it->first, "match.headers: a header name must be a string");
      auto name = it->first.Scalar();
      if (!gateway::http1::syntax::is_token(name))
        r.fail(it->first, "match.headers: \"" + name + "\" is not a header name (letters, digits and !#$%&'*+-.^_`|~)");
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      // Names are case-insensitive, so X-Env and x-env are one header: two values for it would
      // make a route that no request matches.
      for (const auto& [seen, value] : m.headers)
        if (seen == name)
          r.fail(it->first, "match.headers: \"" + it->first.Scalar() + "\" is given twice (header names are "
                            "case-insensitive; a route can require one value per header)");
      m.headers.emplace_back(name, r.string(it->second, "match.headers values"));
    }
  }
  return m;
}

Route read_route(const Reader& r, const YAML::Node& n) {
  r.mapping(n, "a route", {"name", "match", "service", "strip_prefix", "timeout", "idle_timeout", "retry",
                              "rate_limit", "max_body", "on_client_close"});
  Route route;
  route.line = n.Mark().line + 1;
  if (n["name"]) {
    route.name = r.string(n["name"], "name");
    // A metric label value and a word in the API: the characters of a service name.
    if (!valid_service_name(route.name))
      r.fail(n["name"], "a route's name must be letters, digits, '-', '_' or '.' (at most 63)");
  }
  if (!n["service"]) r.fail(n, "a route needs `service:` (the service it sends requests to)");
  route.service = r.string(n["service"], "service");
  if (!valid_service_name(route.service))
    r.fail(n["service"], "service must be a name of letters, digits, '-', '_' or '.' (at most 63)");
  if (n["match"]) route.match = read_match(r, n["match"]);
  if (n["strip_prefix"]) {
    route.strip_prefix = r.boolean(n["strip_prefix"], "strip_prefix");
    if (route.strip_prefix && route.match.path_prefix.empty())
      r.fail(n["strip_prefix"], "strip_prefix needs match.path_prefix");
  }
  if (n["timeout"]) {
    route.timeout = r.duration(n["timeout"], "timeout");
    // 0 would end every request before its first try (Envoy reads 0 as "no timeout"; flotilla
    // has no unbounded wait for an answer): say so here rather than answer 503 to everything.
    if (route.timeout.count() == 0)
      r.fail(n["timeout"], "timeout must be above 0 (for long polls and slow answers use a long one, such as 10m)");
  }
  if (n["idle_timeout"]) {
    route.idle_timeout = r.duration(n["idle_timeout"], "idle_timeout");
    if (route.idle_timeout->count() == 0)
      r.fail(n["idle_timeout"], "idle_timeout must be above 0 (it bounds a stalled stream; for streams that are quiet "
                                "for long, use a long one, such as 1h)");
  }
  if (n["max_body"]) {
    bool ok;
    route.max_body_bytes = parse_size(r.string(n["max_body"], "max_body"), ok);
    if (!ok) r.fail(n["max_body"], "max_body must be a size such as 10MiB, 512KiB or 1048576");
  }
  if (n["on_client_close"]) {
    auto v = r.string(n["on_client_close"], "on_client_close");
    if (v != "abort" && v != "wait")
      r.fail(n["on_client_close"], "on_client_close must be abort (the default: a client that closes while its "
                                   "request waits abandons it) or wait (answer it anyway: a half-close)");
    route.abort_on_client_close = v == "abort";
  }
  if (n["retry"]) {
    const auto& y = n["retry"];
    r.mapping(y, "retry", {"attempts", "on", "per_try_timeout"});
    RetryPolicy p;
    if (y["attempts"]) p.attempts = static_cast<int>(r.integer(y["attempts"], "retry.attempts", 1, 10));
    if (y["on"]) {
      // A single value (`on: 5xx`) or an empty list read as no condition at all: retries off
      // without a word. `attempts: 1` is how to turn them off.
      if (!y["on"].IsSequence()) r.fail(y["on"], "retry.on must be a list such as [5xx, reset]");
      if (y["on"].size() == 0)
        r.fail(y["on"], "retry.on is empty, so nothing would be retried (to turn retries off, write attempts: 1)");
      p.on.clear();
      static const std::set<std::string> known = {"connect-failure", "reset", "5xx", "gateway-error", "retriable-4xx"};
      for (const auto& e : y["on"]) {
        auto v = r.string(e, "retry.on entries");
        bool code = v.size() == 3 && std::all_of(v.begin(), v.end(), ::isdigit);
        if (!known.count(v) && !code)
          r.fail(e, "retry.on: unknown condition \"" + v +
                        "\" (connect-failure, reset, 5xx, gateway-error, retriable-4xx, or a status such as \"503\")");
        // A success or a redirect sent again would repeat work that went through (every GET
        // answered 200 would go out `attempts` times).
        if (code && (v[0] < '4' || v[0] > '5'))
          r.fail(e, "retry.on: \"" + v + "\" is not an error status; only 4xx and 5xx answers can be retried");
        p.on.push_back(v);
      }
    }
    if (y["per_try_timeout"]) p.per_try_timeout = r.duration(y["per_try_timeout"], "retry.per_try_timeout");
    route.retry = p;
  }
  if (n["rate_limit"]) {
    const auto& y = n["rate_limit"];
    r.mapping(y, "rate_limit", {"requests_per_second", "burst", "key"});
    RateLimit l;
    if (!y["requests_per_second"]) r.fail(y, "rate_limit needs requests_per_second");
    l.requests_per_second = r.positive_number(y["requests_per_second"], "rate_limit.requests_per_second");
    // Under 1 token nothing would pass: a default burst is never below one request.
    l.burst = y["burst"] ? r.number(y["burst"], "rate_limit.burst", 1) : std::max(1.0, l.requests_per_second);
    if (y["key"]) {
      l.key = r.string(y["key"], "rate_limit.key");
      bool ok = l.key == "client_ip" || l.key == "route" ||
                (l.key.rfind("header:", 0) == 0 && gateway::http1::syntax::is_token(l.key.substr(7)));
      if (!ok) r.fail(y["key"], "rate_limit.key must be client_ip, route or header:NAME (NAME a header name)");
    }
    route.rate_limit = l;
  }
  return route;
}

bool valid_env_name(const std::string& k) {
  if (k.empty() || std::isdigit(static_cast<unsigned char>(k[0]))) return false;
  for (char c : k)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

// KEY=VALUE lines as docker-compose reads them: blank lines and # comments skipped, an optional
// `export `, values optionally in single or double quotes.
std::vector<std::pair<std::string, std::string>> read_env_file(const Reader& r, const YAML::Node& at,
                                                               const std::string& path) {
  std::ifstream in(path);
  if (!in) r.fail(at, "env_file " + path + ": cannot read it (" + std::strerror(errno) + ")");
  std::vector<std::pair<std::string, std::string>> out;
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#') continue;
    line = line.substr(b);
    if (line.rfind("export ", 0) == 0) line = line.substr(7);
    auto eq = line.find('=');
    std::string key = eq == std::string::npos ? line : line.substr(0, eq);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    if (eq == std::string::npos || !valid_env_name(key))
      r.fail(at, "env_file " + path + ":" + std::to_string(number) + ": expected KEY=VALUE");
    std::string value = line.substr(eq + 1);
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
      value = value.substr(1, value.size() - 2);
    out.emplace_back(key, value);
  }
  return out;
}

void read_supervisor_keys(const Reader& r, const YAML::Node& n, const std::string& dir, ServiceSection& s) {
  const std::string p = "services." + s.name + ".";
  if (const auto& c = n["command"]) {
    if (c.IsScalar()) {
      if (c.Scalar().empty()) r.fail(c, p + "command must not be empty");
      s.command = {"/bin/sh", "-c", c.Scalar()};
    } else if (c.IsSequence()) {
      s.command = r.strings(c, p + "command");
      if (s.command.empty() || s.command[0].empty()) r.fail(c, p + "command needs at least the program");
    } else {
      r.fail(c, p + "command must be a string (run by /bin/sh -c) or a list (exec'd directly)");
    }
  }
  s.working_dir = dir;
  if (n["working_dir"]) {
    auto w = r.string(n["working_dir"], p + "working_dir");
    s.working_dir = std::filesystem::path(w).is_relative() ? (std::filesystem::path(dir) / w).lexically_normal().string()
                                                            : w;
    // "." or "sub/" normalise to "DIR/", "DIR/sub/": one spelling per directory, as the default.
    if (s.working_dir.size() > 1 && s.working_dir.back() == '/') s.working_dir.pop_back();
    if (r.host_files && !std::filesystem::is_directory(s.working_dir))
      r.fail(n["working_dir"], p + "working_dir " + s.working_dir + " is not a directory");
  }
  std::map<std::string, std::string> env;
  if (const auto& e = n["env_file"]) {
    for (const auto& f : r.strings(e, p + "env_file")) {
      auto path = std::filesystem::path(f).is_relative() ? (std::filesystem::path(dir) / f).lexically_normal().string() : f;
      if (r.host_files)
        for (auto& [k, v] : read_env_file(r, e, path)) env[k] = v;
    }
  }
  // Compose users write ${VAR} and ${VAR:-default}; flotilla does not interpolate, and passing
  // the text on would silently do nothing. `$${` is compose's escape for a literal `${`.
  auto literal = [&](const YAML::Node& at, const std::string& key, std::string v) {
    std::string out;
    for (size_t i = 0; i < v.size(); ++i) {
      if (v.compare(i, 3, "$${") == 0) {
        out += "${";
        i += 2;
      } else if (v.compare(i, 2, "${") == 0) {
        r.fail(at, p + "environment." + key + ": " + v.substr(i, v.find('}', i) == std::string::npos ? 2 : v.find('}', i) - i + 1) +
                       " is not interpolated (flotilla passes values as written); put the value in the file or in "
                       "env_file, or write $${ for a literal ${");
      } else {
        out += v[i];
      }
    }
    return out;
  };
  if (const auto& e = n["environment"]) {
    if (e.IsMap()) {
      for (auto it = e.begin(); it != e.end(); ++it) {
        auto k = r.string(it->first, p + "environment keys");
        if (!valid_env_name(k)) r.fail(it->first, p + "environment: \"" + k + "\" is not a variable name");
        env[k] = it->second.IsNull() ? "" : literal(it->second, k, r.string(it->second, p + "environment." + k));
      }
    } else if (e.IsSequence()) {
      for (const auto& item : e) {
        auto kv = r.string(item, p + "environment entries");
        auto eq = kv.find('=');
        if (eq == std::string::npos || !valid_env_name(kv.substr(0, eq)))
          r.fail(item, p + "environment entries must be KEY=VALUE");
        env[kv.substr(0, eq)] = literal(item, kv.substr(0, eq), kv.substr(eq + 1));
      }
    } else {
      r.fail(e, p + "environment must be a mapping (KEY: value) or a list of KEY=VALUE");
    }
  }
  s.environment.assign(env.begin(), env.end());
  if (const auto& v = n["port"]) {
    if (v.IsScalar() && v.Scalar() == "auto") s.port_mode = ServiceSection::PortMode::automatic;
    else if (v.IsScalar() && v.Scalar() == "none") s.port_mode = ServiceSection::PortMode::none;
    else {
      s.port_mode = ServiceSection::PortMode::fixed;
      s.port = static_cast<int>(r.integer(v, p + "port (auto, none or a port number)", 1, 65535));
    }
  }
  if (n["replicas"]) s.replicas = static_cast<int>(r.integer(n["replicas"], p + "replicas", 0, 1000));
  if (const auto& h = n["healthcheck"]) {
    if (h.IsScalar())
      r.fail(h, p + "healthcheck must be a mapping such as {http: /healthz}; to turn checks off write "
                    "healthcheck: {disable: true}");
    r.mapping(h, p + "healthcheck", {"http", "tcp", "disable", "interval", "timeout", "retries", "start_period"});
    auto& hc = s.healthcheck;
    if (h["http"]) {
      hc.kind = Healthcheck::Kind::http;
      hc.http_path = r.string(h["http"], p + "healthcheck.http");
      if (hc.http_path.empty() || hc.http_path[0] != '/')
        r.fail(h["http"], p + "healthcheck.http must be a path such as /healthz (asked on the instance's PORT)");
    }
    if (h["tcp"]) {
      if (h["http"]) r.fail(h["tcp"], p + "healthcheck: give http or tcp, not both");
      if (!r.boolean(h["tcp"], p + "healthcheck.tcp")) r.fail(h["tcp"], p + "healthcheck.tcp: use disable: true to turn checks off");
      hc.kind = Healthcheck::Kind::tcp;
    }
    if (h["disable"] && r.boolean(h["disable"], p + "healthcheck.disable")) {
      if (h["http"] || h["tcp"]) r.fail(h["disable"], p + "healthcheck.disable cannot go with http or tcp");
      hc.kind = Healthcheck::Kind::none;
    }
    auto positive = [&](const char* key, Duration& out) {
      if (!h[key]) return;
      out = r.duration(h[key], p + "healthcheck." + key);
      if (out.count() == 0) r.fail(h[key], p + "healthcheck." + key + " must be above 0");
    };
    positive("interval", hc.interval);
    positive("timeout", hc.timeout);
    if (h["retries"]) hc.retries = static_cast<int>(r.integer(h["retries"], p + "healthcheck.retries", 1, 100));
    if (h["start_period"]) hc.start_period = r.duration(h["start_period"], p + "healthcheck.start_period");
  }
  if (const auto& v = n["restart"]) {
    s.restart = r.string(v, p + "restart");
    // Any casing, as the booleans; YAML's other words for "no" (`restart: off`, `false`) too.
    std::transform(s.restart.begin(), s.restart.end(), s.restart.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (s.restart == "false" || s.restart == "off") s.restart = "no";
    if (s.restart != "always" && s.restart != "on-failure" && s.restart != "no")
      r.fail(v, p + "restart must be always, on-failure or no");
  }
  if (const auto& v = n["stop_signal"]) {
    s.stop_signal = r.string(v, p + "stop_signal");
    static const std::set<std::string> known = {"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2",
                                                "SIGKILL", "SIGWINCH"};
    std::string full = s.stop_signal.rfind("SIG", 0) == 0 ? s.stop_signal : "SIG" + s.stop_signal;
    if (!known.count(full)) r.fail(v, p + "stop_signal must be SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGWINCH or SIGKILL");
    s.stop_signal = full;
  }
  if (n["stop_grace_period"]) s.stop_grace_period = r.duration(n["stop_grace_period"], p + "stop_grace_period");
  if (const auto& d = n["depends_on"]) {
    if (d.IsSequence()) {
      for (const auto& e : d) s.depends_on.push_back({r.string(e, p + "depends_on entries"), "service_started", e.Mark().line + 1});
    } else if (d.IsMap()) {
      for (auto it = d.begin(); it != d.end(); ++it) {
        Dependency dep{r.string(it->first, p + "depends_on keys"), "service_started", it->first.Mark().line + 1};
        if (!it->second.IsNull()) {
          r.mapping(it->second, p + "depends_on." + dep.service, {"condition"});
          if (it->second["condition"]) {
            dep.condition = r.string(it->second["condition"], "condition");
            if (dep.condition != "service_started" && dep.condition != "service_healthy" &&
                dep.condition != "service_completed_successfully")
              r.fail(it->second["condition"],
                     p + "depends_on." + dep.service +
                         ".condition must be service_started, service_healthy or service_completed_successfully");
          }
        }
        s.depends_on.push_back(dep);
      }
    } else {
      r.fail(d, p + "depends_on must be a list of services or a mapping of service to {condition: …}");
    }
  }
  if (const auto& v = n["memory"]) {
    bool ok;
    s.memory_bytes = parse_size(r.string(v, p + "memory"), ok);
    if (!ok || s.memory_bytes < 4 * 1024 * 1024) r.fail(v, p + "memory must be a size of at least 4MiB, such as 256MiB");
  }
  if (const auto& v = n["cpus"]) {
    s.cpus = r.number(v, p + "cpus", 0);
    if (s.cpus < 0.01) r.fail(v, p + "cpus must be at least 0.01 (a share of one core, such as 0.5)");
  }
  if (const auto& a = n["autoscale"]) {
    r.mapping(a, p + "autoscale", {"min", "max", "target", "scale_down_window"});
    Autoscale as;
    if (!a["min"] || !a["max"] || !a["target"]) r.fail(a, p + "autoscale needs min, max and target");
    as.min = static_cast<int>(r.integer(a["min"], p + "autoscale.min", 0, 1000));
    as.max = static_cast<int>(r.integer(a["max"], p + "autoscale.max", 1, 1000));
    if (as.max < as.min) r.fail(a["max"], p + "autoscale.max must be at least min");
    const auto& t = a["target"];
    r.mapping(t, p + "autoscale.target", {"rps_per_instance", "p95_ms", "cpu_percent", "inflight"});
    if (t.size() != 1) r.fail(t, p + "autoscale.target takes exactly one of rps_per_instance, p95_ms, cpu_percent, inflight");
    auto it = t.begin();
    as.metric = it->first.Scalar();
    as.target = r.number(it->second, p + "autoscale.target." + as.metric, 0);
    if (as.target <= 0) r.fail(it->second, p + "autoscale.target." + as.metric + " must be above 0");
    if (a["scale_down_window"]) as.scale_down_window = r.duration(a["scale_down_window"], p + "autoscale.scale_down_window");
    s.autoscale = as;
  }
  if (const auto& d = n["deploy"]) {
    r.mapping(d, p + "deploy", {"healthy_timeout", "canary"});
    if (d["healthy_timeout"]) {
      s.deploy.healthy_timeout = r.duration(d["healthy_timeout"], p + "deploy.healthy_timeout");
      if (s.deploy.healthy_timeout.count() == 0) r.fail(d["healthy_timeout"], p + "deploy.healthy_timeout must be above 0");
    }
    if (const auto& c = d["canary"]) {
      r.mapping(c, p + "deploy.canary", {"analysis"});
      if (const auto& an = c["analysis"]) {
        r.mapping(an, p + "deploy.canary.analysis",
                  {"interval", "iterations", "max_error_ratio_increase", "max_p95_ratio", "min_requests"});
        CanaryAnalysis ca;
        if (an["interval"]) {
          ca.interval = r.duration(an["interval"], p + "deploy.canary.analysis.interval");
          if (ca.interval < std::chrono::seconds(1)) r.fail(an["interval"], p + "deploy.canary.analysis.interval must be at least 1s");
        }
        if (an["iterations"]) ca.iterations = static_cast<int>(r.integer(an["iterations"], p + "deploy.canary.analysis.iterations", 1, 1000));
        if (an["max_error_ratio_increase"]) {
          ca.max_error_ratio_increase = r.number(an["max_error_ratio_increase"], p + "deploy.canary.analysis.max_error_ratio_increase", 0);
          if (ca.max_error_ratio_increase > 1) r.fail(an["max_error_ratio_increase"], p + "deploy.canary.analysis.max_error_ratio_increase is a ratio from 0 to 1");
        }
        if (an["max_p95_ratio"]) {
          ca.max_p95_ratio = r.number(an["max_p95_ratio"], p + "deploy.canary.analysis.max_p95_ratio", 1);
        }
        if (an["min_requests"]) ca.min_requests = static_cast<int>(r.integer(an["min_requests"], p + "deploy.canary.analysis.min_requests", 1, 1000000));
        s.deploy.canary_analysis = ca;
      }
    }
  }
  // Keys that only make sense with a command.
  if (!s.supervised())
    for (const char* k : {"working_dir", "environment", "env_file", "port", "replicas", "healthcheck", "restart",
                          "stop_signal", "stop_grace_period", "depends_on", "memory", "cpus", "autoscale", "deploy"})
      if (n[k]) r.fail(n[k], p + k + " needs a command: flotilla runs only services that have one");
  if (s.port_mode == ServiceSection::PortMode::fixed && (s.replicas > 1 || (s.autoscale && s.autoscale->max > 1)))
    r.fail(n["port"], p + "port " + std::to_string(s.port) + " can serve only one instance; use port: auto for replicas");
  if (s.port_mode == ServiceSection::PortMode::none && s.healthcheck.kind != Healthcheck::Kind::none && n["healthcheck"])
    r.fail(n["healthcheck"], p + "healthcheck probes the instance's port; with port: none use healthcheck: {disable: true}");
  if (s.port_mode == ServiceSection::PortMode::none) s.healthcheck.kind = Healthcheck::Kind::none;
  if (s.autoscale && !n["replicas"]) s.replicas = s.autoscale->min;
}

ServiceSection read_service(const Reader& r, const YAML::Node& key, const YAML::Node& n, const std::string& dir) {
  ServiceSection s;
  s.name = r.string(key, "a service name");
  s.line = key.Mark().line + 1;
  if (!valid_service_name(s.name))
    r.fail(key, "a service name must be letters, digits, '-', '_' or '.' (at most 63)");
  if (n.IsNull()) return s;
  r.mapping(n, "services." + s.name,
            {"load_balancer", "hash_on", "circuit_breaker", "outlier_detection", "command", "working_dir",
             "environment", "env_file", "port", "replicas", "healthcheck", "restart", "stop_signal",
             "stop_grace_period", "depends_on", "memory", "cpus", "autoscale", "deploy"});
  read_supervisor_keys(r, n, dir, s);
  if (n["load_balancer"]) {
    s.load_balancer = r.string(n["load_balancer"], "load_balancer");
    static const std::set<std::string> known = {"round_robin", "least_request", "random", "ring_hash", "maglev"};
    if (!known.count(s.load_balancer))
      r.fail(n["load_balancer"], "load_balancer must be round_robin, least_request, random, ring_hash or maglev");
  }
  if (n["hash_on"]) {
    s.hash_on = r.string(n["hash_on"], "hash_on");
    auto named = [&](const char* prefix) {
      size_t len = std::strlen(prefix);
      return s.hash_on.size() > len && s.hash_on.compare(0, len, prefix) == 0;
    };
    if (!(s.hash_on == "client_ip" || s.hash_on == "path" || named("header:") || named("cookie:")))
      r.fail(n["hash_on"], "hash_on must be header:NAME, cookie:NAME, client_ip or path");
    if (named("header:") && !gateway::http1::syntax::is_token(std::string_view(s.hash_on).substr(7)))
      r.fail(n["hash_on"], "hash_on: \"" + s.hash_on.substr(7) + "\" is not a header name");
    // What cannot be a cookie's name in a Cookie header (browsers take more than RFC 6265's
    // tokens, such as cart[id], so only the separators of the header itself are refused).
    if (named("cookie:") && std::any_of(s.hash_on.begin() + 7, s.hash_on.end(), [](unsigned char c) {
          return c <= 0x20 || c >= 0x7f || c == ';' || c == '=' || c == ',' || c == '"';
        }))
      r.fail(n["hash_on"], "hash_on: \"" + s.hash_on.substr(7) +
                               "\" is not a cookie name (no spaces, control characters, ';', '=', ',' or '\"')");
    if (s.hash_on.rfind("header:", 0) == 0)
      std::transform(s.hash_on.begin(), s.hash_on.end(), s.hash_on.begin(),
                     [](unsigned char c) { return std::tolower(c); });
    if (s.load_balancer != "ring_hash" && s.load_balancer != "maglev")
      r.fail(n["hash_on"], "hash_on is used by load_balancer: ring_hash or maglev only");
  }
  if (const auto& c = n["circuit_breaker"]) {
    r.mapping(c, "circuit_breaker", {"max_connections", "max_pending_requests", "max_requests"});
    auto& cb = s.circuit_breaker;
    if (c["max_connections"]) cb.max_connections = r.integer(c["max_connections"], "circuit_breaker.max_connections", 1, 1000000);
    if (c["max_pending_requests"])
      cb.max_pending_requests = r.integer(c["max_pending_requests"], "circuit_breaker.max_pending_requests", 1, 1000000);
    if (c["max_requests"]) cb.max_requests = r.integer(c["max_requests"], "circuit_breaker.max_requests", 1, 1000000);
  }
  if (const auto& o = n["outlier_detection"]) {
    r.mapping(o, "outlier_detection",
              {"consecutive_failures", "base_ejection_time", "max_ejection_time", "max_ejection_percent"});
    auto& od = s.outlier_detection;
    if (o["consecutive_failures"])
      od.consecutive_failures =
          static_cast<int>(r.integer(o["consecutive_failures"], "outlier_detection.consecutive_failures (0: off)", 0, 1000));
    if (o["base_ejection_time"]) {
      od.base_ejection_time = r.duration(o["base_ejection_time"], "outlier_detection.base_ejection_time");
      if (od.base_ejection_time.count() == 0 && od.consecutive_failures != 0)
        r.fail(o["base_ejection_time"], "outlier_detection.base_ejection_time must be above 0 (to turn ejection off, "
                                        "set consecutive_failures: 0)");
    }
    if (o["max_ejection_time"]) od.max_ejection_time = r.duration(o["max_ejection_time"], "outlier_detection.max_ejection_time");
    if (o["max_ejection_percent"])
      od.max_ejection_percent =
          static_cast<int>(r.integer(o["max_ejection_percent"], "outlier_detection.max_ejection_percent", 0, 100));
    if (od.max_ejection_time < od.base_ejection_time) {
      if (o["max_ejection_time"])
        r.fail(o["max_ejection_time"], "outlier_detection.max_ejection_time (" + format_duration(od.max_ejection_time) +
                                           ") must be at least base_ejection_time (" +
                                           format_duration(od.base_ejection_time) +
                                           (o["base_ejection_time"] ? ")" : ", the default)"));
      r.fail(o["base_ejection_time"], "outlier_detection.base_ejection_time (" + format_duration(od.base_ejection_time) +
                                          ") is above max_ejection_time (" + format_duration(od.max_ejection_time) +
                                          " by default); set max_ejection_time too");
    }
  }
  return s;
}

}  // namespace

const ServiceSection* File::service(const std::string& name) const {
  for (const auto& s : services)
    if (s.name == name) return &s;
  return nullptr;
}

std::vector<const ServiceSection*> File::start_order() const {
  // Depth-first topological sort in file order; a cycle is reported with its path.
  std::vector<const ServiceSection*> order;
  std::map<std::string, int> mark;  // 1: on the current path, 2: done
  std::vector<std::string> path;
  std::function<void(const ServiceSection&)> visit = [&](const ServiceSection& s) {
    if (mark[s.name] == 2) return;
    path.push_back(s.name);
    if (mark[s.name] == 1) {
      std::string cycle;
      auto from = std::find(path.begin(), path.end(), s.name);
      for (auto it = from; it != path.end(); ++it) cycle += (cycle.empty() ? "" : " -> ") + *it;
      throw ConfigError("depends_on has a cycle: " + cycle);
    }
    mark[s.name] = 1;
    for (const auto& d : s.depends_on)
      if (const auto* t = service(d.service)) visit(*t);
    mark[s.name] = 2;
    path.pop_back();
    if (s.supervised()) order.push_back(&s);
  };
  for (const auto& s : services) visit(s);
  return order;
}

namespace {
File parse_flotilla_yaml(const std::string& text, const std::string& path, Use use) {
  Reader r(path);
  r.host_files = use == Use::agent;
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    // YAML forbids tabs in indentation, and yaml-cpp's message for them ("end of map not found")
    // does not say so: point at the first line indented with one.
    std::string hint;
    size_t line_no = 1;
    for (size_t start = 0; start < text.size(); ++line_no) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      size_t indent = text.find_first_not_of(' ', start);
      if (indent < end && text[indent] == '\t') {
        hint = " (line " + std::to_string(line_no) + " is indented with a tab: YAML indentation must be spaces)";
        break;
      }
      start = end + 1;
    }
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": not valid YAML: " + e.msg + hint);
  }
  // A second document (content after a `---` line that follows content) would be ignored
  // without a word; a trailing `---` says nothing. Found in the text: yaml-cpp's LoadAll leaks the
  // nodes of some malformed later documents, which the fuzzer's memory limit caught.
  {
    bool content = false;
    size_t marker_line = 0;
    size_t line_no = 1;
    for (size_t start = 0; start < text.size(); ++line_no) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      const bool marker = line.substr(0, 3) == "---" && (line.size() == 3 || line[3] == ' ' || line[3] == '\t');
      const size_t first = line.find_first_not_of(" \t");
      const bool blank = first == std::string_view::npos || line[first] == '#';
      if (marker) {
        if (content && marker_line == 0) marker_line = line_no;
        if (line.find_first_not_of(" \t", 3) != std::string_view::npos && marker_line == line_no &&
            line[line.find_first_not_of(" \t", 3)] != '#')
          throw ConfigError(path + ":" + std::to_string(line_no) + ":1: a second YAML document (after a --- line): "
                            "flotilla.yaml is one document, and the rest would be ignored");
      } else if (!blank && line[0] != '%') {
        if (marker_line != 0)
          throw ConfigError(path + ":" + std::to_string(marker_line) + ":1: a second YAML document (after a --- "
                            "line): flotilla.yaml is one document, and the rest would be ignored");
        content = true;
      }
      start = end + 1;
    }
  }
  File f;
  f.path = path;
  f.dir = std::filesystem::path(path).parent_path().string();
  if (f.dir.empty()) f.dir = ".";
  if (!root || root.IsNull()) throw ConfigError(path + ":1:1: the file is empty; it needs at least `name:`");
  r.mapping(root, "the file", {"name", "agent", "gateway", "services"});
  if (!root["name"]) r.fail(root, "`name:` is required (it names processes, metrics and the data dir)");
  f.name = r.string(root["name"], "name");
  if (!valid_service_name(f.name)) r.fail(root["name"], "name must be letters, digits, '-', '_' or '.' (at most 63)");
  if (const auto& a = root["agent"]) {
    r.mapping(a, "agent", {"api", "data_dir", "store"});
    if (a["api"]) {
      f.agent.api = r.address(a["api"], "agent.api");
      f.agent.api_set = true;
    }
    if (a["data_dir"]) f.agent.data_dir = r.string(a["data_dir"], "agent.data_dir");
    if (a["store"]) {
      f.agent.store = r.string(a["store"], "agent.store");
      if (f.agent.store != "sqlite")
        r.fail(a["store"], f.agent.store.rfind("etcd://", 0) == 0
                               ? "agent.store: the etcd store is not available yet; use sqlite"
                               : "agent.store must be sqlite (or etcd://HOST:PORT,… once available)");
    }
  }
  if (std::filesystem::path(f.agent.data_dir).is_relative())
    f.agent.data_dir = (std::filesystem::path(f.dir) / f.agent.data_dir).lexically_normal().string();
  if (const auto& g = root["gateway"]) {
    r.mapping(g, "gateway", {"listen", "workers", "routes", "max_connections", "access_log", "timeouts", "trusted_proxies"});
    GatewaySection gw;
    if (g["listen"]) {
      gw.listen.clear();
      if (g["listen"].IsScalar()) gw.listen.push_back(r.address(g["listen"], "gateway.listen"));
      else if (g["listen"].IsSequence())
        for (const auto& e : g["listen"]) gw.listen.push_back(r.address(e, "gateway.listen entries"));
      else r.fail(g["listen"], "gateway.listen must be an address or a list of them");
      if (gw.listen.empty()) r.fail(g["listen"], "gateway.listen needs at least one address");
      // Two listeners on one port would fail at start with "Address already in use".
      const auto& nodes = g["listen"];
      for (size_t i = 0; i < gw.listen.size(); ++i) {
        const YAML::Node& at = nodes.IsSequence() ? nodes[i] : nodes;
        for (size_t j = 0; j < i; ++j)
          if (binds_overlap(gw.listen[j], gw.listen[i]))
            r.fail(at, gw.listen[i] == gw.listen[j]
                           ? "gateway.listen has " + gw.listen[i] + " twice"
                           : "gateway.listen: " + gw.listen[i] + " and " + gw.listen[j] +
                                 " take the same port (an any-address listener covers every address)");
      }
    }
    // The agent's API and the listeners bind side by side (not in the standalone gateway).
    if (use == Use::agent)
      for (size_t i = 0; i < gw.listen.size(); ++i) {
        if (!binds_overlap(f.agent.api, gw.listen[i])) continue;
        const bool api_written = root["agent"] && root["agent"]["api"];
        const auto& nodes = g["listen"];
        const YAML::Node& at = !nodes ? (api_written ? root["agent"]["api"] : g)
                               : nodes.IsSequence() ? nodes[i] : nodes;
        r.fail(at, "gateway.listen" + std::string(nodes ? "" : " (the default)") + ": " + gw.listen[i] +
                       " takes the port of agent.api (" + f.agent.api + (api_written ? "" : ", the default") +
                       "); give one of them another port");
      }
    if (g["workers"]) {
      if (g["workers"].IsScalar() && g["workers"].Scalar() == "auto") gw.workers = 0;
      else gw.workers = static_cast<int>(r.integer(g["workers"], "gateway.workers (or auto)", 1, 256));
    }
    if (g["max_connections"])
      gw.max_connections = static_cast<int>(r.integer(g["max_connections"], "gateway.max_connections", 1, 1000000));
    if (g["access_log"]) {
      gw.access_log = r.string(g["access_log"], "gateway.access_log");
      std::string word = gw.access_log;
      std::transform(word.begin(), word.end(), word.begin(), [](unsigned char c) { return std::tolower(c); });
      if (word == "off") gw.access_log.clear();
      // YAML's other yes/no words would name a file called "false" in the file's directory.
      else if (word == "false" || word == "no" || word == "none" || word == "true" || word == "yes" || word == "on" ||
               word.empty())
        r.fail(g["access_log"], "gateway.access_log is a file's path, or off (no access log)");
      else if (gw.access_log != "stdout" && gw.access_log != "stderr") {
        if (std::filesystem::path(gw.access_log).is_relative())
          gw.access_log = (std::filesystem::path(f.dir) / gw.access_log).lexically_normal().string();
        // Its directory is made when the gateway opens it (it may be under the data dir, which
        // the agent makes); a directory in its place is found here rather than at start.
        std::error_code ec;
        if (std::filesystem::is_directory(gw.access_log, ec))
          r.fail(g["access_log"], "gateway.access_log: " + gw.access_log + " is a directory; name a file in it");
      }
    }
    if (const auto& t = g["timeouts"]) {
      r.mapping(t, "gateway.timeouts", {"connect", "header", "idle", "upstream_idle"});
      auto positive = [&](const char* key, Duration& out) {
        if (!t[key]) return;
        out = r.duration(t[key], std::string("gateway.timeouts.") + key);
        if (out.count() == 0) r.fail(t[key], std::string("gateway.timeouts.") + key + " must be above 0");
      };
      positive("connect", gw.timeouts.connect);
      positive("header", gw.timeouts.header);
      positive("idle", gw.timeouts.idle);
      positive("upstream_idle", gw.timeouts.upstream_idle);
    }
    if (const auto& t = g["trusted_proxies"]) {
      if (!t.IsSequence())
        r.fail(t, "gateway.trusted_proxies must be a list of addresses or CIDR blocks, such as [10.0.0.0/8, 127.0.0.1]");
      for (const auto& e : t) {
        auto v = r.string(e, "gateway.trusted_proxies entries");
        if (!gateway::parse_cidr(v))
          r.fail(e, "gateway.trusted_proxies: \"" + v + "\" is not an IP address or CIDR block (such as 10.0.0.0/8, "
                    "192.0.2.7 or fd00::/8; no port, no host name)");
        gw.trusted_proxies.push_back(v);
        gw.trusted_proxy_lines.push_back(e.Mark().line + 1);
      }
    }
    if (g["routes"]) {
      if (!g["routes"].IsSequence()) r.fail(g["routes"], "gateway.routes must be a list of routes");
      std::map<std::string, int> named;  // name → line
      for (const auto& e : g["routes"]) {
        gw.routes.push_back(read_route(r, e));
        const auto& route = gw.routes.back();
        if (route.name.empty()) continue;
        auto [it, fresh] = named.emplace(route.name, route.line);
        if (!fresh)
          r.fail(e["name"], "route name \"" + route.name + "\" is taken by the route on line " +
                                std::to_string(it->second) + " (names label the routes' metrics: one each)");
      }
    }
    f.gateway = std::move(gw);
  }
  if (const auto& svcs = root["services"]) {
    if (!svcs.IsMap()) r.fail(svcs, "services must be a mapping of service name to its settings");
    // `-f flotilla.yaml` gives "." ("/app/" once absolute), `flotilla up` again the absolute path
    // ("/app"): one directory, one default working_dir, or every service would seem changed.
    std::string base = std::filesystem::absolute(f.dir).lexically_normal().string();
    if (base.size() > 1 && base.back() == '/') base.pop_back();
    for (auto it = svcs.begin(); it != svcs.end(); ++it) f.services.push_back(read_service(r, it->first, it->second, base));
    std::set<std::string> seen;
    for (auto it = svcs.begin(); it != svcs.end(); ++it)
      if (!seen.insert(it->first.Scalar()).second) r.fail(it->first, "duplicate service \"" + it->first.Scalar() + "\"");
    // Dependencies: known, supervised, no cycles.
    for (auto it = svcs.begin(); it != svcs.end(); ++it) {
      const auto& s = *f.service(it->first.Scalar());
      for (const auto& d : s.depends_on) {
        const auto* target = f.service(d.service);
        const YAML::Node& at = it->second["depends_on"];
        if (!target) r.fail(at, "services." + s.name + ".depends_on: no service \"" + d.service + "\" in this file");
        if (!target->supervised())
          r.fail(at, "services." + s.name + ".depends_on: \"" + d.service + "\" has no command, so flotilla does not run it");
        if (d.service == s.name) r.fail(at, "services." + s.name + ".depends_on names the service itself");
        // A service restarted whatever its exit never completes: the dependent would never start.
        if (d.condition == "service_completed_successfully" && target->restart == "always")
          r.fail(at, "services." + s.name + ".depends_on: \"" + d.service +
                         "\" has restart: always, so it never completes; give it restart: on-failure or no");
      }
    }
    // An entry flotilla does not run only holds the gateway's settings for it: with no route to
    // it they would do nothing, which is what a misspelt name looks like.
    for (auto it = svcs.begin(); it != svcs.end(); ++it) {
      const auto& s = *f.service(it->first.Scalar());
      if (s.supervised()) continue;
      bool routed = f.gateway && std::any_of(f.gateway->routes.begin(), f.gateway->routes.end(),
                                             [&](const Route& rt) { return rt.service == s.name; });
      if (!routed)
        r.fail(it->first, "services." + s.name + " has no command and no route sends requests to it, so its settings "
                          "would do nothing (is a route's service: spelt differently?)");
    }
    try {
      f.start_order();
    } catch (const ConfigError& e) {
      throw ConfigError(path + ":" + std::to_string(svcs.Mark().line + 1) + ":" + std::to_string(svcs.Mark().column + 1) +
                        ": " + e.what());
    }
  }
  return f;
}
}  // namespace

File parse(const std::string& text, const std::string& path, Use use) {
  try {
    return parse_flotilla_yaml(text, path, use);
  } catch (const YAML::Exception& e) {
    // A shape the checks above did not foresee: still an error naming the place, never a crash.
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                      ": unexpected YAML here: " + e.msg);
  }
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}
}  // namespace

namespace {
// Whether every request route `inner` would match is matched by `outer` first (the gateway's
// matching rules, gateway/route_table.cpp, on patterns instead of requests).
bool prefix_covers(const std::string& prefix, const std::string& path) {
  if (path.compare(0, prefix.size(), prefix) != 0) return false;
  return path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/';
}
bool host_covers(const std::string& outer, const std::string& inner) {
  if (outer.empty() || outer == inner) return true;
  if (inner.empty() || outer.rfind("*.", 0) != 0) return false;
  const std::string suffix = outer.substr(1);  // ".example.com"
  return inner.size() > suffix.size() && inner.compare(inner.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool route_covers(const Route& outer, const Route& inner) {
  const auto& o = outer.match;
  const auto& i = inner.match;
  if (o.listener_service != i.listener_service || !host_covers(o.host, i.host)) return false;
  if (!o.path.empty() && i.path != o.path) return false;
  if (!o.path_prefix.empty() && !(i.path.empty() ? !i.path_prefix.empty() && prefix_covers(o.path_prefix, i.path_prefix)
                                                 : prefix_covers(o.path_prefix, i.path)))
    return false;
  if (!o.methods.empty()) {
    if (i.methods.empty()) return false;
    for (const auto& m : i.methods)
      if (std::find(o.methods.begin(), o.methods.end(), m) == o.methods.end()) return false;
  }
  for (const auto& h : o.headers)
    if (std::find(i.headers.begin(), i.headers.end(), h) == i.headers.end()) return false;
  return true;
}
}  // namespace

std::vector<std::string> warnings(const File& file) {
  std::vector<std::string> out;
  if (!file.gateway) return out;
  // Routes are tried in order: one that an earlier route covers never gets a request.
  const auto& routes = file.gateway->routes;
  for (size_t i = 1; i < routes.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (route_covers(routes[j], routes[i])) {
        out.push_back(file.path + ":" + std::to_string(routes[i].line) +
                      ": this route never gets a request: the route on line " + std::to_string(routes[j].line) +
                      " matches every request it would, and routes are tried in order (put the more specific one "
                      "first)");
        break;
      }
  // Trusted proxies: trusting everyone undoes what the list is for; a block written with bits
  // past its prefix is often one address meant (10.1.2.3/8 for 10.1.2.3).
  const auto& trusted = file.gateway->trusted_proxies;
  for (size_t i = 0; i < trusted.size(); ++i) {
    auto block = gateway::parse_cidr(trusted[i]);
    if (!block) continue;
    const std::string at = file.path + ":" +
                           std::to_string(i < file.gateway->trusted_proxy_lines.size() ? file.gateway->trusted_proxy_lines[i] : 0);
    const int bits = block->v4 ? block->prefix - 96 : block->prefix;
    if (bits == 0) {
      out.push_back(at + ": gateway.trusted_proxies: " + trusted[i] + " trusts every " + (block->v4 ? "IPv4" : "IPv6") +
                    " client: any of them can choose the address its rate limit counts and claim https");
      continue;
    }
    auto written = gateway::parse_ip(trusted[i].substr(0, trusted[i].find('/')));
    if (written && !(*written == block->base))
      out.push_back(at + ": gateway.trusted_proxies: " + trusted[i] + " has bits set past its prefix, so it is " +
                    gateway::to_string(block->base) + "/" + std::to_string(bits) + " (for the one address, write " +
                    gateway::to_string(*written) + ")");
  }
  // A hash policy with nothing to hash balances at random.
  for (const auto& s : file.services)
    if ((s.load_balancer == "ring_hash" || s.load_balancer == "maglev") && s.hash_on.empty())
      out.push_back(file.path + ":" + std::to_string(s.line) + ": services." + s.name + ": load_balancer " +
                    s.load_balancer + " without hash_on has no key to hash, so every request goes to a random "
                    "instance (set hash_on: header:NAME, cookie:NAME, client_ip or path)");
  // A try limit at or above the request's never ends a try: the request's timeout (504, no
  // retry) always comes first. Harmless, so not refused, but not what it says.
  for (const auto& r : file.gateway->routes)
    if (r.retry && r.retry->per_try_timeout.count() > 0 && r.retry->per_try_timeout >= r.timeout)
      out.push_back(file.path + ":" + std::to_string(r.line) + ": retry.per_try_timeout (" +
                    format_duration(r.retry->per_try_timeout) + ") is not below the route's timeout (" +
                    format_duration(r.timeout) + "), so no try can time out before the request does");
  // A file that runs nothing has routes to services registered through the API: not a slip.
  if (std::none_of(file.services.begin(), file.services.end(),
                                    [](const ServiceSection& s) { return s.supervised(); }))
    return out;
  for (const auto& r : file.gateway->routes) {
    if (file.service(r.service)) continue;
    std::string closest;
    size_t best = 3;  // at most 2 edits away
    for (const auto& s : file.services)
      if (size_t d = edit_distance(r.service, s.name); d < best) {
        best = d;
        closest = s.name;
      }
    out.push_back(file.path + ":" + std::to_string(r.line) + ": the route's service \"" + r.service +
                  "\" is not one this file runs" + (closest.empty() ? "" : " (did you mean \"" + closest + "\"?)") +
                  "; the route answers 503 whenever no instance of \"" + r.service +
                  "\" is registered through the API");
  }
  return out;
}

File load_file(const std::string& path, Use use) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError(path + ": is a directory; name the file (such as " +
                      (std::filesystem::path(path) / "flotilla.yaml").string() + ")");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path + ": cannot read the file (" + std::strerror(errno) + ")");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path, use);
}

}  // namespace flotilla::config
