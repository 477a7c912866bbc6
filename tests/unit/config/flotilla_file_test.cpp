#include "config/flotilla_file.h"

#include <gtest/gtest.h>

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
      service: catalog
      strip_prefix: true
      timeout: 5s
      retry: { attempts: 3, on: [connect-failure, "503"], per_try_timeout: 1s }
      rate_limit: { requests_per_second: 100, burst: 200, key: "header:x-user" }
      max_body: 10MiB
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
  EXPECT_EQ(r.match.host, "*.example.com");
  EXPECT_EQ(r.match.methods, (std::vector<std::string>{"GET", "HEAD"}));
  EXPECT_EQ(r.match.headers[0], (std::pair<std::string, std::string>{"x-env", "prod"}));
  EXPECT_TRUE(r.strip_prefix);
  EXPECT_EQ(r.timeout, 5s);
  ASSERT_TRUE(r.retry);
  EXPECT_EQ(r.retry->attempts, 3);
  EXPECT_EQ(r.retry->per_try_timeout, 1s);
  ASSERT_TRUE(r.rate_limit);
  EXPECT_EQ(r.rate_limit->burst, 200);
  EXPECT_EQ(r.rate_limit->key, "header:x-user");
  EXPECT_EQ(r.max_body_bytes, 10u * 1024 * 1024);
  EXPECT_EQ(r.line, 10);
  EXPECT_EQ(f.gateway->routes[1].timeout, 15s) << "the default route timeout";
  EXPECT_FALSE(f.gateway->routes[1].retry);
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
            "app/flotilla.yaml:3:8: agent.api must be HOST:PORT, such as 127.0.0.1:8080");
  EXPECT_EQ(error_of("name: [unclosed\n").rfind("app/flotilla.yaml:", 0), 0u);
  EXPECT_NE(error_of("name: [unclosed\n").find("not valid YAML"), std::string::npos);
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
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {burst: 5}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: 0}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, rate_limit: {requests_per_second: 5, key: user}}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, max_body: lots}\n",
      "name: s\ngateway:\n  routes:\n    - {service: 'w/x'}\n",
      "name: s\ngateway:\n  routes:\n    - {service: w, colour: blue}\n",      // unknown route key
      "name: s\nagent:\n  store: etcd://127.0.0.1:2379\n",                       // not yet
      "name: s\nservices:\n  web: {command: [x]}\n",                              // not yet
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

TEST(FlotillaFile, BadGatewayServiceKeys) {
  const char* bad[] = {
      "name: s\nservices:\n  web: {load_balancer: fastest}\n",
      "name: s\nservices:\n  web: {load_balancer: ring_hash, hash_on: body}\n",
      "name: s\nservices:\n  web: {hash_on: client_ip}\n",  // hash_on without a hash policy
      "name: s\nservices:\n  web: {circuit_breaker: {max_requests: 0}}\n",
      "name: s\nservices:\n  web: {circuit_breaker: {max_calls: 3}}\n",
      "name: s\nservices:\n  web: {outlier_detection: {max_ejection_percent: 101}}\n",
      "name: s\nservices:\n  web: {outlier_detection: {base_ejection_time: 1m, max_ejection_time: 10s}}\n",
      "name: s\nservices:\n  web: {replicas: 2}\n",  // supervisor keys: not yet
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
