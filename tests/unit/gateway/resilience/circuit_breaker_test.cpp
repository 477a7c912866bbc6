#include "gateway/resilience/circuit_breaker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <thread>
#include <vector>

using namespace flotilla;
using namespace flotilla::gateway::resilience;

namespace {
struct Counts {
  std::atomic<int64_t> connections{0}, pending{0}, requests{0};
};
}  // namespace

TEST(CircuitBreaker, DefaultsAreEnvoys) {
  config::CircuitBreaker limits;
  Counts n;
  CircuitBreaker b(limits, n.connections, n.pending, n.requests);
  EXPECT_EQ(b.max(Limit::connections), 1024);
  EXPECT_EQ(b.max(Limit::pending_requests), 1024);
  EXPECT_EQ(b.max(Limit::requests), 1024);
}

TEST(CircuitBreaker, RefusesOverTheLimitAndNamesIt) {
  config::CircuitBreaker limits{1, 2, 3};
  Counts n;
  CircuitBreaker b(limits, n.connections, n.pending, n.requests);
  std::vector<Slot> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(b.try_acquire(Limit::requests));
    EXPECT_TRUE(held.back());
  }
  Slot refused = b.try_acquire(Limit::requests);
  EXPECT_FALSE(refused);
  EXPECT_EQ(n.requests.load(), 3);
  EXPECT_EQ(overload_reason(Limit::requests), "max_requests");
  EXPECT_EQ(overload_reason(Limit::pending_requests), "max_pending_requests");
  EXPECT_EQ(overload_reason(Limit::connections), "max_connections");
  EXPECT_EQ(kOverloadedHeader, "x-flotilla-overloaded");

  // The limits are independent.
  Slot c = b.try_acquire(Limit::connections);
  EXPECT_TRUE(c);
  EXPECT_FALSE(b.try_acquire(Limit::connections));
  EXPECT_TRUE(b.try_acquire(Limit::pending_requests));  // taken and released at once
  EXPECT_EQ(n.pending.load(), 0);

  held.pop_back();  // a finished request frees its place
  EXPECT_EQ(n.requests.load(), 2);
  EXPECT_TRUE(b.try_acquire(Limit::requests));
}

TEST(CircuitBreaker, SlotIsMoveOnlyAndReleasesOnce) {
  std::atomic<int64_t> count{0};
  {
    Slot a = Slot::try_acquire(count, 5);
    EXPECT_EQ(count.load(), 1);
    Slot b = std::move(a);
    EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    EXPECT_TRUE(b);
    EXPECT_EQ(count.load(), 1);
    Slot c = Slot::try_acquire(count, 5);
    EXPECT_EQ(count.load(), 2);
    c = std::move(b);  // c's own unit is released, b's taken over
    EXPECT_EQ(count.load(), 1);
    c.release();
    c.release();
    EXPECT_EQ(count.load(), 0);
    Slot d = Slot::try_acquire(count, 5);
    d = std::move(d);
    EXPECT_EQ(count.load(), 1);
  }
  EXPECT_EQ(count.load(), 0);
  Slot empty;
  EXPECT_FALSE(empty);
}

TEST(CircuitBreaker, TryIncrementForSelfTrackedUnits) {
  std::atomic<int64_t> count{0};
  EXPECT_TRUE(try_increment(count, 2));
  EXPECT_TRUE(try_increment(count, 2));
  EXPECT_FALSE(try_increment(count, 2));
  EXPECT_EQ(count.load(), 2);
  // A limit lowered below the live count refuses until enough are released.
  EXPECT_FALSE(try_increment(count, 1));
  count.fetch_sub(2);
  EXPECT_TRUE(try_increment(count, 1));
}

TEST(CircuitBreaker, RacingThreadsNeverExceedTheLimit) {
  constexpr int64_t kLimit = 3;
  std::atomic<int64_t> count{0};
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> granted{0};
  std::barrier sync(2);
  auto worker = [&] {
    sync.arrive_and_wait();
    for (int i = 0; i < 200'000; ++i) {
      Slot s = Slot::try_acquire(count, kLimit);
      if (!s) continue;
      ++granted;
      int64_t seen = count.load();
      int64_t p = peak.load();
      while (seen > p && !peak.compare_exchange_weak(p, seen)) {
      }
    }
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  EXPECT_LE(peak.load(), kLimit);
  EXPECT_GT(granted.load(), 0);
  EXPECT_EQ(count.load(), 0);
}

TEST(CircuitBreaker, RacingThreadsFillExactlyToTheLimit) {
  for (int round = 0; round < 50; ++round) {
    std::atomic<int64_t> count{0};
    std::barrier sync(2);
    std::vector<Slot> held[2];
    auto worker = [&](int t) {
      sync.arrive_and_wait();
      for (int i = 0; i < 1000; ++i)
        if (Slot s = Slot::try_acquire(count, 1000)) held[t].push_back(std::move(s));
    };
    std::thread a(worker, 0), b(worker, 1);
    a.join();
    b.join();
    ASSERT_EQ(held[0].size() + held[1].size(), 1000u);
    ASSERT_EQ(count.load(), 1000);
    held[0].clear();
    held[1].clear();
    ASSERT_EQ(count.load(), 0);
  }
}
