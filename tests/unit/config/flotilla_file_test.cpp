#include "config/flotilla_file.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>

using namespace flotilla;
using namespace flotilla::config;
using namespace std::chrono_literals;

namespace {
// The error message of parsing `text`, or "" when it parses.
std::string error_of(const std::string& text) {
  try {
    parse(text, "app/flotilla.yaml");
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

// Every error starts with "FILE:LINE:COL: ".
bool positioned(const std::string& error, const std::string& file = "app/flotilla.yaml") {
  static const std::regex line_col("^:[0-9]+:[0-9]+: ");
  return error.compare(0, file.size(), file) == 0 && std::regex_search(error.substr(file.size()), line_col);
}

// Parses `text`; expects an error at FILE:LINE:COL that contains `part`.
#define EXPECT_CONFIG_ERROR(text, part)                                          \
  do {                                                                           \
    auto e_ = error_of(text);                                                    \
    EXPECT_TRUE(positioned(e_)) << "no FILE:LINE:COL: in \"" << e_ << "\" for:\n" << (text); \
    EXPECT_NE(e_.find(part), std::string::npos) << e_ << "\nfor:\n" << (text);  \
  } while (0)

// A service `web` with a command and the given extra keys (a flow mapping's inside).
std::string web(const std::string& keys) {
  return "name: s\nservices:\n  web: {command: [app]" + (keys.empty() ? "" : ", " + keys) + "}\n";
}

const ServiceSection& only_service(const File& f) {
  EXPECT_EQ(f.services.size(), 1u);
  return f.services.at(0);
}

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/flotilla-file-test.XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& text) const {
    auto p = path_ + "/" + name;
    std::filesystem::create_directories(std::filesystem::path(p).parent_path());
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  std::string mkdir(const std::string& name) const {
    auto p = path_ + "/" + name;
    std::filesystem::create_directories(p);
    return p;
  }
  // Writes flotilla.yaml and loads it; the error message when it fails (error is then set).
  File load(const std::string& text, std::string* error = nullptr) const {
    auto p = write("flotilla.yaml", text);
    try {
      return load_file(p);
    } catch (const ConfigError& e) {
      if (error) *error = e.what();
      else ADD_FAILURE() << e.what();
      return {};
    }
  }

 private:
  std::string path_;
};
}  // namespace

TEST(FlotillaFile, FullGatewaySection) {
  auto f = parse(R"(
name: shop
agent:
  api: 127.0.0.1:7701
  data_dir: state
gateway:
  listen: [127.0.0.1:8080, "[::1]:8080"]
  workers: 2
  routes:
    - match: { path_prefix: /api/catalog, methods: [GET, HEAD], host: "*.Example.com", headers: { X-Env: prod } }
      name: catalog-api
      service: catalog
      strip_prefix: true
      timeout: 5s
      idle_timeout: 10m
      retry: { attempts: 3, on: [connect-failure, "503"], per_try_timeout: 1s }
      rate_limit: { requests_per_second: 100, burst: 200, key: "header:x-user" }
      max_body: 10MiB
      on_client_close: wait
    - service: web
)",
                 "app/flotilla.yaml");
  EXPECT_EQ(f.name, "shop");
  EXPECT_EQ(f.agent.api, "127.0.0.1:7701");
  EXPECT_EQ(f.agent.data_dir, "app/state") << "relative to the file";
  ASSERT_TRUE(f.gateway);
  EXPECT_EQ(f.gateway->listen, (std::vector<std::string>{"127.0.0.1:8080", "[::1]:8080"}));
  EXPECT_EQ(f.gateway->workers, 2);
  ASSERT_EQ(f.gateway->routes.size(), 2u);
  const auto& r = f.gateway->routes[0];
  EXPECT_EQ(r.match.path_prefix, "/api/catalog");
  EXPECT_EQ(r.name, "catalog-api");
  EXPECT_EQ(f.gateway->routes[1].name, "") << "routes are named INDEX:SERVICE unless they have a name";
  EXPECT_EQ(r.match.host, "*.example.com");
  EXPECT_EQ(r.match.methods, (std::vector<std::string>{"GET", "HEAD"}));
  EXPECT_EQ(r.match.headers[0], (std::pair<std::string, std::string>{"x-env", "prod"}));
  EXPECT_TRUE(r.strip_prefix);
  EXPECT_EQ(r.timeout, 5s);
  EXPECT_EQ(r.idle_timeout, std::optional<Duration>(10min));
  ASSERT_TRUE(r.retry);
  EXPECT_EQ(r.retry->attempts, 3);
  EXPECT_EQ(r.retry->per_try_timeout, 1s);
  ASSERT_TRUE(r.rate_limit);
  EXPECT_EQ(r.rate_limit->burst, 200);
  EXPECT_EQ(r.rate_limit->key, "header:x-user");
  EXPECT_EQ(r.max_body_bytes, 10u * 1024 * 1024);
  EXPECT_FALSE(r.abort_on_client_close);
  EXPECT_EQ(r.line, 10);
  EXPECT_FALSE(f.gateway->routes[1].idle_timeout) << "gateway.timeouts.idle unless a route says otherwise";
  EXPECT_EQ(f.gateway->routes[1].timeout, 15s) << "the default route timeout";
  EXPECT_TRUE(f.gateway->routes[1].abort_on_client_close) << "a client's close abandons its request by default";
  EXPECT_FALSE(f.gateway->routes[1].retry);
}

TEST(FlotillaFile, ListenAddressesAreWhatTheListenersCanBind) {
  auto f = parse("name: s\ngateway:\n  listen: [localhost:80, 0.0.0.0:81, '[::]:82', '[fe80::1%lo]:83']\n",
                 "app/flotilla.yaml");
  ASSERT_TRUE(f.gateway);
  EXPECT_EQ(f.gateway->listen.size(), 4u);
  EXPECT_NE(error_of("name: s\ngateway:\n  listen: [web.internal:80]\n").find("is not an IP address"), std::string::npos);
  // "::1:8080" is an IPv6 address too: a port after IPv6 needs brackets.
  EXPECT_CONFIG_ERROR("name: s\ngateway:\n  listen: ['::1:8080']\n", "(IPv6 in brackets)");
  // A second document would be ignored; a leading --- is one document.
  EXPECT_CONFIG_ERROR("name: s\n---\nname: t\ngateway: {listen: ['127.0.0.1:1']}\n", "a second YAML document");
  EXPECT_EQ(parse("---\nname: s\n", "f.yaml").name, "s");
  EXPECT_EQ(parse("name: s\n---\n", "f.yaml").name, "s");
}

TEST(FlotillaFile, ListenersThatWouldTakeOnePortAreFoundBeforeStart) {
  // They used to pass, and the agent then failed with "Address already in use".
  EXPECT_CONFIG_ERROR("name: s\ngateway:\n  listen: [127.0.0.1:8080, 127.0.0.1:8080]\n",
                      "gateway.listen has 127.0.0.1:8080 twice");
  EXPECT_CONFIG_ERROR("name: s\ngateway:\n  listen: [127.0.0.1:8080, localhost:8080]\n", "take the same port");
  EXPECT_CONFIG_ERROR("name: s\ngateway:\n  listen: [0.0.0.0:8080, 127.0.0.1:8080]\n",
                      "127.0.0.1:8080 and 0.0.0.0:8080 take the same port");
  EXPECT_CONFIG_ERROR("name: s\ngateway:\n  listen: ['[::]:8080', 10.1.2.3:8080]\n", "take the same port");
  EXPECT_CONFIG_ERROR("name: s\ngateway:\n  listen: ['[::1]:8080', '[0:0::1]:8080']\n", "take the same port");
  EXPECT_CONFIG_ERROR("name: s\ngateway:\n  listen: 0.0.0.0:7700\n",
                      "takes the port of agent.api (127.0.0.1:7700, the default)");
  // The default listener too; the error points at agent.api then.
  EXPECT_CONFIG_ERROR("name: s\nagent:\n  api: 127.0.0.1:8080\ngateway:\n  workers: 1\n",
                      "flotilla.yaml:3:8: gateway.listen (the default): 127.0.0.1:8080 takes the port of agent.api");
  // The standalone gateway binds no agent API: nothing to collide with.
  EXPECT_EQ(parse("name: s\ngateway:\n  listen: 127.0.0.1:7700\n", "f.yaml", Use::gateway_alone).gateway->listen.size(),
            1u);
  EXPECT_CONFIG_ERROR("name: s\nagent:\n  api: 127.0.0.1:9000\ngateway:\n  listen: [127.0.0.1:80, 127.0.0.1:9000]\n",
                      "takes the port of agent.api (127.0.0.1:9000)");
  // The error points at the entry that collides.
  EXPECT_NE(error_of("name: s\ngateway:\n  listen:\n    - 127.0.0.1:80\n    - 127.0.0.1:80\n").find("flotilla.yaml:5:"),
            std::string::npos);
  // Different addresses on one port, or one port per address family, are fine.
  for (const char* ok : {"[127.0.0.1:80, 127.0.0.2:80]", "[0.0.0.0:80, '[::1]:80']", "[127.0.0.1:80, 127.0.0.1:81]",
                         "[127.0.0.1:7701]"}) {
    auto f = parse(std::string("name: s\ngateway:\n  listen: ") + ok + "\n", "app/flotilla.yaml");
    EXPECT_EQ(f.gateway->listen.size(), ok[1] == '1' && std::string(ok).find(',') == std::string::npos ? 1u : 2u) << ok;
  }
}

TEST(FlotillaFile, BooleansAreYamlsInAnyOfItsCasings) {
  auto strip = [](const std::string& word) {
    return parse("name: t\ngateway:\n  routes:\n    - {match: {path_prefix: /a}, service: s, strip_prefix: " + word +
                     "}\n",
                 "f.yaml")
        .gateway->routes[0]
        .strip_prefix;
  };
  for (const char* word : {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"}) EXPECT_TRUE(strip(word)) << word;
  for (const char* word : {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"})
    EXPECT_FALSE(strip(word)) << word;
  for (const char* word : {"tRUE", "y", "n", "1", "0", "maybe"})
    EXPECT_CONFIG_ERROR("name: t\ngateway:\n  routes:\n    - {match: {path_prefix: /a}, service: s, strip_prefix: " +
                            std::string(word) + "}\n",
                        "strip_prefix must be true or false");
}

TEST(FlotillaFile, DefaultsWithOnlyAName) {
  auto f = parse("name: tiny\n", "flotilla.yaml");
  EXPECT_EQ(f.agent.api, "127.0.0.1:7700");
  EXPECT_EQ(f.agent.data_dir, ".flotilla");
  EXPECT_FALSE(f.gateway);
}

TEST(FlotillaFile, ErrorsNameFileLineAndColumn) {
  EXPECT_EQ(error_of("name: shop\nagnet: {}\n"),
            "app/flotilla.yaml:2:1: unknown key \"agnet\" in the file (known: name, agent, gateway, services)");
  EXPECT_EQ(error_of("name: shop\ngateway:\n  routes:\n    - service: web\n      timeout: soon\n"),
            "app/flotilla.yaml:5:16: timeout must be a duration such as 250ms, 10s or 5m");
  EXPECT_EQ(error_of("name: shop\nagent:\n  api: localhost\n"),
            "app/flotilla.yaml:3:8: agent.api must be HOST:PORT, such as 127.0.0.1:8080 or [::1]:8080 (IPv6 in brackets)");
  EXPECT_EQ(error_of("name: shop\nagent:\n  api: 127.0.0.1:70000\n"),
            "app/flotilla.yaml:3:8: agent.api: port 70000 is above 65535");
  for (const char* shape : {"\"::1:99999\"", "\"[::1:70000\"", "\":70000\""})
    EXPECT_EQ(error_of("name: shop\nagent:\n  api: " + std::string(shape) + "\n"),
              "app/flotilla.yaml:3:8: agent.api must be HOST:PORT, such as 127.0.0.1:8080 or [::1]:8080 (IPv6 in brackets)")
        << shape;
  EXPECT_EQ(error_of("name: shop\nagent:\n  api: 127.0.0.1:99999999999\n"),
            "app/flotilla.yaml:3:8: agent.api: port 99999999999 is above 65535");
  EXPECT_EQ(error_of("name: [unclosed\n").rfind("app/flotilla.yaml:", 0), 0u);
  EXPECT_NE(error_of("name: [unclosed\n").find("not valid YAML"), std::string::npos);
  EXPECT_EQ(error_of("name: [unclosed\n").find("tab"), std::string::npos);
  // A tab in the indentation: yaml-cpp says "end of map not found"; the error names the line.
  EXPECT_NE(error_of("name: shop\nservices:\n  web:\n    command: [a]\n\treplicas: 2\n")
                .find("(line 5 is indented with a tab: YAML indentation must be spaces)"),
            std::string::npos);
}

TEST(FlotillaFile, RejectsRoutesThatCouldNeverMatch) {
  auto route = [](const std::string& line) {
    return error_of("name: shop\ngateway:\n  routes:\n    - service: web\n      " + line + "\n");
  };
  EXPECT_EQ(route("match: {path_prefix: /dots/../x}"),
            "app/flotilla.yaml:5:28: match.path_prefix \"/dots/../x\" would never match: requests are matched after "
            "normalisation (escapes of letters and digits decoded, characters a URI cannot hold raw such as { } | "
            "escaped, dot segments and repeated slashes removed); "
            "write \"/x\"");
  EXPECT_NE(route("match: {path: /%7Euser}").find("write \"/~user\""), std::string::npos);
  EXPECT_NE(route("match: {path: /a//b}").find("write \"/a/b\""), std::string::npos);
  EXPECT_NE(route("match: {path: /a%2fb}").find("write \"/a%2Fb\""), std::string::npos);
  EXPECT_NE(route("match: {path: /a%zz}").find("malformed"), std::string::npos);
  EXPECT_NE(route("match: {path: /a%00}").find("malformed or control-character"), std::string::npos);
  EXPECT_NE(route("match: {path: \"/search?q=1\"}").find("query"), std::string::npos);
  EXPECT_NE(route("match: {path: \"/users/{id}\"}").find("write \"/users/%7Bid%7D\""), std::string::npos);
  EXPECT_NE(route("match: {host: \"::1\"}").find("is an IPv6 address: write it in brackets, as a Host has it ([::1])"),
            std::string::npos);
  EXPECT_EQ(route("match: {host: \"shop.example:8080\"}"),
            "app/flotilla.yaml:5:21: match.host must not have a port: the port in a request's Host is ignored when "
            "matching");
  // Characters requests carry %-escaped; host spellings no Host has.
  EXPECT_NE(route("match: {path_prefix: \"/a b\"}").find("would never match; write \"/a%20b\""), std::string::npos);
  EXPECT_NE(route("match: {path: \"/caf\u00e9\"}").find("write \"/caf%C3%A9\""), std::string::npos);
  EXPECT_NE(route("match: {host: \".example.com\"}").find("write two routes, example.com and *.example.com"),
            std::string::npos);
  EXPECT_NE(route("match: {host: \"[::1]:80\"}").find("without a port"), std::string::npos);
  EXPECT_NE(route("match: {host: \"a b.example\"}").find("has a character no host name has"), std::string::npos);
  EXPECT_EQ(route("match: {host: \"[::1]\"}"), "");
  EXPECT_EQ(route("match: {host: \"*.my_svc.example\"}"), "");
  // A mapping where a key should be (doubled braces, as in a Python format string) is an error
  // at its place, not a crash.
  EXPECT_EQ(route("match: {{path_prefix: /a}}"),
            "app/flotilla.yaml:5:15: a key in match must be a name, not a mapping or a list (a `{` too many?)");
  EXPECT_NE(route("match: {headers: {{a: b}: c}}").find("header name must be a string"), std::string::npos);
  EXPECT_EQ(route("name: \"a b\""),
            "app/flotilla.yaml:5:13: a route's name must be letters, digits, '-', '_' or '.' (at most 63)");
  EXPECT_EQ(error_of("name: shop\ngateway:\n  routes:\n    - {service: web, name: api}\n"
                     "    - {service: web, name: api, match: {path: /x}}\n"),
            "app/flotilla.yaml:5:28: route name \"api\" is taken by the route on line 4 (names label the routes' "
            "metrics: one each)");
  EXPECT_EQ(route("idle_timeout: 0s"),
            "app/flotilla.yaml:5:21: idle_timeout must be above 0 (it bounds a stalled stream; for streams that are "
            "quiet for long, use a long one, such as 1h)");
  EXPECT_NE(route("idle_timeout: soon").find("idle_timeout"), std::string::npos);
  EXPECT_EQ(route("timeout: 0s"),
            "app/flotilla.yaml:5:16: timeout must be above 0 (for long polls and slow answers use a long one, such as "
            "10m)");
  // Normal forms pass; a trailing dot in a host is dropped ("a.example." is "a.example").
  auto f = parse("name: shop\ngateway:\n  routes:\n    - service: web\n      match: {host: Shop.Example., "
                 "path_prefix: /a/%2F/~x/}\n",
                 "flotilla.yaml");
  EXPECT_EQ(f.gateway->routes[0].match.host, "shop.example");
  EXPECT_EQ(f.gateway->routes[0].match.path_prefix, "/a/%2F/~x/");
}

TEST(FlotillaFile, AccessLogIsAPathOrOff) {
  auto gw = [](const std::string& v) { return "name: s\ngateway:\n  access_log: " + v + "\n"; };
  EXPECT_TRUE(parse(gw("off"), "f.yaml").gateway->access_log.empty());
  EXPECT_TRUE(parse(gw("OFF"), "f.yaml").gateway->access_log.empty());
  for (const char* word : {"false", "no", "None", "true", "yes", "on", "''"})
    EXPECT_CONFIG_ERROR(gw(word), "gateway.access_log is a file's path, or off");
}

TEST(FlotillaFile, RejectsBadValues) {
  const char* bad[] = {
      "",                                                                        // empty
      "agent: {}\n",                                                             // no name
      "name: 'has space'\n",                                                     // bad name
      "name: s\ngateway:\n  workers: 0\n",                                       // workers range
      "name: s\ngateway:\n  workers: many\n",                                    // workers word
      "name: s\ngateway:\n  listen: []\n",                                       // no listener
      "name: s\ngateway:\n  routes: {}\n",                                       // routes not a list
      "name: s\ngateway:\n  routes:\n    - match: {path_prefix: /a}\n",          // no service
      "name: s\ngateway:\n  routes:\n    - {service: w, match: {path_prefix: a}}\n",      // no leading /
      "name: s\ngateway:\n  routes:\n    - {service: w, match: {path: /a, path_prefix: /a}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, strip_prefix: true}\n",  // strip without prefix
      "name: s\ngateway:\n  routes:\n    - {service: w, match: {methods: [FETCH]}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, retry: {attempts: 0}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, retry: {on: [sometimes]}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, retry: {on: ['200']}}\n",      // every answer retried
      "name: s\ngateway:\n  routes:\n    - {service: w, retry: {on: ['302']}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, retry: {on: ['100']}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, retry: {on: ['600']}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, match: {methods: []}}\n",       // matches nothing
      "name: s\ngateway:\n  routes:\n    - {service: w, match: {methods: GET}}\n",
      "name: s\ngateway:\n  access_log: /tmp\n",                                      // a directory
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {burst: 5}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: 0}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: 5, key: user}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, max_body: lots}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, on_client_close: ignore}\n",
      "name: s\ngateway:\n  listen: '*:8080'\n",                                  // not an address
      "name: s\ngateway:\n  listen: [example.com:8080]\n",                       // a name to look up
      "name: s\nagent:\n  api: 'any:7700'\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, match: {headers: {'X Env': a}}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: 5, key: 'header:x y'}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: -1}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: inf}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: 5, burst: inf}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: 0x10}}\n",  // hex
      "name: s\ngateway:\n  workers: '+2'\n  routes:\n    - {service: w}\n",  // integers: digits, optional minus
      "name: s\ngateway:\n  workers: ' 2'\n  routes:\n    - {service: w}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: ' 5'}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: 5e}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: .}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w}\nservices:\n  ww: {load_balancer: random}\n",  // typo
      "name: s\nservices:\n  w: {load_balancer: random}\n",                    // no gateway, no command
      "name: s\ngateway:\n  routes:\n    - {service: w}\nservices:\n  w: {load_balancer: maglev, hash_on: 'header:a b'}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, on_client_close: [abort]}\n",
      "name: s\ngateway:\n  routes:\n    - {service: 'w/x'}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, colour: blue}\n",      // unknown route key
      "name: s\nagent:\n  store: etcd://127.0.0.1:2379\n",                       // not yet
      "name: s\nservices:\n  web: {command: []}\n",                               // no program
      "name: s\nname: t\n",                                                       // duplicate key
      "name: s\ngateway:\n  routes:\n    - {service: w, service: v}\n",          // duplicate in a route
  };
  for (const char* text : bad) {
    auto e = error_of(text);
    EXPECT_FALSE(e.empty()) << "accepted:\n" << text;
    EXPECT_EQ(e.rfind("app/flotilla.yaml:", 0), 0u) << e;
  }
}

TEST(FlotillaFile, GatewayServiceKeysAndTimeouts) {
  auto f = parse(R"(
name: shop
gateway:
  max_connections: 500
  access_log: logs/access.jsonl
  timeouts: { connect: 250ms, header: 5s, idle: 30s, upstream_idle: 2s }
  routes:
    - service: catalog
    - service: web
services:
  catalog:
    load_balancer: ring_hash
    hash_on: header:X-User
    circuit_breaker: { max_connections: 10, max_pending_requests: 20, max_requests: 30 }
    outlier_detection: { consecutive_failures: 3, base_ejection_time: 10s, max_ejection_time: 1m, max_ejection_percent: 30 }
  web: {}
)",
                 "app/flotilla.yaml");
  ASSERT_TRUE(f.gateway);
  EXPECT_EQ(f.gateway->max_connections, 500);
  EXPECT_EQ(f.gateway->access_log, "app/logs/access.jsonl");
  EXPECT_EQ(f.gateway->timeouts.connect, 250ms);
  EXPECT_EQ(f.gateway->timeouts.header, 5s);
  EXPECT_EQ(f.gateway->timeouts.idle, 30s);
  EXPECT_EQ(f.gateway->timeouts.upstream_idle, 2s);
  ASSERT_EQ(f.services.size(), 2u);
  const auto* c = f.service("catalog");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->load_balancer, "ring_hash");
  EXPECT_EQ(c->hash_on, "header:x-user");
  EXPECT_EQ(c->circuit_breaker.max_connections, 10);
  EXPECT_EQ(c->circuit_breaker.max_pending_requests, 20);
  EXPECT_EQ(c->circuit_breaker.max_requests, 30);
  EXPECT_EQ(c->outlier_detection.consecutive_failures, 3);
  EXPECT_EQ(c->outlier_detection.base_ejection_time, 10s);
  EXPECT_EQ(c->outlier_detection.max_ejection_time, 60s);
  EXPECT_EQ(c->outlier_detection.max_ejection_percent, 30);
  EXPECT_EQ(f.service("web")->load_balancer, "round_robin");
  EXPECT_EQ(f.service("nope"), nullptr);
}

TEST(FlotillaFile, RetryAndRateLimitValuesThatWouldNotDoWhatTheySay) {
  auto route = [](const std::string& keys) {
    return "name: s\ngateway:\n  routes:\n    - {service: w, " + keys + "}\n";
  };
  // A try limit at or above the request's never ends a try: harmless, so a warning, not an error.
  auto late = parse(route("retry: {per_try_timeout: 20s}"), "f.yaml");
  ASSERT_EQ(warnings(late).size(), 1u);
  EXPECT_EQ(warnings(late)[0], "f.yaml:4: retry.per_try_timeout (20s) is not below the route's timeout (15s), so no "
                               "try can time out before the request does");
  EXPECT_EQ(warnings(parse(route("timeout: 5s, retry: {per_try_timeout: 5s}"), "f.yaml")).size(), 1u);
  EXPECT_TRUE(warnings(parse(route("timeout: 5s, retry: {per_try_timeout: 4s}"), "f.yaml")).empty());
  EXPECT_TRUE(warnings(parse(route("retry: {per_try_timeout: 0s}"), "f.yaml")).empty());
  // Any 4xx or 5xx status may be listed.
  EXPECT_EQ(parse(route("retry: {on: ['409', '599']}"), "f.yaml").gateway->routes[0].retry->on.size(), 2u);
  EXPECT_CONFIG_ERROR(route("retry: {on: ['204']}"), "\"204\" is not an error status");
  // A single value or an empty list read as no condition at all: retries silently off.
  EXPECT_CONFIG_ERROR(route("retry: {attempts: 3, on: 5xx}"), "retry.on must be a list such as [5xx, reset]");
  EXPECT_CONFIG_ERROR(route("retry: {attempts: 3, on: '5xx, 503'}"), "retry.on must be a list");
  EXPECT_CONFIG_ERROR(route("retry: {attempts: 3, on: []}"), "retry.on is empty, so nothing would be retried");
  EXPECT_CONFIG_ERROR(route("retry: {attempts: 3, on: }"), "retry.on must be a list");
  // One value per header name, whatever its case: two would make a route nothing matches.
  EXPECT_CONFIG_ERROR(route("match: {headers: {X-Env: prod, x-env: dev}}"), "\"x-env\" is given twice");
  EXPECT_EQ(parse(route("match: {headers: {X-Env: prod, X-Team: a}}"), "f.yaml").gateway->routes[0].match.headers.size(),
            2u);
  // Under one token nothing passes: the default burst is at least one request.
  auto slow = parse(route("rate_limit: {requests_per_second: 0.5}"), "f.yaml").gateway->routes[0].rate_limit;
  EXPECT_EQ(slow->burst, 1.0);
  EXPECT_EQ(parse(route("rate_limit: {requests_per_second: 50}"), "f.yaml").gateway->routes[0].rate_limit->burst, 50.0);
  EXPECT_EQ(parse(route("rate_limit: {requests_per_second: 2.5e1}"), "f.yaml").gateway->routes[0].rate_limit->requests_per_second, 25.0);
  EXPECT_EQ(parse(route("rate_limit: {requests_per_second: .5}"), "f.yaml").gateway->routes[0].rate_limit->requests_per_second, 0.5);
  EXPECT_EQ(parse(route("rate_limit: {requests_per_second: +3.}"), "f.yaml").gateway->routes[0].rate_limit->requests_per_second, 3.0);
  EXPECT_CONFIG_ERROR(route("rate_limit: {requests_per_second: 5, burst: 0.5}"), "rate_limit.burst");
}

TEST(FlotillaFile, EjectionTimesNameWhatTheUserWrote) {
  // A base time above the default cap says the cap is a default, and where to change it.
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {outlier_detection: {base_ejection_time: 400s}}\n",
                      "base_ejection_time (6m40s) is above max_ejection_time (5m0s by default); set max_ejection_time too");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {outlier_detection: {base_ejection_time: 0s}}\n",
                      "set consecutive_failures: 0");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {outlier_detection: {max_ejection_time: 10s}}\n",
                      "max_ejection_time (10s) must be at least base_ejection_time (30s, the default)");
  // With detection off the times do nothing, so 0s is not an error there.
  EXPECT_EQ(parse("name: s\ngateway:\n  routes:\n    - service: web\nservices:\n  web: {outlier_detection: "
                  "{consecutive_failures: 0, base_ejection_time: 0s}}\n",
                  "f.yaml")
                .service("web")
                ->outlier_detection.consecutive_failures,
            0);
  EXPECT_EQ(parse("name: s\ngateway:\n  routes:\n    - service: web\nservices:\n  web: {outlier_detection: "
                  "{base_ejection_time: 400s, max_ejection_time: 400s}}\n",
                  "f.yaml")
                .service("web")
                ->outlier_detection.base_ejection_time,
            400s);
}

TEST(FlotillaFile, CookieNamesAreWhatBrowsersSend) {
  // Browsers send names outside RFC 6265's tokens (cart[id]); only the Cookie header's own
  // separators, spaces and controls cannot be in one.
  auto f = parse("name: s\ngateway:\n  routes:\n    - service: web\nservices:\n  web: {load_balancer: maglev, "
                 "hash_on: 'cookie:cart[id]'}\n",
                 "f.yaml");
  EXPECT_EQ(f.service("web")->hash_on, "cookie:cart[id]");
  for (const char* bad : {"cookie:a b", "cookie:a;b", "cookie:a=b", "cookie:a,b", "cookie:a\\\"b", "cookie:a\tb"})
    EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {load_balancer: maglev, hash_on: \"" + std::string(bad) + "\"}\n",
                        "is not a cookie name");
}

TEST(FlotillaFile, BadGatewayServiceKeys) {
  const char* bad[] = {
      "name: s\nservices:\n  web: {load_balancer: fastest}\n",
      "name: s\nservices:\n  web: {load_balancer: ring_hash, hash_on: body}\n",
      "name: s\nservices:\n  web: {hash_on: client_ip}\n",  // hash_on without a hash policy
      "name: s\nservices:\n  web: {circuit_breaker: {max_requests: 0}}\n",
      "name: s\nservices:\n  web: {circuit_breaker: {max_calls: 3}}\n",
      "name: s\nservices:\n  web: {outlier_detection: {max_ejection_percent: 101}}\n",
      "name: s\nservices:\n  web: {outlier_detection: {base_ejection_time: 1m, max_ejection_time: 10s}}\n",
      "name: s\nservices:\n  web: {outlier_detection: {base_ejection_time: 0s}}\n",
      "name: s\nservices:\n  web: {load_balancer: maglev, hash_on: 'cookie:a b'}\n",
      "name: s\nservices:\n  web: {load_balancer: maglev, hash_on: 'cookie:a;b'}\n",
      "name: s\nservices:\n  web: {replicas: 2}\n",  // supervisor keys need a command
      "name: s\nservices:\n  'w/x': {}\n",
      "name: s\nservices: [web]\n",
      "name: s\ngateway:\n  timeouts: {connect: 0s}\n",
      "name: s\ngateway:\n  timeouts: {read: 1s}\n",
      "name: s\ngateway:\n  max_connections: 0\n",
  };
  for (const char* text : bad) {
    auto e = error_of(text);
    EXPECT_FALSE(e.empty()) << "accepted:\n" << text;
    EXPECT_EQ(e.rfind("app/flotilla.yaml:", 0), 0u) << e;
  }
}

// ---- supervised services (the keys that need a command) ----

TEST(FlotillaFile, SupervisedServiceWithEveryKey) {
  TempDir d;
  d.mkdir("catalog");
  d.write(".env", "FROM_FILE=1\nLOG_LEVEL=debug\n");
  auto f = d.load(R"(
name: shop
services:
  inventory:
    command: ./inventory --fast
  catalog:
    command: [python3, app.py]
    working_dir: ./catalog
    environment: { LOG_LEVEL: info }
    env_file: .env
    port: auto
    replicas: 2
    healthcheck: { http: /healthz, interval: 2s, timeout: 500ms, retries: 5, start_period: 10s }
    restart: on-failure
    stop_signal: SIGINT
    stop_grace_period: 20s
    depends_on: [inventory]
    memory: 256MiB
    cpus: 0.5
    deploy: { healthy_timeout: 30s }
    load_balancer: least_request
)");
  ASSERT_EQ(f.services.size(), 2u);
  const auto& inv = f.services[0];
  EXPECT_TRUE(inv.supervised());
  EXPECT_EQ(inv.command, (std::vector<std::string>{"/bin/sh", "-c", "./inventory --fast"}));
  EXPECT_EQ(inv.working_dir, d.path()) << "default: the file's directory";
  const auto& c = f.services[1];
  EXPECT_TRUE(c.supervised());
  EXPECT_EQ(c.command, (std::vector<std::string>{"python3", "app.py"}));
  EXPECT_EQ(c.working_dir, d.path() + "/catalog");
  EXPECT_EQ(c.environment, (std::vector<std::pair<std::string, std::string>>{{"FROM_FILE", "1"}, {"LOG_LEVEL", "info"}}));
  EXPECT_EQ(c.port_mode, ServiceSection::PortMode::automatic);
  EXPECT_EQ(c.replicas, 2);
  EXPECT_EQ(c.healthcheck.kind, Healthcheck::Kind::http);
  EXPECT_EQ(c.healthcheck.http_path, "/healthz");
  EXPECT_EQ(c.healthcheck.interval, 2s);
  EXPECT_EQ(c.healthcheck.timeout, 500ms);
  EXPECT_EQ(c.healthcheck.retries, 5);
  EXPECT_EQ(c.healthcheck.start_period, 10s);
  EXPECT_EQ(c.restart, "on-failure");
  EXPECT_EQ(c.stop_signal, "SIGINT");
  EXPECT_EQ(c.stop_grace_period, 20s);
  ASSERT_EQ(c.depends_on.size(), 1u);
  EXPECT_EQ(c.depends_on[0].service, "inventory");
  EXPECT_EQ(c.depends_on[0].condition, "service_started");
  EXPECT_EQ(c.depends_on[0].line, 17);
  EXPECT_EQ(c.memory_bytes, 256u * 1024 * 1024);
  EXPECT_DOUBLE_EQ(c.cpus, 0.5);
  EXPECT_EQ(c.deploy.healthy_timeout, 30s);
  EXPECT_FALSE(c.deploy.canary_analysis);
  EXPECT_FALSE(c.autoscale);
  EXPECT_EQ(c.load_balancer, "least_request") << "gateway keys still apply";
}

TEST(FlotillaFile, SupervisorDefaults) {
  auto f = parse(web(""), "app/flotilla.yaml");
  const auto& s = only_service(f);
  EXPECT_TRUE(s.supervised());
  EXPECT_EQ(s.working_dir, std::filesystem::absolute("app").lexically_normal().string());
  // `-f flotilla.yaml` and the absolute path that `flotilla up` again sends: the same directory,
  // spelt the same (a trailing slash made every service look changed on the first re-apply).
  const auto here = std::filesystem::current_path().string();
  EXPECT_EQ(only_service(parse(web(""), "flotilla.yaml")).working_dir, here);
  EXPECT_EQ(only_service(parse(web(""), here + "/flotilla.yaml")).working_dir, here);
  EXPECT_TRUE(s.environment.empty());
  EXPECT_EQ(s.port_mode, ServiceSection::PortMode::automatic);
  EXPECT_EQ(s.replicas, 1);
  EXPECT_EQ(s.healthcheck, Healthcheck{}) << "a TCP connect every second";
  EXPECT_EQ(s.healthcheck.kind, Healthcheck::Kind::tcp);
  EXPECT_EQ(s.restart, "always");
  EXPECT_EQ(s.stop_signal, "SIGTERM");
  EXPECT_EQ(s.stop_grace_period, 10s);
  EXPECT_TRUE(s.depends_on.empty());
  EXPECT_EQ(s.memory_bytes, 0u);
  EXPECT_EQ(s.cpus, 0);
  EXPECT_FALSE(s.autoscale);
  EXPECT_EQ(s.deploy, DeploySettings{});
  EXPECT_EQ(s.deploy.healthy_timeout, 60s);
  // Without a command a service is only the gateway's.
  auto g = parse("name: s\ngateway:\n  routes:\n    - {service: web}\n    - {service: api}\nservices:\n  web: {}\n  api:\n",
                 "app/flotilla.yaml");
  EXPECT_FALSE(g.services[0].supervised());
  EXPECT_FALSE(g.services[1].supervised());
  EXPECT_TRUE(g.start_order().empty());
}

TEST(FlotillaFile, CommandAsListOrString) {
  auto list = parse("name: s\nservices:\n  web:\n    command: [python3, -m, http.server, \"8000\"]\n", "app/flotilla.yaml");
  EXPECT_EQ(only_service(list).command, (std::vector<std::string>{"python3", "-m", "http.server", "8000"}));
  auto str = parse("name: s\nservices:\n  web:\n    command: exec python3 app.py --port \"$PORT\"\n", "app/flotilla.yaml");
  EXPECT_EQ(only_service(str).command,
            (std::vector<std::string>{"/bin/sh", "-c", "exec python3 app.py --port \"$PORT\""}));
  auto block = parse("name: s\nservices:\n  web:\n    command:\n      - ./run\n      - --flag\n", "app/flotilla.yaml");
  EXPECT_EQ(only_service(block).command, (std::vector<std::string>{"./run", "--flag"}));

  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {command: []}\n", "command needs at least the program");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {command: ['', x]}\n", "command needs at least the program");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {command: ''}\n", "command must not be empty");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {command: {run: x}}\n", "command must be a string");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web: {command: [x, [y]]}\n", "command entries must be a string");
  EXPECT_EQ(error_of("name: s\nservices:\n  web: {command: []}\n"),
            "app/flotilla.yaml:3:18: services.web.command needs at least the program");
}

TEST(FlotillaFile, WorkingDirIsRelativeToTheFile) {
  TempDir d;
  d.mkdir("svc/api");
  d.mkdir("other");
  auto f = d.load("name: s\nservices:\n  a: {command: x, working_dir: ./svc/api}\n  b: {command: x, working_dir: svc/../other}\n"
                  "  c: {command: x, working_dir: " + d.path() + "/svc}\n  e: {command: x, working_dir: .}\n");
  ASSERT_EQ(f.services.size(), 4u);
  EXPECT_EQ(f.services[0].working_dir, d.path() + "/svc/api");
  EXPECT_EQ(f.services[1].working_dir, d.path() + "/other") << "normalised";
  EXPECT_EQ(f.services[2].working_dir, d.path() + "/svc") << "absolute as given";
  EXPECT_EQ(f.services[3].working_dir, d.path()) << "no trailing /";

  std::string error;
  d.load("name: s\nservices:\n  a: {command: x, working_dir: ./missing}\n", &error);
  EXPECT_TRUE(positioned(error, d.path() + "/flotilla.yaml")) << error;
  EXPECT_EQ(error, d.path() + "/flotilla.yaml:3:32: services.a.working_dir " + d.path() + "/missing is not a directory");
  d.write("afile", "x");
  error.clear();
  d.load("name: s\nservices:\n  a: {command: x, working_dir: afile}\n", &error);
  EXPECT_NE(error.find("is not a directory"), std::string::npos) << error;
  error.clear();
  d.load("name: s\nservices:\n  a: {command: x, working_dir: [a]}\n", &error);
  EXPECT_NE(error.find("working_dir must be a string"), std::string::npos) << error;
}

TEST(FlotillaFile, EnvironmentAsMapOrList) {
  using Env = std::vector<std::pair<std::string, std::string>>;
  auto map = parse(web("environment: {B: two words, A: 1, EMPTY: , _X9: 'yes', URL: 'http://h:1/?a=b'}"), "app/flotilla.yaml");
  EXPECT_EQ(only_service(map).environment,
            (Env{{"A", "1"}, {"B", "two words"}, {"EMPTY", ""}, {"URL", "http://h:1/?a=b"}, {"_X9", "yes"}}))
      << "in key order; a null value is empty";
  auto list = parse(web("environment: [B=2, A=x=y, EMPTY=, B=3]"), "app/flotilla.yaml");
  EXPECT_EQ(only_service(list).environment, (Env{{"A", "x=y"}, {"B", "3"}, {"EMPTY", ""}}))
      << "split at the first =; a repeated name: the last wins";

  EXPECT_CONFIG_ERROR(web("environment: {1X: a}"), "\"1X\" is not a variable name");
  EXPECT_CONFIG_ERROR(web("environment: {A-B: a}"), "\"A-B\" is not a variable name");
  EXPECT_CONFIG_ERROR(web("environment: {A: [1]}"), "environment.A must be a string");
  EXPECT_CONFIG_ERROR(web("environment: [NOVALUE]"), "environment entries must be KEY=VALUE");
  EXPECT_CONFIG_ERROR(web("environment: [=x]"), "environment entries must be KEY=VALUE");
  EXPECT_CONFIG_ERROR(web("environment: just-a-string"), "environment must be a mapping (KEY: value) or a list of KEY=VALUE");

  // Compose's interpolation is not done: refused, not passed on as text. $${ is a literal ${.
  EXPECT_CONFIG_ERROR(web("environment: {DB: '${DATABASE_URL}'}"),
                      "services.web.environment.DB: ${DATABASE_URL} is not interpolated (flotilla passes values as written)");
  EXPECT_CONFIG_ERROR(web("environment: ['MODE=x${MODE:-dev}y']"), "environment.MODE: ${MODE:-dev} is not interpolated");
  EXPECT_CONFIG_ERROR(web("environment: {A: 'cut ${'}"), "environment.A: ${ is not interpolated");
  auto escaped = parse(web("environment: {T: 'a$${b}', P: 'pa$$word', D: '$HOME'}"), "app/flotilla.yaml");
  EXPECT_EQ(only_service(escaped).environment, (Env{{"D", "$HOME"}, {"P", "pa$$word"}, {"T", "a${b}"}}))
      << "only $${ is an escape; other dollars are kept";
}

TEST(FlotillaFile, EnvFile) {
  TempDir d;
  d.write(".env",
          "# a comment\n"
          "\n"
          "   # an indented comment\n"
          "PLAIN=value\n"
          "export EXPORTED=yes\n"
          "DOUBLE=\"two words\"\n"
          "SINGLE='it''s'\n"
          "KEEP_INNER=a\"b\n"
          "EQUALS=a=b=c\n"
          "EMPTY=\n"
          "  INDENTED=1\n"
          "SPACED = after\n"
          "CRLF=windows\r\n"
          "DUP=first\n"
          "DUP=second\n"
          "OVERRIDDEN=from file\n");
  d.write("conf/more.env", "PLAIN=from more\nMORE=1\n");
  auto f = d.load(
      "name: s\nservices:\n  web:\n    command: x\n    env_file: .env\n    environment: {OVERRIDDEN: from yaml}\n"
      "  two:\n    command: x\n    env_file: [.env, conf/more.env]\n");
  ASSERT_EQ(f.services.size(), 2u);
  using Env = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(f.services[0].environment, (Env{{"CRLF", "windows"},
                                            {"DOUBLE", "two words"},
                                            {"DUP", "second"},
                                            {"EMPTY", ""},
                                            {"EQUALS", "a=b=c"},
                                            {"EXPORTED", "yes"},
                                            {"INDENTED", "1"},
                                            {"KEEP_INNER", "a\"b"},
                                            {"OVERRIDDEN", "from yaml"},
                                            {"PLAIN", "value"},
                                            {"SINGLE", "it''s"},
                                            {"SPACED", " after"}}));
  const auto& two = f.services[1].environment;
  auto get = [&](const std::string& k) -> std::string {
    for (const auto& [name, v] : two)
      if (name == k) return v;
    return "<unset>";
  };
  EXPECT_EQ(get("PLAIN"), "from more") << "a later file wins";
  EXPECT_EQ(get("MORE"), "1");
  EXPECT_EQ(get("OVERRIDDEN"), "from file");

  // An absolute env_file path is used as it is.
  auto abs = d.load("name: s\nservices:\n  web: {command: x, env_file: " + d.path() + "/conf/more.env}\n");
  EXPECT_EQ(only_service(abs).environment, (Env{{"MORE", "1"}, {"PLAIN", "from more"}}));

  std::string error;
  d.load("name: s\nservices:\n  web:\n    command: x\n    env_file: nothere.env\n", &error);
  EXPECT_TRUE(positioned(error, d.path() + "/flotilla.yaml")) << error;
  EXPECT_EQ(error.rfind(d.path() + "/flotilla.yaml:5:15: env_file " + d.path() + "/nothere.env: cannot read it", 0), 0u)
      << error;
  d.write("bad.env", "OK=1\n# fine\nthis line has no equals\n");
  error.clear();
  d.load("name: s\nservices:\n  web: {command: x, env_file: bad.env}\n", &error);
  EXPECT_TRUE(positioned(error, d.path() + "/flotilla.yaml")) << error;
  EXPECT_NE(error.find("env_file " + d.path() + "/bad.env:3: expected KEY=VALUE"), std::string::npos) << error;
  d.write("badname.env", "1ABC=x\n");
  error.clear();
  d.load("name: s\nservices:\n  web: {command: x, env_file: badname.env}\n", &error);
  EXPECT_NE(error.find("badname.env:1: expected KEY=VALUE"), std::string::npos) << error;
}

// The standalone gateway reads the application's own file on another host: the supervisor's
// files (working_dir, env_file) are not there, and are not its business.
TEST(FlotillaFile, TheStandaloneGatewayDoesNotCheckTheSupervisorsFiles) {
  TempDir d;
  const std::string text =
      "name: s\ngateway:\n  routes:\n    - service: web\n"
      "services:\n  web:\n    command: x\n    working_dir: ./nothere\n    env_file: .env\n";
  std::string error;
  d.load(text, &error);
  EXPECT_NE(error.find("is not a directory"), std::string::npos) << error;
  d.write("flotilla.yaml", text);
  auto f = load_file(d.path() + "/flotilla.yaml", Use::gateway_alone);
  ASSERT_TRUE(f.gateway);
  EXPECT_EQ(f.gateway->routes[0].service, "web");
  EXPECT_TRUE(only_service(f).environment.empty());
}

TEST(FlotillaFile, Ports) {
  EXPECT_EQ(only_service(parse(web("port: auto"), "app/flotilla.yaml")).port_mode, ServiceSection::PortMode::automatic);
  auto fixed = only_service(parse(web("port: 8081"), "app/flotilla.yaml"));
  EXPECT_EQ(fixed.port_mode, ServiceSection::PortMode::fixed);
  EXPECT_EQ(fixed.port, 8081);
  auto none = only_service(parse(web("port: none"), "app/flotilla.yaml"));
  EXPECT_EQ(none.port_mode, ServiceSection::PortMode::none);
  EXPECT_EQ(none.healthcheck.kind, Healthcheck::Kind::none) << "nothing to probe without a port";
  EXPECT_EQ(only_service(parse(web("port: none, healthcheck: {disable: true}"), "app/flotilla.yaml")).healthcheck.kind,
            Healthcheck::Kind::none);
  EXPECT_EQ(only_service(parse(web("port: 1"), "app/flotilla.yaml")).port, 1);
  EXPECT_EQ(only_service(parse(web("port: 65535, replicas: 1"), "app/flotilla.yaml")).port, 65535);
  EXPECT_EQ(only_service(parse(web("port: 9000, replicas: 0"), "app/flotilla.yaml")).port, 9000);

  EXPECT_CONFIG_ERROR(web("port: 0"), "port (auto, none or a port number) must be a whole number from 1 to 65535");
  EXPECT_CONFIG_ERROR(web("port: 65536"), "from 1 to 65535");
  EXPECT_CONFIG_ERROR(web("port: high"), "from 1 to 65535");
  EXPECT_CONFIG_ERROR(web("port: [80]"), "from 1 to 65535");
  EXPECT_EQ(error_of(web("port: 8080, replicas: 2")),
            "app/flotilla.yaml:3:31: services.web.port 8080 can serve only one instance; use port: auto for replicas");
  EXPECT_CONFIG_ERROR(web("port: 8080, autoscale: {min: 1, max: 3, target: {inflight: 5}}"), "can serve only one instance");
  EXPECT_CONFIG_ERROR(web("port: none, healthcheck: {http: /healthz}"), "with port: none use healthcheck: {disable: true}");
  EXPECT_CONFIG_ERROR(web("port: none, healthcheck: {interval: 5s}"), "with port: none");
}

TEST(FlotillaFile, Replicas) {
  EXPECT_EQ(only_service(parse(web("replicas: 0"), "app/flotilla.yaml")).replicas, 0);
  EXPECT_EQ(only_service(parse(web("replicas: 3"), "app/flotilla.yaml")).replicas, 3);
  EXPECT_EQ(only_service(parse(web("replicas: 1000"), "app/flotilla.yaml")).replicas, 1000);
  for (const char* bad : {"replicas: -1", "replicas: 1001", "replicas: two", "replicas: 1.5", "replicas: [1]"})
    EXPECT_CONFIG_ERROR(web(bad), "replicas must be a whole number from 0 to 1000");
}

TEST(FlotillaFile, Healthcheck) {
  auto http = only_service(parse(web("healthcheck: {http: /ready}"), "app/flotilla.yaml")).healthcheck;
  EXPECT_EQ(http.kind, Healthcheck::Kind::http);
  EXPECT_EQ(http.http_path, "/ready");
  EXPECT_EQ(http.interval, 1s);
  EXPECT_EQ(http.timeout, 1s);
  EXPECT_EQ(http.retries, 3);
  EXPECT_EQ(http.start_period, 0s);
  EXPECT_EQ(only_service(parse(web("healthcheck: {tcp: true}"), "app/flotilla.yaml")).healthcheck.kind,
            Healthcheck::Kind::tcp);
  EXPECT_EQ(only_service(parse(web("healthcheck: {disable: true}"), "app/flotilla.yaml")).healthcheck.kind,
            Healthcheck::Kind::none);
  EXPECT_EQ(only_service(parse(web("healthcheck: {disable: false}"), "app/flotilla.yaml")).healthcheck.kind,
            Healthcheck::Kind::tcp);
  EXPECT_EQ(only_service(parse(web("healthcheck: {http: /h, disable: false}"), "app/flotilla.yaml")).healthcheck.kind,
            Healthcheck::Kind::http);
  auto timing = only_service(parse(web("healthcheck: {interval: 250ms, timeout: 100ms, retries: 1, start_period: 1m}"),
                                   "app/flotilla.yaml"))
                    .healthcheck;
  EXPECT_EQ(timing.kind, Healthcheck::Kind::tcp);
  EXPECT_EQ(timing.interval, 250ms);
  EXPECT_EQ(timing.timeout, 100ms);
  EXPECT_EQ(timing.retries, 1);
  EXPECT_EQ(timing.start_period, 60s);
  EXPECT_EQ(only_service(parse(web("healthcheck: {retries: 100, start_period: 0s}"), "app/flotilla.yaml")).healthcheck.retries, 100);

  EXPECT_CONFIG_ERROR(web("healthcheck: {http: /h, tcp: true}"), "give http or tcp, not both");
  EXPECT_CONFIG_ERROR(web("healthcheck: {http: /h, disable: true}"), "disable cannot go with http or tcp");
  EXPECT_CONFIG_ERROR(web("healthcheck: {tcp: true, disable: true}"), "disable cannot go with http or tcp");
  EXPECT_CONFIG_ERROR(web("healthcheck: {tcp: false}"), "use disable: true to turn checks off");
  EXPECT_CONFIG_ERROR(web("healthcheck: {tcp: maybe}"), "healthcheck.tcp must be true or false");
  EXPECT_CONFIG_ERROR(web("healthcheck: {disable: 1}"), "healthcheck.disable must be true or false");
  EXPECT_CONFIG_ERROR(web("healthcheck: {http: healthz}"), "healthcheck.http must be a path such as /healthz");
  EXPECT_CONFIG_ERROR(web("healthcheck: {http: ''}"), "healthcheck.http must be a path");
  EXPECT_CONFIG_ERROR(web("healthcheck: {interval: 0s}"), "healthcheck.interval must be above 0");
  EXPECT_CONFIG_ERROR(web("healthcheck: {timeout: 0ms}"), "healthcheck.timeout must be above 0");
  EXPECT_CONFIG_ERROR(web("healthcheck: {interval: 5}"), "healthcheck.interval must be a duration");
  EXPECT_CONFIG_ERROR(web("healthcheck: {timeout: -1s}"), "healthcheck.timeout must be a duration");
  EXPECT_CONFIG_ERROR(web("healthcheck: {start_period: soon}"), "healthcheck.start_period must be a duration");
  EXPECT_CONFIG_ERROR(web("healthcheck: {retries: 0}"), "healthcheck.retries must be a whole number from 1 to 100");
  EXPECT_CONFIG_ERROR(web("healthcheck: {retries: 101}"), "from 1 to 100");
  EXPECT_CONFIG_ERROR(web("healthcheck: {test: [CMD, true]}"),
                      "unknown key \"test\" in services.web.healthcheck (known: http, tcp, disable, interval, timeout, "
                      "retries, start_period)");
  EXPECT_CONFIG_ERROR(web("healthcheck: /healthz"), "healthcheck must be a mapping");
}

TEST(FlotillaFile, RestartStopSignalAndGracePeriod) {
  for (const char* v : {"always", "on-failure", "no"})
    EXPECT_EQ(only_service(parse(web(std::string("restart: ") + v), "app/flotilla.yaml")).restart, v);
  const std::pair<const char*, const char*> spelled[] = {
      {"Always", "always"}, {"ON-FAILURE", "on-failure"}, {"No", "no"}, {"\"NO\"", "no"}, {"off", "no"}, {"False", "no"}};
  for (const auto& [written, meant] : spelled)
    EXPECT_EQ(only_service(parse(web(std::string("restart: ") + written), "app/flotilla.yaml")).restart, meant) << written;
  EXPECT_CONFIG_ERROR(web("restart: unless-stopped"), "restart must be always, on-failure or no");
  EXPECT_CONFIG_ERROR(web("restart: yes"), "restart must be always, on-failure or no");
  EXPECT_CONFIG_ERROR(web("restart: [always]"), "restart must be a string");

  const std::pair<const char*, const char*> signals[] = {{"TERM", "SIGTERM"}, {"SIGTERM", "SIGTERM"}, {"INT", "SIGINT"},
                                                         {"SIGQUIT", "SIGQUIT"}, {"HUP", "SIGHUP"},   {"USR1", "SIGUSR1"},
                                                         {"SIGUSR2", "SIGUSR2"}, {"KILL", "SIGKILL"}, {"WINCH", "SIGWINCH"}};
  for (const auto& [given, want] : signals)
    EXPECT_EQ(only_service(parse(web(std::string("stop_signal: ") + given), "app/flotilla.yaml")).stop_signal, want) << given;
  for (const char* bad : {"SIGFOO", "term", "SIG", "15", "SIGSTOP"})
    EXPECT_CONFIG_ERROR(web(std::string("stop_signal: ") + bad), "stop_signal must be SIGTERM, SIGINT");

  EXPECT_EQ(only_service(parse(web("stop_grace_period: 1m30s"), "app/flotilla.yaml")).stop_grace_period, 90s);
  EXPECT_EQ(only_service(parse(web("stop_grace_period: 0s"), "app/flotilla.yaml")).stop_grace_period, 0s);
  EXPECT_CONFIG_ERROR(web("stop_grace_period: 10"), "stop_grace_period must be a duration");
  EXPECT_CONFIG_ERROR(web("stop_grace_period: -5s"), "stop_grace_period must be a duration");
}

TEST(FlotillaFile, DependsOnListAndMap) {
  auto f = parse(R"(name: s
services:
  db: {command: [db]}
  cache: {command: [cache]}
  queue: {command: [queue]}
  api:
    command: [api]
    depends_on:
      db: {condition: service_healthy}
      cache:
      queue: {condition: service_started}
  web:
    command: [web]
    depends_on: [api, cache]
)",
                 "app/flotilla.yaml");
  const auto* api = f.service("api");
  ASSERT_NE(api, nullptr);
  ASSERT_EQ(api->depends_on.size(), 3u);
  EXPECT_EQ(api->depends_on[0].service, "db");
  EXPECT_EQ(api->depends_on[0].condition, "service_healthy");
  EXPECT_EQ(api->depends_on[0].line, 9);
  EXPECT_EQ(api->depends_on[1].service, "cache");
  EXPECT_EQ(api->depends_on[1].condition, "service_started") << "the default";
  EXPECT_EQ(api->depends_on[2].condition, "service_started");
  const auto* w = f.service("web");
  ASSERT_EQ(w->depends_on.size(), 2u);
  EXPECT_EQ(w->depends_on[0].service, "api");
  EXPECT_EQ(w->depends_on[0].condition, "service_started");
  EXPECT_EQ(w->depends_on[1].service, "cache");
  EXPECT_EQ(w->depends_on[1].line, 14);

  EXPECT_CONFIG_ERROR("name: s\nservices:\n  db: {command: x}\n  web: {command: x, depends_on: {db: {condition: ready}}}\n",
                      "services.web.depends_on.db.condition must be service_started, service_healthy or "
                      "service_completed_successfully");
  // A one-shot job, waited for until it exits 0.
  auto job = parse("name: s\nservices:\n  migrate: {command: x, restart: \"no\", port: none}\n"
                   "  web: {command: x, depends_on: {migrate: {condition: service_completed_successfully}}}\n",
                   "app/flotilla.yaml");
  EXPECT_EQ(job.service("web")->depends_on[0].condition, "service_completed_successfully");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  db: {command: x}\n  web: {command: x, depends_on: {db: {restart: true}}}\n",
                      "unknown key \"restart\" in services.web.depends_on.db (known: condition)");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  db: {command: x}\n  web: {command: x, depends_on: db}\n",
                      "depends_on must be a list of services or a mapping");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  db: {command: x}\n  web: {command: x, depends_on: [[db]]}\n",
                      "depends_on entries must be a string");
}

TEST(FlotillaFile, DependencyErrors) {
  EXPECT_EQ(error_of("name: s\nservices:\n  web:\n    command: x\n    depends_on: [db]\n"),
            "app/flotilla.yaml:5:17: services.web.depends_on: no service \"db\" in this file");
  EXPECT_EQ(error_of("name: s\nservices:\n  db: {load_balancer: random}\n  web:\n    command: x\n    depends_on: [db]\n"),
            "app/flotilla.yaml:6:17: services.web.depends_on: \"db\" has no command, so flotilla does not run it");
  EXPECT_EQ(error_of("name: s\nservices:\n  web:\n    command: x\n    depends_on: [web]\n"),
            "app/flotilla.yaml:5:17: services.web.depends_on names the service itself");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  web:\n    command: x\n    depends_on: {web: {condition: service_healthy}}\n",
                      "names the service itself");
  // Restarted whatever its exit, it never completes: the dependent would wait for ever.
  EXPECT_EQ(error_of("name: s\nservices:\n  db: {command: x}\n  web:\n    command: x\n"
                     "    depends_on: {db: {condition: service_completed_successfully}}\n"),
            "app/flotilla.yaml:6:17: services.web.depends_on: \"db\" has restart: always, so it never completes; "
            "give it restart: on-failure or no");
}

TEST(FlotillaFile, DependencyCycleShowsItsPath) {
  EXPECT_EQ(error_of(R"(name: s
services:
  a: {command: x, depends_on: [b]}
  b: {command: x, depends_on: [c]}
  c: {command: x, depends_on: [a]}
)"),
            "app/flotilla.yaml:3:3: depends_on has a cycle: a -> b -> c -> a");
  // Reached from a service outside it, the path shows only the cycle.
  EXPECT_EQ(error_of(R"(name: s
services:
  web: {command: x, depends_on: [b]}
  a: {command: x, depends_on: [b]}
  b: {command: x, depends_on: [a]}
)"),
            "app/flotilla.yaml:3:3: depends_on has a cycle: b -> a -> b");
  EXPECT_CONFIG_ERROR("name: s\nservices:\n  a: {command: x, depends_on: [b]}\n  b: {command: x, depends_on: [a]}\n",
                      "depends_on has a cycle: a -> b -> a");
}

TEST(FlotillaFile, StartOrderPutsDependenciesFirst) {
  auto f = parse(R"(name: s
gateway:
  routes:
    - service: gateway-only
services:
  web: {command: x, depends_on: [api]}
  gateway-only: {load_balancer: random}
  worker: {command: x}
  api: {command: x, depends_on: {db: {condition: service_healthy}, cache: }}
  cache: {command: x}
  db: {command: x}
  admin: {command: x, depends_on: [db]}
)",
                 "app/flotilla.yaml");
  std::vector<std::string> names;
  for (const auto* s : f.start_order()) names.push_back(s->name);
  EXPECT_EQ(names, (std::vector<std::string>{"db", "cache", "api", "web", "worker", "admin"}))
      << "each after what it depends on, otherwise in file order; services without a command left out";
  auto plain = parse("name: s\nservices:\n  c: {command: x}\n  a: {command: x}\n  b: {command: x}\n", "app/flotilla.yaml");
  names.clear();
  for (const auto* s : plain.start_order()) names.push_back(s->name);
  EXPECT_EQ(names, (std::vector<std::string>{"c", "a", "b"}));
}

TEST(FlotillaFile, MemoryAndCpus) {
  const std::pair<const char*, uint64_t> sizes[] = {{"256MiB", 256ull << 20}, {"512m", 512ull << 20}, {"1G", 1ull << 30},
                                                    {"2GiB", 2ull << 30},     {"4MiB", 4ull << 20},   {"8192KiB", 8ull << 20},
                                                    {"4194304", 4ull << 20},  {"100MB", 100ull << 20}};
  for (const auto& [text, bytes] : sizes)
    EXPECT_EQ(only_service(parse(web(std::string("memory: ") + text), "app/flotilla.yaml")).memory_bytes, bytes) << text;
  for (const char* bad : {"3MiB", "4194303", "lots", "1.5G", "-1G", "256 MiB", "10T", "0"})
    EXPECT_CONFIG_ERROR(web(std::string("memory: ") + bad), "memory must be a size of at least 4MiB");

  EXPECT_DOUBLE_EQ(only_service(parse(web("cpus: 0.5"), "app/flotilla.yaml")).cpus, 0.5);
  EXPECT_DOUBLE_EQ(only_service(parse(web("cpus: 2"), "app/flotilla.yaml")).cpus, 2);
  EXPECT_DOUBLE_EQ(only_service(parse(web("cpus: 0.01"), "app/flotilla.yaml")).cpus, 0.01);
  EXPECT_CONFIG_ERROR(web("cpus: 0.001"), "cpus must be at least 0.01");
  EXPECT_CONFIG_ERROR(web("cpus: 0"), "cpus must be at least 0.01");
  EXPECT_CONFIG_ERROR(web("cpus: -1"), "cpus must be a number");
  EXPECT_CONFIG_ERROR(web("cpus: half"), "cpus must be a number");
}

TEST(FlotillaFile, Autoscale) {
  auto s = only_service(parse(web("autoscale: {min: 2, max: 8, target: {rps_per_instance: 200}}"), "app/flotilla.yaml"));
  ASSERT_TRUE(s.autoscale);
  EXPECT_EQ(*s.autoscale, (Autoscale{2, 8, "rps_per_instance", 200}));
  EXPECT_EQ(s.replicas, 2) << "replicas default to min";
  for (const char* metric : {"rps_per_instance", "p95_ms", "cpu_percent", "inflight"}) {
    auto a = only_service(parse(web(std::string("autoscale: {min: 1, max: 3, target: {") + metric + ": 0.5}}"), "app/flotilla.yaml"));
    EXPECT_EQ(a.autoscale->metric, metric);
    EXPECT_DOUBLE_EQ(a.autoscale->target, 0.5);
  }
  EXPECT_EQ(only_service(parse(web("replicas: 4, autoscale: {min: 2, max: 8, target: {inflight: 10}}"), "app/flotilla.yaml")).replicas,
            4)
      << "an explicit replicas is kept";
  auto zero = only_service(parse(web("autoscale: {min: 0, max: 1, target: {inflight: 1}}"), "app/flotilla.yaml"));
  EXPECT_EQ(zero.replicas, 0);
  EXPECT_EQ(only_service(parse(web("autoscale: {min: 3, max: 3, target: {inflight: 1}}"), "app/flotilla.yaml")).autoscale->max, 3);

  EXPECT_CONFIG_ERROR(web("autoscale: {max: 8, target: {inflight: 1}}"), "autoscale needs min, max and target");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, target: {inflight: 1}}"), "autoscale needs min, max and target");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8}"), "autoscale needs min, max and target");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 4, max: 2, target: {inflight: 1}}"), "autoscale.max must be at least min");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: -1, max: 2, target: {inflight: 1}}"), "autoscale.min must be a whole number from 0 to 1000");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 0, max: 0, target: {inflight: 1}}"), "autoscale.max must be a whole number from 1 to 1000");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 1001, target: {inflight: 1}}"), "from 1 to 1000");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8, target: {inflight: 1, p95_ms: 100}}"),
                      "autoscale.target takes exactly one of rps_per_instance, p95_ms, cpu_percent, inflight");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8, target: {}}"), "takes exactly one of");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8, target: {memory: 1}}"), "unknown key \"memory\" in services.web.autoscale.target");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8, target: 200}"), "autoscale.target must be a mapping");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8, target: {inflight: 0}}"), "autoscale.target.inflight must be above 0");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8, target: {inflight: -3}}"), "autoscale.target.inflight must be a number");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8, target: {inflight: many}}"), "autoscale.target.inflight must be a number");
  EXPECT_CONFIG_ERROR(web("autoscale: {min: 1, max: 8, target: {inflight: 1}, cooldown: 1m}"),
                      "unknown key \"cooldown\" in services.web.autoscale (known: min, max, target, scale_down_window)");
}

TEST(FlotillaFile, Deploy) {
  auto s = only_service(parse(web("deploy: {healthy_timeout: 2m}"), "app/flotilla.yaml"));
  EXPECT_EQ(s.deploy.healthy_timeout, 120s);
  EXPECT_FALSE(s.deploy.canary_analysis);
  auto defaults = only_service(parse(web("deploy: {canary: {analysis: {}}}"), "app/flotilla.yaml"));
  ASSERT_TRUE(defaults.deploy.canary_analysis);
  EXPECT_EQ(*defaults.deploy.canary_analysis, CanaryAnalysis{});
  EXPECT_EQ(defaults.deploy.healthy_timeout, 60s);
  auto full = only_service(parse(R"(name: s
services:
  web:
    command: x
    deploy:
      healthy_timeout: 45s
      canary:
        analysis: { interval: 30s, iterations: 3, max_error_ratio_increase: 0.05, max_p95_ratio: 2.5, min_requests: 100 }
)",
                                 "app/flotilla.yaml"));
  ASSERT_TRUE(full.deploy.canary_analysis);
  const auto& a = *full.deploy.canary_analysis;
  EXPECT_EQ(a.interval, 30s);
  EXPECT_EQ(a.iterations, 3);
  EXPECT_DOUBLE_EQ(a.max_error_ratio_increase, 0.05);
  EXPECT_DOUBLE_EQ(a.max_p95_ratio, 2.5);
  EXPECT_EQ(a.min_requests, 100);
  EXPECT_EQ(full.deploy.healthy_timeout, 45s);
  // The bounds themselves are accepted.
  auto edges = only_service(parse(web("deploy: {canary: {analysis: {interval: 1s, iterations: 1, max_error_ratio_increase: 0, "
                                      "max_p95_ratio: 1, min_requests: 1}}}"),
                                  "app/flotilla.yaml"));
  EXPECT_EQ(edges.deploy.canary_analysis->interval, 1s);
  EXPECT_EQ(edges.deploy.canary_analysis->max_error_ratio_increase, 0);
  EXPECT_EQ(edges.deploy.canary_analysis->max_p95_ratio, 1);
  auto upper = only_service(parse(web("deploy: {canary: {analysis: {iterations: 1000, max_error_ratio_increase: 1, min_requests: 1000000}}}"),
                                  "app/flotilla.yaml"));
  EXPECT_EQ(upper.deploy.canary_analysis->iterations, 1000);

  EXPECT_CONFIG_ERROR(web("deploy: {healthy_timeout: 0s}"), "deploy.healthy_timeout must be above 0");
  EXPECT_CONFIG_ERROR(web("deploy: {healthy_timeout: 60}"), "deploy.healthy_timeout must be a duration");
  EXPECT_CONFIG_ERROR(web("deploy: {strategy: canary}"), "unknown key \"strategy\" in services.web.deploy (known: healthy_timeout, canary)");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {weight: 10}}"), "unknown key \"weight\" in services.web.deploy.canary (known: analysis)");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {analysis: {interval: 999ms}}}"), "deploy.canary.analysis.interval must be at least 1s");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {analysis: {iterations: 0}}}"),
                      "deploy.canary.analysis.iterations must be a whole number from 1 to 1000");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {analysis: {iterations: 1001}}}"), "from 1 to 1000");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {analysis: {max_error_ratio_increase: 1.5}}}"),
                      "max_error_ratio_increase is a ratio from 0 to 1");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {analysis: {max_error_ratio_increase: -0.1}}}"),
                      "max_error_ratio_increase must be a number");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {analysis: {max_p95_ratio: 0.9}}}"), "max_p95_ratio must be a number of at least 1");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {analysis: {min_requests: 0}}}"),
                      "min_requests must be a whole number from 1 to 1000000");
  EXPECT_CONFIG_ERROR(web("deploy: {canary: {analysis: {threshold: 5}}}"),
                      "unknown key \"threshold\" in services.web.deploy.canary.analysis (known: interval, iterations, "
                      "max_error_ratio_increase, max_p95_ratio, min_requests)");
}

TEST(FlotillaFile, SupervisorKeysNeedACommand) {
  TempDir d;  // working_dir and env_file must exist, so the only fault is the missing command
  d.write(".env", "A=1\n");
  const char* keys[] = {"working_dir: .",
                        "environment: {A: b}",
                        "env_file: .env",
                        "port: 8080",
                        "replicas: 2",
                        "healthcheck: {http: /h}",
                        "restart: always",
                        "stop_signal: TERM",
                        "stop_grace_period: 5s",
                        "depends_on: [db]",
                        "memory: 64MiB",
                        "cpus: 1",
                        "autoscale: {min: 1, max: 2, target: {inflight: 4}}",
                        "deploy: {healthy_timeout: 10s}"};
  for (const char* key : keys) {
    std::string error;
    d.load(std::string("name: s\nservices:\n  db: {command: x}\n  web: {") + key + "}\n", &error);
    std::string name = std::string(key).substr(0, std::string(key).find(':'));
    // Reported at the key's value.
    auto col = 9 + name.size() + 2;  // "  web: {" then "KEY: "
    EXPECT_EQ(error, d.path() + "/flotilla.yaml:4:" + std::to_string(col) + ": services.web." + name +
                         " needs a command: flotilla runs only services that have one");
  }
}

TEST(FlotillaFile, UnknownServiceKeyListsTheKnownOnes) {
  EXPECT_EQ(error_of(web("comand: x")),
            "app/flotilla.yaml:3:25: unknown key \"comand\" in services.web (known: load_balancer, hash_on, "
            "circuit_breaker, outlier_detection, command, working_dir, environment, env_file, port, replicas, "
            "healthcheck, restart, stop_signal, stop_grace_period, depends_on, memory, cpus, autoscale, deploy)");
  EXPECT_CONFIG_ERROR(web("image: nginx"), "unknown key \"image\" in services.web");
  EXPECT_CONFIG_ERROR(web("command: y"), "duplicate key \"command\" in services.web");
}

TEST(FlotillaFile, EverySupervisorErrorIsPositioned) {
  const char* bad[] = {
      "command: {}",  "working_dir: /nonexistent/dir", "env_file: /nonexistent.env", "environment: 5",
      "port: -1",     "replicas: x",                   "healthcheck: {http: x}",      "restart: x",
      "stop_signal: x", "stop_grace_period: x",        "depends_on: [nothere]",       "memory: x",
      "cpus: x",      "autoscale: {}",                 "deploy: {healthy_timeout: x}", "deploy: {canary: x}",
  };
  for (const char* b : bad) {
    auto e = error_of(web(b));
    EXPECT_TRUE(positioned(e)) << b << " -> " << e;
    std::string key(b, std::strchr(b, ':'));
    EXPECT_NE(e.find(key), std::string::npos) << b << " -> " << e;
  }
}

TEST(FlotillaFile, WarnsOfARouteAnEarlierRouteCovers) {
  auto shadowed = [](const std::string& first, const std::string& second) {
    auto w = warnings(parse("name: s\ngateway:\n  routes:\n    - {service: a, " + first + "}\n    - {service: b, " +
                                second + "}\n",
                            "f.yaml"));
    return !w.empty() && w[0].find("never gets a request: the route on line 4") != std::string::npos;
  };
  EXPECT_TRUE(shadowed("name: all", "match: {path_prefix: /api}"));
  EXPECT_EQ(warnings(parse("name: s\ngateway:\n  routes:\n    - {service: a}\n    - {service: b, match: {path: /x}}\n",
                           "f.yaml"))[0],
            "f.yaml:5: this route never gets a request: the route on line 4 matches every request it would, and "
            "routes are tried in order (put the more specific one first)");
  EXPECT_TRUE(shadowed("match: {path_prefix: /api}", "match: {path_prefix: /api/v2}"));
  EXPECT_TRUE(shadowed("match: {path_prefix: /api/}", "match: {path: /api/x}"));
  EXPECT_TRUE(shadowed("match: {path: /x}", "match: {path: /x, methods: [GET]}"));
  EXPECT_TRUE(shadowed("match: {host: '*.example.com'}", "match: {host: shop.example.com, path: /x}"));
  EXPECT_TRUE(shadowed("match: {methods: [GET, POST]}", "match: {methods: [GET]}"));
  EXPECT_TRUE(shadowed("match: {headers: {x-env: prod}}", "match: {headers: {x-env: prod, x-team: a}}"));
  // The first is narrower in some way: the second gets what the first does not match.
  EXPECT_FALSE(shadowed("match: {path_prefix: /api}", "match: {path_prefix: /apix}"));
  EXPECT_FALSE(shadowed("match: {path_prefix: /api/}", "match: {path_prefix: /api}"));
  EXPECT_FALSE(shadowed("match: {path: /api}", "match: {path_prefix: /api}"));
  EXPECT_FALSE(shadowed("match: {host: shop.example.com}", "match: {host: '*.example.com'}"));
  EXPECT_FALSE(shadowed("match: {host: '*.example.com'}", "match: {host: example.com}"));
  EXPECT_FALSE(shadowed("match: {methods: [GET]}", "name: other"));
  EXPECT_FALSE(shadowed("match: {headers: {x-env: prod}}", "name: other"));
  EXPECT_FALSE(shadowed("match: {headers: {x-env: prod}}", "match: {headers: {x-env: dev}}"));
}

TEST(FlotillaFile, WarnsOfAHashPolicyWithoutAKey) {
  auto w = warnings(parse("name: s\ngateway:\n  routes:\n    - service: web\nservices:\n  web:\n"
                          "    load_balancer: ring_hash\n",
                          "f.yaml"));
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0].find("services.web: load_balancer ring_hash without hash_on has no key to hash"), std::string::npos)
      << w[0];
  EXPECT_TRUE(warnings(parse("name: s\ngateway:\n  routes:\n    - service: web\nservices:\n  web:\n"
                             "    {load_balancer: maglev, hash_on: client_ip}\n",
                             "f.yaml"))
                  .empty());
}

TEST(FlotillaFile, WarnsOfARouteToAServiceTheFileDoesNotRun) {
  const std::string head =
      "name: shop\ngateway:\n  routes:\n    - {service: webb, match: {path_prefix: /b}}\n    - service: web\n";
  auto f = parse(head + "services:\n  web:\n    command: [a]\n", "app/flotilla.yaml");
  auto w = warnings(f);
  ASSERT_EQ(w.size(), 1u);
  EXPECT_EQ(w[0], "app/flotilla.yaml:4: the route's service \"webb\" is not one this file runs (did you mean "
                  "\"web\"?); the route answers 503 whenever no instance of \"webb\" is registered through the API");
  // No suggestion far from every name; none at all for a file that runs no service (its routes
  // go to services registered through the API).
  EXPECT_EQ(warnings(parse("name: shop\ngateway:\n  routes:\n    - service: catalogue\nservices:\n  web:\n    command: [a]\n",
                           "f.yaml"))[0]
                .find("did you mean"),
            std::string::npos);
  EXPECT_TRUE(warnings(parse(head, "f.yaml")).empty());
  // Nor for one whose services only carry the gateway's settings for registered services.
  EXPECT_TRUE(warnings(parse(head + "services:\n  web: {load_balancer: random}\n", "f.yaml")).empty());
}

TEST(FlotillaFile, GatewayTrustedProxies) {
  auto f = parse("name: s\ngateway:\n  trusted_proxies: [10.0.0.0/8, 192.0.2.7, 'fd00::/8', '::1']\n",
                 "app/flotilla.yaml");
  ASSERT_TRUE(f.gateway);
  EXPECT_EQ(f.gateway->trusted_proxies, (std::vector<std::string>{"10.0.0.0/8", "192.0.2.7", "fd00::/8", "::1"}));
  EXPECT_TRUE(parse("name: s\ngateway: {}\n", "app/flotilla.yaml").gateway->trusted_proxies.empty());
  struct Bad {
    const char* text;
    const char* says;
  };
  const Bad bad[] = {
      {"name: s\ngateway:\n  trusted_proxies: 10.0.0.0/8\n", "must be a list of addresses or CIDR blocks"},
      {"name: s\ngateway:\n  trusted_proxies: [10.0.0.0/33]\n", "\"10.0.0.0/33\" is not an IP address or CIDR block"},
      {"name: s\ngateway:\n  trusted_proxies: [lb.internal]\n", "\"lb.internal\" is not an IP address"},
      {"name: s\ngateway:\n  trusted_proxies: ['10.0.0.1:8080']\n", "no port"},
      {"name: s\ngateway:\n  trusted_proxies: [10.0.0.0/8, '']\n", "\"\" is not an IP address"},
      {"name: s\ngateway:\n  trusted_proxies: [{a: 1}]\n", "trusted_proxies"},
  };
  for (const auto& b : bad) {
    auto e = error_of(b.text);
    EXPECT_NE(e.find(b.says), std::string::npos) << b.text << "\n" << e;
    EXPECT_EQ(e.rfind("app/flotilla.yaml:", 0), 0u) << e;
  }
  // Valid but probably not meant: warned about, with the entry's line.
  auto w = warnings(parse("name: s\ngateway:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - 0.0.0.0/0\n"
                          "    - 10.1.2.3/8\n    - '::/0'\n", "app/flotilla.yaml"));
  ASSERT_EQ(w.size(), 3u) << ::testing::PrintToString(w);
  EXPECT_EQ(w[0], "app/flotilla.yaml:5: gateway.trusted_proxies: 0.0.0.0/0 trusts every IPv4 client: any of them "
                  "can choose the address its rate limit counts and claim https");
  EXPECT_EQ(w[1], "app/flotilla.yaml:6: gateway.trusted_proxies: 10.1.2.3/8 has bits set past its prefix, so it is "
                  "10.0.0.0/8 (for the one address, write 10.1.2.3)");
  EXPECT_NE(w[2].find("app/flotilla.yaml:7: gateway.trusted_proxies: ::/0 trusts every IPv6 client"), std::string::npos);
}
