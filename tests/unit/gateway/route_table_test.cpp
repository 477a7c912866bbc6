#include "gateway/route_table.h"

#include <gtest/gtest.h>

#include <map>
#include <random>

#include "gateway/path.h"

using namespace flotilla;
using namespace flotilla::gateway;

// The tests build requests with designated initializers that leave the other fields at their
// defaults on purpose (match(t, {.path = "/x"})).
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

namespace {
RouteTable table(const std::string& yaml) {
  return RouteTable(config::parse("name: t\ngateway:\n  routes:\n" + yaml, "f.yaml").gateway->routes);
}

struct Req {
  std::string method = "GET", host = "shop.example.com", path = "/";
  std::map<std::string, std::string_view> headers;
  static const std::string_view* lookup(const void* ctx, std::string_view name) {
    auto& h = static_cast<const Req*>(ctx)->headers;
    auto it = h.find(std::string(name));
    return it == h.end() ? nullptr : &it->second;
  }
  RouteRequest view() const { return RouteRequest{method, host, path, &Req::lookup, this, {}}; }
};

int match(const RouteTable& t, Req r) {
  r.path = *normalize_path(r.path);
  return t.match(r.view());
}
}  // namespace

TEST(RouteTable, FirstMatchInOrder) {
  auto t = table(
      "    - {match: {path: /health}, service: health}\n"
      "    - {match: {path_prefix: /api/admin, methods: [POST]}, service: admin}\n"
      "    - {match: {path_prefix: /api}, service: api}\n"
      "    - {match: {host: '*.internal'}, service: internal}\n"
      "    - {match: {headers: {x-canary: 'yes'}}, service: canary}\n"
      "    - service: web\n");
  EXPECT_EQ(match(t, {.path = "/health"}), 0);
  EXPECT_EQ(match(t, {.path = "/health/x"}), 2 + 3) << "exact path only; falls to the catch-all";
  EXPECT_EQ(match(t, {.method = "POST", .path = "/api/admin/users"}), 1);
  EXPECT_EQ(match(t, {.method = "GET", .path = "/api/admin/users"}), 2);
  EXPECT_EQ(match(t, {.path = "/api"}), 2);
  EXPECT_EQ(match(t, {.path = "/apix"}), 5) << "prefixes match whole segments";
  EXPECT_EQ(match(t, {.host = "db.internal:8080", .path = "/x"}), 3);
  EXPECT_EQ(match(t, {.host = "internal", .path = "/x"}), 5) << "*.domain does not match the bare domain";
  EXPECT_EQ(match(t, {.path = "/x", .headers = {{"x-canary", "yes"}}}), 4);
  EXPECT_EQ(match(t, {.path = "/x", .headers = {{"x-canary", "no"}}}), 5);
}

TEST(RouteTable, TraversalCannotReachAnotherRoute) {
  auto t = table(
      "    - {match: {path_prefix: /admin}, service: admin}\n"
      "    - {match: {path_prefix: /public}, service: public}\n");
  // Whatever the spelling, a path reaches /admin only if its normalised form is under /admin.
  for (const char* p : {"/public/../admin", "/public/%2e%2e/admin", "//admin", "/./admin"})
    EXPECT_EQ(match(t, {.path = p}), 0) << p;
  for (const char* p : {"/public/..%2Fadmin", "/public/admin", "/adminx"})
    EXPECT_NE(match(t, {.path = p}), 0) << p;
}

TEST(RouteTable, StripPrefix) {
  auto t = table(
      "    - {match: {path_prefix: /api/catalog}, service: catalog, strip_prefix: true}\n"
      "    - {match: {path_prefix: /v2/}, service: v2, strip_prefix: true}\n");
  EXPECT_EQ(t.upstream_path(0, "/api/catalog/items/7"), "/items/7");
  EXPECT_EQ(t.upstream_path(0, "/api/catalog"), "/");
  EXPECT_EQ(t.upstream_path(0, "/api/catalog/"), "/");
  EXPECT_EQ(t.upstream_path(1, "/v2/x"), "/x");
}

TEST(RouteTable, HostMatching) {
  EXPECT_TRUE(host_matches("shop.example.com", "Shop.Example.COM:443"));
  EXPECT_TRUE(host_matches("*.example.com", "a.b.example.com"));
  EXPECT_FALSE(host_matches("*.example.com", "example.com"));
  EXPECT_FALSE(host_matches("*.example.com", "badexample.com"));
  EXPECT_TRUE(host_matches("[::1]", "[::1]:8080"));
  // A fully qualified name with its root dot is the same name.
  EXPECT_TRUE(host_matches("shop.example.com", "shop.example.com."));
  EXPECT_TRUE(host_matches("shop.example.com", "shop.example.com.:8080"));
  EXPECT_TRUE(host_matches("*.example.com", "a.example.com."));
  EXPECT_FALSE(host_matches("shop.example.com", "shop.example.com.."));
}

namespace {
config::Route route(config::RouteMatch m) {
  config::Route r;
  r.match = std::move(m);
  r.service = "s";
  return r;
}

// `n` routes that cannot match the requests below, then the ones given.
RouteTable many_then(size_t n, std::vector<config::Route> last) {
  std::vector<config::Route> routes;
  for (size_t i = 0; i < n; ++i) routes.push_back(route({.path_prefix = "/filler/" + std::to_string(i)}));
  for (auto& r : last) routes.push_back(std::move(r));
  return RouteTable(std::move(routes));
}
}  // namespace

TEST(RouteTable, ALargeTableIsIndexedAndKeepsRouteOrder) {
  EXPECT_FALSE(many_then(RouteTable::kIndexFrom - 1, {route({})}).indexed());
  auto t = many_then(100, {
                              route({.path_prefix = "/api", .host = "*.example.com"}),    // 100
                              route({.path = "/api/x", .host = "shop.example.com"}),      // 101
                              route({.path_prefix = "/api/", .methods = {"POST"}}),       // 102
                              route({.host = "shop.example.com"}),                        // 103
                              route({.path_prefix = "/", .headers = {{"x-canary", "1"}}}),  // 104
                              route({.path_prefix = "/"}),                                // 105
                          });
  ASSERT_TRUE(t.indexed());
  // An earlier wildcard route wins over a later exact-host one, as in the list.
  EXPECT_EQ(match(t, {.host = "shop.example.com", .path = "/api/x"}), 100);
  EXPECT_EQ(match(t, {.host = "SHOP.Example.com.:8443", .path = "/other"}), 103);
  EXPECT_EQ(match(t, {.method = "POST", .host = "other.test", .path = "/api/y"}), 102);
  EXPECT_EQ(match(t, {.host = "other.test", .path = "/api/y", .headers = {{"x-canary", "1"}}}), 104);
  EXPECT_EQ(match(t, {.host = "other.test", .path = "/apix"}), 105);
  EXPECT_EQ(match(t, {.host = "example.com", .path = "/api"}), 105) << "*.example.com is not example.com";
  EXPECT_EQ(match(t, {.host = "a.b.example.com", .path = "/api/z"}), 100);
  EXPECT_EQ(match(t, {.host = "", .path = "/filler/7/x"}), 7);
  EXPECT_EQ(match(t, {.host = std::string(300, 'a') + ".example.com", .path = "/api"}), 100)
      << "a name too long for the index is scanned";
  // A listener's routes match only on that listener.
  auto l = many_then(30, {route({.path_prefix = "/", .listener_service = "web"})});
  Req r{.path = "/x"};
  RouteRequest on_web = r.view();
  on_web.listener_service = "web";
  EXPECT_EQ(l.match(on_web), 30);
  EXPECT_EQ(l.match(r.view()), -1);
}

// The index must answer what a scan of the list answers, for any table and request: random
// tables over a small vocabulary (so that routes overlap a lot), random requests.
TEST(RouteTable, TheIndexAgreesWithAScanOfTheList) {
  std::mt19937 rng(20261204);
  // A reference, not a copy: the requests' header map holds string_views of what it picks.
  auto pick = [&](const std::vector<std::string>& v) -> const std::string& { return v[rng() % v.size()]; };
  const std::vector<std::string> hosts = {"", "", "shop.example.com", "*.example.com", "*.b.example.com",
                                          "api.test", "*.test", "[::1]", "*.", "*", "*..", "a."};
  const std::vector<std::string> paths = {"/", "/api", "/api/", "/api/v1", "/api/v1/", "/api/v1/items", "/a",
                                          "/a/b/c", "/static/", "/x.y", "a", ""};
  const std::vector<std::string> request_hosts = {
      "shop.example.com", "SHOP.example.COM:80", "a.b.example.com", "example.com", "api.test.", "x.api.test", "test",
      "[::1]:8080", "[::1]", "[::1", "", ".", "a.", "a..", "x.a.:443", "b.example.com",
      std::string(251, 'h') + ".test", std::string(252, 'h') + ".test", std::string(260, 'h') + ".test",
      std::string(260, 'H') + ".example.com"};
  const std::vector<std::string> request_paths = {"/", "/api", "/api/", "/api/v1", "/api/v1/items", "/api/v1/items/9",
                                                  "/apix", "/a/b/c/d", "/a/b", "/static/app.js", "/x.y", "/x.yz", "a"};
  int found = 0;
  for (int table_no = 0; table_no < 300; ++table_no) {
    std::vector<config::Route> routes;
    const size_t size = RouteTable::kIndexFrom + 1 + rng() % 80;
    // Every other table is mostly header routes for few hosts and no path: the header index's case.
    const bool header_heavy = table_no % 2;
    for (size_t i = 0; i < size; ++i) {
      config::RouteMatch m;
      m.host = header_heavy && rng() % 4 ? (rng() % 2 ? "" : "*.test") : pick(hosts);
      switch (header_heavy && rng() % 4 ? 4 : rng() % 5) {
        case 0: m.path = pick(paths); break;
        case 3:  // both: the exact path decides, the prefix must hold too
          m.path = pick(paths);
          m.path_prefix = pick(paths);
          break;
        case 1:
        case 2: m.path_prefix = pick(paths); break;
        default: break;
      }
      if (rng() % 6 == 0) m.methods = {rng() % 2 ? "GET" : "POST"};
      const std::vector<std::string> values = {"1", "2", "3", ""};
      switch (header_heavy ? rng() % 2 : rng() % 4) {  // indexed by the first header when enough share its name
        case 0: m.headers = {{"x-v", pick(values)}}; break;
        case 1: m.headers = {{"x-t", pick(values)}, {"x-v", pick(values)}}; break;
        default: break;
      }
      if (rng() % 10 == 0) m.listener_service = "web";
      routes.push_back(route(std::move(m)));
    }
    RouteTable t(std::move(routes));
    ASSERT_TRUE(t.indexed());
    for (int q = 0; q < 200; ++q) {
      Req r{.method = rng() % 3 ? "GET" : "POST", .host = pick(request_hosts), .path = pick(request_paths)};
      static const std::vector<std::string> sent = {"1", "2", "3", "", "4"};
      if (rng() % 3) r.headers["x-v"] = pick(sent);
      if (rng() % 3) r.headers["x-t"] = pick(sent);
      RouteRequest view = r.view();
      if (rng() % 8 == 0) view.listener_service = "web";
      const int scanned = t.match_by_scan(view);
      ASSERT_EQ(t.match(view), scanned) << "host " << r.host << " path " << r.path << " table " << table_no;
      found += scanned >= 0;
    }
  }
  EXPECT_GT(found, 20000) << "the requests must mostly match something, or the test checks little";
}

TEST(RouteTable, HeaderRoutesSharingAHeaderNameAreFoundByItsValue) {
  std::vector<config::Route> routes;
  routes.push_back(route({.path_prefix = "/admin"}));
  for (int i = 0; i < 20; ++i) {
    std::string tenant = std::to_string(i);
    tenant.insert(0, 1, 't');  // (GCC 12 warns, wrongly, of "t" + to_string here: -Wrestrict)
    routes.push_back(route({.headers = {{"x-tenant", tenant}}}));
  }
  routes.push_back(route({.methods = {"DELETE"}}));                                       // 21
  routes.push_back(route({.headers = {{"x-tenant", "t3"}, {"x-env", "canary"}}}));          // 22: after t3's
  routes.push_back(route({.headers = {{"x-env", "canary"}}}));                              // 23
  routes.push_back(route({}));                                                              // 24
  RouteTable t(std::move(routes));
  ASSERT_TRUE(t.indexed());
  EXPECT_EQ(match(t, {.path = "/x", .headers = {{"x-tenant", "t7"}}}), 8);
  EXPECT_EQ(match(t, {.path = "/admin/x", .headers = {{"x-tenant", "t7"}}}), 0);
  EXPECT_EQ(match(t, {.method = "DELETE", .path = "/x", .headers = {{"x-tenant", "t19"}}}), 20);
  EXPECT_EQ(match(t, {.method = "DELETE", .path = "/x", .headers = {{"x-tenant", "t20"}}}), 21);
  EXPECT_EQ(match(t, {.path = "/x", .headers = {{"x-tenant", "t3"}, {"x-env", "canary"}}}), 4);
  EXPECT_EQ(match(t, {.path = "/x", .headers = {{"x-tenant", "T3"}, {"x-env", "canary"}}}), 23) << "values are exact";
  EXPECT_EQ(match(t, {.path = "/x", .headers = {{"x-tenant", "t1,t2"}}}), 24) << "a repeated field is its values joined";
  EXPECT_EQ(match(t, {.path = "/x"}), 24);
}

TEST(RouteTable, ARequestWithMoreCandidateListsThanTheIndexMergesIsStillRoutedRight) {
  // 12 nested wildcard levels with 8 prefixes each: a request under all of them has more
  // candidate lists than the merge takes at once; the answer must still be the first match.
  std::vector<config::Route> routes;
  std::string suffix = ".example.com";
  for (int level = 0; level < 12; ++level) {
    for (const char* prefix : {"/a", "/a/b", "/a/b/c", "/a/b/c/d", "/a/", "/a/b/", "/a/b/c/", "/a/b/c/d/"})
      routes.push_back(route({.path_prefix = prefix, .host = "*" + suffix, .methods = {"PUT"}}));
    suffix = ".l" + std::to_string(level) + suffix;
  }
  routes.push_back(route({.path_prefix = "/a/b", .host = "*.l3.l2.l1.l0.example.com"}));
  const int expected = static_cast<int>(routes.size()) - 1;
  RouteTable t(std::move(routes));
  Req r{.host = "x" + suffix, .path = "/a/b/c/d/e"};
  EXPECT_EQ(t.match(r.view()), expected);
  EXPECT_EQ(t.match_by_scan(r.view()), expected);
  r.method = "PUT";
  EXPECT_EQ(t.match(r.view()), t.match_by_scan(r.view()));
}
