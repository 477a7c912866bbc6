#include "registry/watch.h"

#include <gtest/gtest.h>

#include "common/event_loop.h"
#include "common/metrics.h"

using namespace flotilla;
using namespace flotilla::registry;
using namespace std::chrono_literals;

namespace {
struct WatchFixture : ::testing::Test {
  EventLoop loop;
  metrics::Registry metrics;
  WatchHub hub{loop, metrics};
  std::string value = "a";
  uint64_t index = 5;
  int computes = 0;

  WatchHub::Compute compute() {
    return [this] {
      ++computes;
      QueryResult q;
      q.body = value;
      q.index = index;
      return q;
    };
  }
  QueryResult current() { return compute()(); }
};
}  // namespace

TEST_F(WatchFixture, WakesOnlyWhenTheResultChanged) {
  int answered = 0;
  QueryResult got;
  hub.park("q", {"svc:web"}, current(), 10s, compute(), [&](QueryResult&& r) {
    ++answered;
    got = r;
  });
  EXPECT_EQ(hub.waiting(), 1u);
  hub.notify({"svc:api"});  // another topic
  hub.notify({"svc:web"});  // same topic, same result
  EXPECT_EQ(answered, 0);
  value = "b";
  index = 9;
  hub.notify({"svc:web"});
  EXPECT_EQ(answered, 1);
  EXPECT_EQ(got.body, "b");
  EXPECT_EQ(got.index, 9u);
  EXPECT_EQ(hub.waiting(), 0u);
}

TEST_F(WatchFixture, IdenticalQueriesAreComputedOnce) {
  int answered = 0;
  auto first = current();
  for (int i = 0; i < 100; ++i) hub.park("same", {"t"}, first, 10s, compute(), [&](QueryResult&&) { ++answered; });
  computes = 0;
  value = "changed";
  hub.notify({"t"});
  EXPECT_EQ(answered, 100);
  EXPECT_EQ(computes, 1);
}

TEST_F(WatchFixture, AnswerIndexMovesPastTheClients) {
  // A changed body with an index that did not move (a fresh view after restart) still gets an
  // index above the client's, or the client would ask again at once.
  QueryResult first = current();
  first.index = 50;
  QueryResult got;
  hub.park("q", {"t"}, first, 10s, compute(), [&](QueryResult&& r) { got = r; });
  value = "z";
  hub.notify({"t"});
  EXPECT_EQ(got.index, 51u);
}

TEST_F(WatchFixture, TimesOutAndCancels) {
  int answered = 0;
  hub.park("q", {"t"}, current(), 30ms, compute(), [&](QueryResult&&) { ++answered; });
  auto cancelled = hub.park("q2", {"t"}, current(), 30ms, compute(), [&](QueryResult&&) { answered += 100; });
  hub.cancel(cancelled);
  EXPECT_EQ(hub.waiting(), 1u);
  loop.run_until([&] { return answered > 0; });
  EXPECT_EQ(answered, 1);
  EXPECT_EQ(hub.waiting(), 0u);
}

TEST_F(WatchFixture, PrefixTopicsOfParkedRecursiveReads) {
  hub.park("a", {"kvp:app/"}, current(), 10s, compute(), [](QueryResult&&) {});
  hub.park("b", {"kvp:"}, current(), 10s, compute(), [](QueryResult&&) {});
  auto other = hub.park("c", {"kvp:other/"}, current(), 10s, compute(), [](QueryResult&&) {});
  std::set<std::string> topics;
  hub.add_prefix_topics("app/db/url", topics);
  EXPECT_EQ(topics, (std::set<std::string>{"kvp:", "kvp:app/"}));
  hub.cancel(other);
  topics.clear();
  hub.add_prefix_topics("other/x", topics);
  EXPECT_EQ(topics, (std::set<std::string>{"kvp:"})) << "a cancelled prefix is forgotten";
}
