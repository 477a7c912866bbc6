#include "registry/registry.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/event_loop.h"
#include "common/metrics.h"
#include "registry/store/sqlite_store.h"

using namespace flotilla;
using namespace flotilla::registry;

namespace {

struct RegistryFixture : ::testing::Test {
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("flotilla-registry-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    store = std::make_unique<store::SqliteStore>(store::SqliteOptions{(dir / "db").string()}, loop);
    registry = std::make_unique<Registry>(loop, *store, Identity{"node-a"}, metrics);
    registry->start();
  }
  void TearDown() override {
    store->stop();
    registry.reset();
    store.reset();
    std::filesystem::remove_all(dir);
  }

  static Service service(const std::string& id, int port) {
    Service s;
    s.id = id;
    s.name = "web";
    s.address = "127.0.0.1";
    s.port = port;
    return s;
  }

  // Runs the loop until `count` writes issued with done() have answered.
  Registry::Done done() {
    return [this](const WriteResult& r) {
      ++answered;
      ok = ok && r.ok;
    };
  }
  void wait_for(int count) { loop.run_until([&] { return answered >= count; }); }

  std::filesystem::path dir;
  EventLoop loop;
  metrics::Registry metrics;
  std::unique_ptr<store::SqliteStore> store;
  std::unique_ptr<Registry> registry;
  int answered = 0;
  bool ok = true;
};

}  // namespace

// The supervisor registers an instance when it turns healthy and deregisters it when it exits,
// without waiting in between. A deregistration built from a view that lacks the registration
// still being committed found "no such service", wrote nothing, and the registration then stayed
// for good (an exited instance listed in the catalog).
TEST_F(RegistryFixture, DeregisteringWhileTheRegistrationCommitsRemovesIt) {
  registry->register_service(service("web-1", 8001), {}, true, done());
  ASSERT_EQ(registry->state().service("web-1"), nullptr) << "the commit is asynchronous";
  registry->deregister_service("web-1", done());
  wait_for(2);
  EXPECT_TRUE(ok);
  EXPECT_EQ(registry->state().service("web-1"), nullptr);
}

TEST_F(RegistryFixture, WritesIssuedTogetherApplyInTheOrderAsked) {
  std::vector<int> order;
  auto note = [&](int n) {
    return [&, n](const WriteResult& r) {
      order.push_back(n);
      ok = ok && r.ok;
      ++answered;
    };
  };
  registry->register_service(service("web-1", 8001), {}, true, note(1));
  registry->deregister_service("web-1", note(2));  // waits for 1
  registry->register_service(service("web-1", 8002), {}, true, note(3));  // queued behind 2
  wait_for(3);
  EXPECT_TRUE(ok);
  EXPECT_EQ(order, (std::vector<int>{1, 2, 3}));
  const Service* s = registry->state().service("web-1");
  ASSERT_NE(s, nullptr) << "the last write asked for is a registration";
  EXPECT_EQ(s->port, 8002);
}

TEST_F(RegistryFixture, AWriteOfNothingAnswersAtOnceWhenNothingIsCommitting) {
  registry->deregister_service("missing", done());
  EXPECT_EQ(answered, 1) << "no write in flight: answered without a round trip";
  registry->register_service(service("web-1", 8001), {}, true, done());
  wait_for(2);
  registry->register_service(service("web-1", 8001), {}, true, done());  // identical: writes nothing
  EXPECT_EQ(answered, 3);
  EXPECT_TRUE(ok);
}

TEST_F(RegistryFixture, KvDeleteWhileThePutCommitsDeletesIt) {
  KvPut put;
  put.key = "config/a";
  put.value = "1";
  registry->kv_put(put, done());
  registry->kv_delete("config/a", false, std::nullopt, done());
  wait_for(2);
  EXPECT_TRUE(ok);
  EXPECT_EQ(registry->state().kv().count("config/a"), 0u);
}

// Waiting is only for the records the decision read: a write with nothing to do on other
// records answers at once while a write is committing.
TEST_F(RegistryFixture, AWriteOfNothingOnOtherRecordsIsNotHeldBack) {
  registry->register_service(service("web-1", 8001), {}, true, done());
  registry->deregister_service("missing", done());
  EXPECT_EQ(answered, 1) << "answered before the registration committed";
  wait_for(2);
  EXPECT_TRUE(ok);
}

// The supervisor puts an instance in maintenance (drain) and, if it exits meanwhile,
// deregisters it without waiting: the maintenance check must go with the service.
TEST_F(RegistryFixture, DeregisteringRemovesAChecksBeingAddedMeanwhile) {
  registry->register_service(service("web-1", 8001), {}, true, done());
  wait_for(1);
  registry->set_maintenance("web-1", true, "draining", done());
  registry->deregister_service("web-1", done());
  wait_for(3);
  EXPECT_TRUE(ok);
  EXPECT_EQ(registry->state().service("web-1"), nullptr);
  EXPECT_TRUE(registry->state().checks_of_service("web-1").empty());
  EXPECT_EQ(registry->state().check("_service_maintenance:web-1"), nullptr) << "no orphaned check";
}

// A probe's verdict is about the check it probed: when the check is registered again with
// another definition while the verdict is on its way, the new check keeps its own status.
TEST_F(RegistryFixture, AVerdictForAnOldCheckDefinitionIsDropped) {
  registry->register_service(service("web-1", 8001), {}, true, done());
  wait_for(1);
  Check c;
  c.id = "web-1-http";
  c.name = "http";
  c.service_id = "web-1";
  c.kind = "http";
  c.definition.http = "http://127.0.0.1:8001/healthz";
  c.status = status::critical;
  registry->register_check(c, done());
  wait_for(2);
  c.definition.http = "http://127.0.0.1:9009/healthz";  // a new port, not probed yet
  registry->register_check(c, done());
  bool applied = true;
  registry->update_check("web-1-http", status::passing, "HTTP GET http://127.0.0.1:8001/healthz: 200 OK",
                         [&](const WriteResult& r) {
                           applied = r.applied;
                           ++answered;
                         });
  wait_for(4);
  EXPECT_TRUE(ok);
  EXPECT_FALSE(applied);
  const Check* now = registry->state().check("web-1-http");
  ASSERT_NE(now, nullptr);
  EXPECT_EQ(now->definition.http, "http://127.0.0.1:9009/healthz");
  EXPECT_EQ(now->status, status::critical);
}

TEST_F(RegistryFixture, ASessionIsNotCreatedOnACheckThatWentCriticalMeanwhile) {
  Check c;
  c.id = "node-ttl";
  c.name = "ttl";
  c.kind = "ttl";
  c.status = status::passing;
  registry->register_check(c, done());
  wait_for(1);
  registry->update_check("node-ttl", status::critical, "TTL expired", done());
  Session s;
  s.node_checks = {"node-ttl"};
  WriteResult created;
  registry->session_create(s, [&](const WriteResult& r) {
    created = r;
    ++answered;
  });
  wait_for(3);
  EXPECT_FALSE(created.ok);
  EXPECT_NE(created.error.find("critical"), std::string::npos) << created.error;
  EXPECT_TRUE(registry->state().sessions().empty());
}

// replace_existing_checks replaces a check being added while the registration is asked (Consul
// clients re-register with the checks they want; one registered just before must not survive).
TEST_F(RegistryFixture, AReRegistrationReplacesACheckBeingAddedMeanwhile) {
  registry->register_service(service("web-1", 8001), {}, true, done());
  wait_for(1);
  Check c;
  c.id = "web-1-extra";
  c.name = "extra";
  c.service_id = "web-1";
  c.kind = "ttl";
  registry->register_check(c, done());
  registry->register_service(service("web-1", 8002), {}, true, done());  // writes: a new port
  wait_for(3);
  EXPECT_TRUE(ok);
  EXPECT_EQ(registry->state().check("web-1-extra"), nullptr);
  ASSERT_NE(registry->state().service("web-1"), nullptr);
  EXPECT_EQ(registry->state().service("web-1")->port, 8002);
}
