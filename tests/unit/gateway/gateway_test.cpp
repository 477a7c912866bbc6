// Gateway::reconfigure: what a new version of flotilla.yaml changes in a running gateway, and what
// it leaves to a restart. (Traffic through reconfigured routes: tests/integration/test_gateway_reload.py.)
#include "gateway/gateway.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/metrics.h"
#include "config/flotilla_file.h"

namespace flotilla::gateway {
namespace {

const char* kHead = "name: t\n";

config::File file_of(const std::string& body) { return config::parse(std::string(kHead) + body, "flotilla.yaml"); }

const char* kOne =
    "gateway:\n"
    "  listen: [127.0.0.1:0]\n"
    "  workers: 1\n"
    "  routes:\n"
    "    - match: { path_prefix: /web }\n"
    "      service: web\n";

std::vector<std::string> vec(std::initializer_list<const char*> l) { return {l.begin(), l.end()}; }

TEST(GatewayReconfigureTest, TheSameFileChangesNothing) {
  metrics::Registry m;
  Gateway gw(file_of(kOne), m);
  auto c = gw.reconfigure(file_of(kOne));
  EXPECT_FALSE(c.changed());
  EXPECT_FALSE(c.routes_changed);
  EXPECT_EQ(c.routes, 1u);
  EXPECT_TRUE(c.restart_needed.empty());
  EXPECT_EQ(c.summary(), "1 route(s) (unchanged)");
}

TEST(GatewayReconfigureTest, TrustedProxiesChangeWithoutARestart) {
  metrics::Registry m;
  Gateway gw(file_of(kOne), m);
  const std::string with = std::string(kOne) + "  trusted_proxies: [10.0.0.0/8]\n";
  auto c = gw.reconfigure(file_of(with));
  EXPECT_TRUE(c.trusted_proxies_changed);
  EXPECT_TRUE(c.changed());
  EXPECT_FALSE(c.routes_changed);
  EXPECT_TRUE(c.restart_needed.empty());
  EXPECT_EQ(c.summary(), "1 route(s) (unchanged); trusted_proxies changed");
  EXPECT_EQ(c.to_json()["TrustedProxiesChanged"], true);
  EXPECT_FALSE(gw.reconfigure(file_of(with)).changed());
  EXPECT_TRUE(gw.reconfigure(file_of(kOne)).trusted_proxies_changed);
}

TEST(GatewayReconfigureTest, ARouteMovedToAnotherLineIsTheSameRoute) {
  metrics::Registry m;
  Gateway gw(file_of(kOne), m);
  auto c = gw.reconfigure(file_of(std::string("# a comment\n\n") + kOne));
  EXPECT_FALSE(c.routes_changed);
  EXPECT_FALSE(c.changed());
}

TEST(GatewayReconfigureTest, RoutesAndTheServicesTheyUseChange) {
  metrics::Registry m;
  Gateway gw(file_of(kOne), m);
  gw.set_endpoints("web", {{"web-1", "127.0.0.1", 9001, 1}});
  auto c = gw.reconfigure(file_of(
      "gateway:\n"
      "  listen: [127.0.0.1:0]\n"
      "  workers: 1\n"
      "  routes:\n"
      "    - match: { path_prefix: /api }\n"
      "      service: api\n"
      "    - match: { path_prefix: /web }\n"
      "      service: web\n"
      "      timeout: 3s\n"));
  EXPECT_TRUE(c.routes_changed);
  EXPECT_EQ(c.routes, 2u);
  EXPECT_EQ(c.services_added, vec({"api"}));
  EXPECT_TRUE(c.services_removed.empty());
  EXPECT_TRUE(c.services_changed.empty());
  EXPECT_EQ(gw.services(), (std::set<std::string>{"api", "web"}));
  auto st = gw.status();
  ASSERT_TRUE(st["Services"].contains("api"));
  EXPECT_TRUE(st["Services"]["api"]["Endpoints"].empty());  // until the feed sets them
  EXPECT_EQ(st["Services"]["web"]["Endpoints"].size(), 1u);  // web's endpoints were kept
  // The routes in force, in order, with their metrics labels and where they were written.
  ASSERT_EQ(st["Routes"].size(), 2u);
  EXPECT_EQ(st["Routes"][0]["Route"], "0:api");
  EXPECT_EQ(st["Routes"][0]["Match"]["PathPrefix"], "/api");
  EXPECT_EQ(st["Routes"][0]["Line"], 6);
  EXPECT_EQ(st["Routes"][1]["Route"], "1:web");
  EXPECT_EQ(st["Routes"][1]["TimeoutSeconds"], 3.0);

  c = gw.reconfigure(file_of(
      "gateway:\n"
      "  listen: [127.0.0.1:0]\n"
      "  workers: 1\n"
      "  routes:\n"
      "    - service: api\n"));
  EXPECT_TRUE(c.routes_changed);
  EXPECT_EQ(c.services_removed, vec({"web"}));
  EXPECT_TRUE(c.services_added.empty());
  EXPECT_EQ(gw.services(), std::set<std::string>{"api"});
  EXPECT_FALSE(gw.status()["Services"].contains("web"));
  EXPECT_EQ(c.summary(), "1 route(s) (changed); no longer routing to web");
}

TEST(GatewayReconfigureTest, EndpointsSetBeforeARouteUsesTheServiceAreKept) {
  // The feeds follow a newly routed service first, so its route never answers 503 for want of
  // endpoints the registry already has.
  metrics::Registry m;
  Gateway gw(file_of(kOne), m);
  gw.set_endpoints("api", {{"api-1", "127.0.0.1", 9002, 1}});
  EXPECT_FALSE(gw.status()["Services"].contains("api"));  // not routed: not published
  gw.reconfigure(file_of(std::string(kOne) + "    - service: api\n"));
  auto eps = gw.status()["Services"]["api"]["Endpoints"];
  ASSERT_EQ(eps.size(), 1u);
  EXPECT_EQ(eps[0]["Address"], "127.0.0.1:9002");
}

TEST(GatewayReconfigureTest, AServicesGatewayKeysChangeLiveAndItsEndpointStateStays) {
  metrics::Registry m;
  Gateway gw(file_of(kOne), m);
  gw.set_endpoints("web", {{"web-1", "127.0.0.1", 9001, 1}});
  ASSERT_TRUE(gw.endpoint_load("web", "127.0.0.1:9001", "web-1").known);
  auto c = gw.reconfigure(file_of(std::string(kOne) +
                                  "services:\n"
                                  "  web:\n"
                                  "    load_balancer: least_request\n"
                                  "    circuit_breaker: { max_requests: 10 }\n"));
  EXPECT_EQ(c.services_changed, vec({"web"}));
  EXPECT_FALSE(c.routes_changed);
  EXPECT_TRUE(c.changed());
  EXPECT_EQ(gw.status()["Services"]["web"]["LoadBalancer"], "least_request");
  EXPECT_TRUE(gw.endpoint_load("web", "127.0.0.1:9001", "web-1").known);
  // A service section that only a supervisor would read is not a gateway change.
  c = gw.reconfigure(file_of(std::string(kOne) +
                             "services:\n"
                             "  web:\n"
                             "    load_balancer: least_request\n"
                             "    circuit_breaker: { max_requests: 10 }\n"
                             "    command: [\"/bin/true\"]\n"));
  EXPECT_FALSE(c.changed());
}

// An instance's state is per service, address and instance ID. One that left the endpoints stays
// known by its ID for a while (the supervisor waits for a draining instance's in-flight requests
// through it); another instance at its address is another state.
TEST(GatewayEndpointStateTest, ADepartedInstanceStaysKnownByItsIdAndAnotherAtItsAddressStartsAfresh) {
  metrics::Registry m;
  Gateway gw(file_of(kOne), m);
  gw.set_endpoints("web", {{"web-1", "127.0.0.1", 9001, 1}});
  EXPECT_TRUE(gw.endpoint_load("web", "127.0.0.1:9001", "web-1").known);
  EXPECT_FALSE(gw.endpoint_load("web", "127.0.0.1:9001", "web-2").known);

  gw.set_endpoints("web", {});
  EXPECT_TRUE(gw.status()["Services"]["web"]["Endpoints"].empty());
  EXPECT_TRUE(gw.endpoint_load("web", "127.0.0.1:9001", "web-1").known);

  gw.set_endpoints("web", {{"web-2", "127.0.0.1", 9001, 1}});
  EXPECT_TRUE(gw.endpoint_load("web", "127.0.0.1:9001", "web-2").known);
  EXPECT_TRUE(gw.endpoint_load("web", "127.0.0.1:9001", "web-1").known);  // its own, departed
  EXPECT_FALSE(gw.endpoint_load("web", "127.0.0.1:9002", "web-2").known);
  // Two registrations sharing an address are two endpoints, each with its state.
  gw.set_endpoints("web", {{"web-1", "127.0.0.1", 9001, 1}, {"web-2", "127.0.0.1", 9001, 1}});
  auto eps = gw.status()["Services"]["web"]["Endpoints"];
  ASSERT_EQ(eps.size(), 2u);
  EXPECT_TRUE(gw.endpoint_load("web", "127.0.0.1:9001", "web-1").known);
  EXPECT_TRUE(gw.endpoint_load("web", "127.0.0.1:9001", "web-2").known);
}

TEST(GatewayReconfigureTest, KeysOnlyARestartChangesKeepTheirRunningValues) {
  metrics::Registry m;
  Gateway gw(file_of(kOne), m);
  auto c = gw.reconfigure(file_of(
      "gateway:\n"
      "  listen: [127.0.0.1:0, 127.0.0.1:0]\n"
      "  workers: 3\n"
      "  max_connections: 10\n"
      "  access_log: stderr\n"
      "  timeouts: { idle: 5s }\n"
      "  routes:\n"
      "    - match: { path_prefix: /web }\n"
      "      service: web\n"));
  EXPECT_EQ(c.restart_needed, vec({"gateway.listen", "gateway.workers", "gateway.max_connections",
                                   "gateway.access_log", "gateway.timeouts"}));
  EXPECT_FALSE(c.changed());
  EXPECT_EQ(gw.workers(), 1);
  // Applying the running file again reports nothing: the values kept are the running ones.
  c = gw.reconfigure(file_of(kOne));
  EXPECT_TRUE(c.restart_needed.empty());
  auto j = c.to_json();
  EXPECT_EQ(j["Routes"], 1);
  EXPECT_EQ(j["RoutesChanged"], false);
  EXPECT_TRUE(j["RestartNeeded"].empty());
}

TEST(GatewayReconfigureTest, ARelativeAccessLogIsTheSameFileGivenAnAbsolutePath) {
  // The agent starts with `-f flotilla.yaml`; `flotilla up` again sends the file's absolute path.
  char dir_template[] = "/tmp/flotilla-gw-test-XXXXXX";
  ASSERT_NE(::mkdtemp(dir_template), nullptr);
  const auto old_cwd = std::filesystem::current_path();
  std::filesystem::current_path(dir_template);
  {
    const std::string body = std::string(kOne) + "  access_log: access.jsonl\n";
    metrics::Registry m;
    Gateway gw(config::parse(std::string(kHead) + body, "flotilla.yaml"), m);
    auto c = gw.reconfigure(config::parse(std::string(kHead) + body, std::string(dir_template) + "/flotilla.yaml"));
    EXPECT_TRUE(c.restart_needed.empty()) << c.summary();
    c = gw.reconfigure(config::parse(std::string(kHead) + std::string(kOne) + "  access_log: other.jsonl\n",
                                     std::string(dir_template) + "/flotilla.yaml"));
    EXPECT_EQ(c.restart_needed, vec({"gateway.access_log"}));
  }
  std::filesystem::current_path(old_cwd);
  std::filesystem::remove_all(dir_template);
}

TEST(GatewayReconfigureTest, AServiceListenerJoinsOnceOpened) {
  metrics::Registry m;
  config::File f = file_of(kOne);
  f.gateway->service_listeners = {"db"};
  Gateway gw(f, m);
  EXPECT_EQ(gw.services(), (std::set<std::string>{"db", "web"}));
  config::File next = file_of(kOne);
  next.gateway->service_listeners = {"cache", "db"};
  // Not opened (the agent opens it before the services change): it cannot take effect.
  auto c = gw.reconfigure(next);
  EXPECT_EQ(c.restart_needed, vec({"depends_on: cache (its own gateway listener)"}));
  EXPECT_FALSE(c.routes_changed);  // db's listener route stays in front, as it was
  EXPECT_EQ(gw.services(), (std::set<std::string>{"db", "web"}));
  EXPECT_EQ(Gateway::services_of(next), (std::set<std::string>{"cache", "db", "web"}));

  const uint16_t port = gw.add_service_listener("cache");
  EXPECT_NE(port, 0);
  EXPECT_EQ(gw.service_port("cache"), port);
  EXPECT_EQ(gw.add_service_listener("cache"), port) << "one listener per service";
  c = gw.reconfigure(next);
  EXPECT_TRUE(c.restart_needed.empty()) << c.summary();
  EXPECT_TRUE(c.routes_changed);  // cache's listener route
  EXPECT_EQ(gw.services(), (std::set<std::string>{"cache", "db", "web"}));

  // No longer depended on: the listener and its route stay until a restart (the URL may be in use).
  next.gateway->service_listeners = {"db"};
  c = gw.reconfigure(next);
  EXPECT_TRUE(c.restart_needed.empty()) << c.summary();
  EXPECT_FALSE(c.routes_changed);
  EXPECT_EQ(gw.services(), (std::set<std::string>{"cache", "db", "web"}));
}

}  // namespace
}  // namespace flotilla::gateway
