#include "gateway/route_table.h"

#include <gtest/gtest.h>

#include <map>

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
