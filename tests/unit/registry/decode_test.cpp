#include "registry/api/decode.h"

#include <gtest/gtest.h>

#include "common/error.h"

using namespace flotilla;
using namespace flotilla::registry;
using namespace flotilla::registry::api;
using namespace std::chrono_literals;

namespace {
// Asserts that decoding fails with a 4xx naming `field`.
template <class F>
void expect_error(F f, int status, const std::string& field) {
  try {
    f();
    ADD_FAILURE() << "expected an error for field " << field;
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), status) << e.what();
    EXPECT_EQ(e.field(), field) << e.what();
  }
}
}  // namespace

TEST(Decode, ServiceRegistrationConsulShape) {
  auto r = decode_service_registration(
      R"({"name":"web","id":"web-1","tags":["a","b"],"address":"127.0.0.1","port":8080,
          "meta":{"v":"1"},"weights":{"passing":10,"warning":1},
          "check":{"http":"http://127.0.0.1:8080/health","interval":"1s","timeout":"500ms"}})");
  EXPECT_EQ(r.service.id, "web-1");
  EXPECT_EQ(r.service.name, "web");
  EXPECT_EQ(r.service.port, 8080);
  EXPECT_EQ(r.service.weight_passing, 10);
  ASSERT_EQ(r.checks.size(), 1u);
  EXPECT_EQ(r.checks[0].id, "service:web-1");
  EXPECT_EQ(r.checks[0].kind, "http");
  EXPECT_EQ(r.checks[0].definition.interval, 1s);
  EXPECT_EQ(r.checks[0].definition.timeout, 500ms);
  EXPECT_EQ(r.checks[0].status, "critical");
}

TEST(Decode, SeveralChecksAreNumbered) {
  auto r = decode_service_registration(
      R"({"Name":"db","Checks":[{"TCP":"127.0.0.1:5432","Interval":"5s"},{"TTL":"10s","Status":"passing"}]})");
  EXPECT_EQ(r.service.id, "db");
  ASSERT_EQ(r.checks.size(), 2u);
  EXPECT_EQ(r.checks[0].id, "service:db:1");
  EXPECT_EQ(r.checks[1].id, "service:db:2");
  EXPECT_EQ(r.checks[1].kind, "ttl");
  EXPECT_EQ(r.checks[1].status, "passing");
}

TEST(Decode, BadRegistrationsNameTheField) {
  expect_error([] { decode_service_registration("{"); }, 400, "");
  expect_error([] { decode_service_registration("[]"); }, 400, "");
  expect_error([] { decode_service_registration(R"({"Name":""})"); }, 400, "Name");
  expect_error([] { decode_service_registration(R"({"Name":"x","Port":"80"})"); }, 400, "Port");
  expect_error([] { decode_service_registration(R"({"Name":"x","Port":70000})"); }, 400, "Port");
  expect_error([] { decode_service_registration(R"({"Name":"x","Tags":"a"})"); }, 400, "Tags");
  expect_error([] { decode_service_registration(R"({"Name":"x","Meta":{"a":1}})"); }, 400, "Meta");
  expect_error([] { decode_service_registration(R"({"Name":"x","Check":{"Interval":"1s"}})"); }, 400, "Check");
  expect_error([] { decode_service_registration(R"({"Name":"x","Check":{"HTTP":"http://a/","Interval":"soon"}})"); },
               400, "Check.Interval");
  expect_error([] { decode_service_registration(R"({"Name":"x","Check":{"HTTP":"http://a/"}})"); }, 400,
               "Check.Interval");
  expect_error([] { decode_service_registration(R"({"Name":"x","Check":{"Args":["/bin/true"],"Interval":"1s"}})"); },
               400, "Check.Args");
  expect_error([] { decode_service_registration(R"({"Name":"x","Check":{"TTL":"1s","Status":"fine"}})"); }, 400,
               "Check.Status");
  expect_error([] { decode_service_registration(R"({"Name":"x","Check":{"HTTP":"ftp://a/","Interval":"1s"}})"); },
               400, "Check.HTTP");
  expect_error([] { decode_service_registration("{\"Name\":\"\xff\"}"); }, 400, "");
  expect_error([] { decode_service_registration(R"({"Name":"x","Check":{"TTL":"5s","DeregisterCriticalServiceAfter":"10ms"}})"); },
               400, "Check.DeregisterCriticalServiceAfter");
}

TEST(Decode, Sessions) {
  auto s = decode_session_create("");
  EXPECT_EQ(s.node_checks, std::vector<std::string>{"serfHealth"});
  EXPECT_EQ(s.lock_delay, 15s);
  s = decode_session_create(R"({"ttl":"10s","behavior":"delete","lockdelay":5,"checks":[]})");
  EXPECT_EQ(s.ttl, 10s);
  EXPECT_EQ(s.behavior, "delete");
  EXPECT_EQ(s.lock_delay, 5s);
  EXPECT_TRUE(s.node_checks.empty());
  expect_error([] { decode_session_create(R"({"Behavior":"explode"})"); }, 400, "Behavior");
  expect_error([] { decode_session_create(R"({"TTL":"1ms"})"); }, 400, "TTL");
  expect_error([] { decode_session_create(R"({"LockDelay":"2m"})"); }, 400, "LockDelay");
}

TEST(Decode, KvPut) {
  http::Request req;
  req.query = {{"cas", "5"}, {"flags", "42"}};
  req.body = "hello";
  auto p = decode_kv_put("a/b", req);
  EXPECT_EQ(p.cas, 5u);
  EXPECT_EQ(p.flags, 42u);
  EXPECT_EQ(p.value, "hello");
  req.query = {{"cas", "-1"}};
  expect_error([&] { decode_kv_put("a", req); }, 400, "cas");
  req.query = {{"flags", "x"}};
  expect_error([&] { decode_kv_put("a", req); }, 400, "flags");
  req.query = {{"acquire", "s1"}, {"release", "s1"}};
  expect_error([&] { decode_kv_put("a", req); }, 400, "acquire");
  req.query.clear();
  expect_error([&] { decode_kv_put("", req); }, 400, "key");
  expect_error([&] { decode_kv_put("bad\xff", req); }, 400, "key");
  req.body.assign(512 * 1024 + 1, 'x');
  expect_error([&] { decode_kv_put("big", req); }, 413, "value");
}
