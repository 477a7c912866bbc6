#include "registry/store/sqlite_store.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "common/event_loop.h"

using namespace flotilla;
using namespace flotilla::store;
using namespace std::chrono_literals;

namespace {

struct StoreFixture : ::testing::Test {
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("flotilla-store-" + std::to_string(::getpid()) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }

  std::unique_ptr<SqliteStore> open() {
    auto s = std::make_unique<SqliteStore>(SqliteOptions{(dir / "db").string()}, loop);
    s->load();
    s->start([this](uint64_t rev, std::vector<Event>&& evs) {
      for (auto& e : evs) events.emplace_back(rev, std::move(e));
    });
    return s;
  }

  TxnResult commit(Store& s, Txn txn) {
    bool done = false;
    TxnResult out;
    s.commit(std::move(txn), [&](const TxnResult& r) {
      out = r;
      done = true;
    });
    loop.run_until([&] { return done; });
    return out;
  }

  std::filesystem::path dir;
  EventLoop loop;
  std::vector<std::pair<uint64_t, Event>> events;
};

}  // namespace

TEST_F(StoreFixture, RevisionsGrowOnlyOnChange) {
  auto s = open();
  auto r1 = commit(*s, Txn{{}, {Op::put("a", "1")}});
  EXPECT_TRUE(r1.succeeded);
  EXPECT_EQ(r1.revision, 1u);
  auto r2 = commit(*s, Txn{{}, {Op::put("b", "2"), Op::put("a", "3")}});
  EXPECT_EQ(r2.revision, 2u);
  auto r3 = commit(*s, Txn{{}, {Op::del("missing")}});
  EXPECT_TRUE(r3.succeeded);
  EXPECT_EQ(r3.revision, 2u) << "deleting nothing changes nothing";
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].second.kv.key, "a");
  EXPECT_EQ(events[2].second.kv.create_revision, 1u);
  EXPECT_EQ(events[2].second.kv.mod_revision, 2u);
  EXPECT_EQ(events[2].second.kv.version, 2u);
}

TEST_F(StoreFixture, ComparesGuardTheWholeTransaction) {
  auto s = open();
  commit(*s, Txn{{}, {Op::put("k", "v1")}});
  auto bad = commit(*s, Txn{{{"k", 7}}, {Op::put("k", "v2"), Op::put("other", "x")}});
  EXPECT_FALSE(bad.succeeded);
  EXPECT_TRUE(bad.error.empty());
  auto absent = commit(*s, Txn{{{"k", 0}}, {Op::put("k", "v2")}});
  EXPECT_FALSE(absent.succeeded) << "0 means 'must not exist'";
  auto good = commit(*s, Txn{{{"k", 1}, {"nope", 0}}, {Op::put("k", "v2")}});
  EXPECT_TRUE(good.succeeded);
  auto snap = s->load();
  ASSERT_EQ(snap.kvs.size(), 1u);
  EXPECT_EQ(snap.kvs[0].value, "v2");
}

TEST_F(StoreFixture, DeletePrefixAndDurableAcrossReopen) {
  {
    auto s = open();
    commit(*s, Txn{{}, {Op::put("p/a", "1"), Op::put("p/b", "2"), Op::put("q", "3"), Op::put("p", "4")}});
    auto r = commit(*s, Txn{{}, {Op::del_prefix("p/")}});
    EXPECT_EQ(r.revision, 2u);
    s->stop();
  }
  auto s = open();
  auto snap = s->load();
  EXPECT_EQ(snap.revision, 2u);
  ASSERT_EQ(snap.kvs.size(), 2u);
  EXPECT_EQ(snap.kvs[0].key, "p");
  EXPECT_EQ(snap.kvs[1].key, "q");
  auto r = commit(*s, Txn{{}, {Op::put("z", "1")}});
  EXPECT_EQ(r.revision, 3u) << "revisions keep growing after a restart";
}

TEST_F(StoreFixture, LeaseExpiryDeletesAttachedKeys) {
  auto s = open();
  commit(*s, Txn{{}, {Op::grant(42, 150ms), Op::put("session", "x", 42), Op::put("plain", "y")}});
  auto start = std::chrono::steady_clock::now();
  // Keep it alive for a while, then let it lapse.
  while (std::chrono::steady_clock::now() - start < 300ms) {
    EXPECT_TRUE(s->keepalive(42));
    loop.run_until([&, t = std::chrono::steady_clock::now()] { return std::chrono::steady_clock::now() - t > 20ms || true; });
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(events.size() == 2u) << "still alive while kept alive";
  auto deadline = std::chrono::steady_clock::now() + 3s;
  Timer t(loop);
  bool tick = false;
  while (events.size() < 3 && std::chrono::steady_clock::now() < deadline) {
    tick = false;
    t.arm(10ms, [&] { tick = true; });
    loop.run_until([&] { return tick; });
  }
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[2].second.type, Event::Type::del);
  EXPECT_EQ(events[2].second.kv.key, "session");
  EXPECT_FALSE(s->keepalive(42));
  auto snap = s->load();
  ASSERT_EQ(snap.kvs.size(), 1u);
  EXPECT_EQ(snap.kvs[0].key, "plain");
}

TEST_F(StoreFixture, ManyConcurrentWritersGroupCommit) {
  auto s = open();
  std::vector<std::thread> threads;
  std::atomic<int> acked{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i)
        s->commit(Txn{{}, {Op::put("k" + std::to_string(t) + "/" + std::to_string(i), "v")}},
                  [&](const TxnResult& r) { acked += r.succeeded; });
    });
  }
  for (auto& th : threads) th.join();
  loop.run_until([&] { return acked.load() == 400; });
  EXPECT_EQ(s->load().revision, 400u);
}
