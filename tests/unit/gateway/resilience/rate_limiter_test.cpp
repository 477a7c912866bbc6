#include "gateway/resilience/rate_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

using namespace flotilla::gateway::resilience;
using namespace std::chrono_literals;

namespace {
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kStart = 1'000 * kS;  // an arbitrary steady-clock reading

int64_t steady_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

TEST(RateLimiter, ExactBurstThenExactRate) {
  RateLimiter limiter(10, 5);  // one every 100 ms, 5 at once
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.acquire("k", kStart).allowed) << i;
  auto refused = limiter.acquire("k", kStart);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after, 100ms);
  EXPECT_FALSE(limiter.acquire("k", kStart + 100 * kMs - 1).allowed);
  EXPECT_TRUE(limiter.acquire("k", kStart + 100 * kMs).allowed);
  EXPECT_FALSE(limiter.acquire("k", kStart + 100 * kMs).allowed);

  // From here on, exactly the rate: one per 100 ms over 10 simulated seconds polled every 1 ms.
  int allowed = 0;
  for (int64_t t = kStart + 101 * kMs; t < kStart + 101 * kMs + 10 * kS; t += kMs)
    allowed += limiter.acquire("k", t).allowed;
  EXPECT_EQ(allowed, 100);
}

TEST(RateLimiter, BurstRefillsWhileIdle) {
  RateLimiter limiter(10, 5);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(limiter.acquire("k", kStart).allowed);
  // 250 ms idle: 2 tokens back (and a half).
  int64_t t = kStart + 250 * kMs;
  EXPECT_TRUE(limiter.acquire("k", t).allowed);
  EXPECT_TRUE(limiter.acquire("k", t).allowed);
  auto d = limiter.acquire("k", t);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 50ms);
  // Idle long enough: a full bucket, never more.
  t += 10 * kS;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter.acquire("k", t).allowed);
  EXPECT_FALSE(limiter.acquire("k", t).allowed);
}

TEST(RateLimiter, FractionalRateAndBurstOfOne) {
  RateLimiter limiter(0.5, 1);  // one request every 2 s
  EXPECT_TRUE(limiter.acquire("k", kStart).allowed);
  auto d = limiter.acquire("k", kStart + 500 * kMs);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 1500ms);
  EXPECT_EQ(retry_after_seconds(d), 2);
  EXPECT_TRUE(limiter.acquire("k", kStart + 2 * kS).allowed);
}

TEST(RateLimiter, RetryAfterSecondsRoundsUpAndIsAtLeastOne) {
  EXPECT_EQ(retry_after_seconds({false, 1ns}), 1);
  EXPECT_EQ(retry_after_seconds({false, 999ms}), 1);
  EXPECT_EQ(retry_after_seconds({false, 1s}), 1);
  EXPECT_EQ(retry_after_seconds({false, 1001ms}), 2);
  EXPECT_EQ(retry_after_seconds({true, 0ns}), 1);
  EXPECT_EQ(retry_after_seconds({false, std::chrono::nanoseconds(INT64_MAX)}), INT32_MAX);
}

TEST(RateLimiter, DistinctKeysAreIndependent) {
  RateLimiter limiter(1, 3);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(limiter.acquire("10.0.0.1", kStart).allowed);
  EXPECT_FALSE(limiter.acquire("10.0.0.1", kStart).allowed);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.acquire("10.0.0.2", kStart).allowed);
  EXPECT_FALSE(limiter.acquire("10.0.0.2", kStart).allowed);
  EXPECT_TRUE(limiter.acquire("", kStart).allowed);  // a missing header value is a key like any other
  EXPECT_EQ(limiter.size(), 3u);
}

TEST(RateLimiter, RouteBucketNeedsNoKey) {
  RateLimiter limiter(100, 2);
  EXPECT_TRUE(limiter.acquire(kStart).allowed);
  EXPECT_TRUE(limiter.acquire(kStart).allowed);
  auto d = limiter.acquire(kStart);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after, 10ms);
  EXPECT_EQ(limiter.size(), 0u);
  EXPECT_TRUE(limiter.acquire("k", kStart).allowed);  // keyed buckets are separate
}

TEST(RateLimiter, BurstBelowOneIsOne) {
  RateLimiter limiter(10, 0.2);
  EXPECT_TRUE(limiter.acquire(kStart).allowed);
  EXPECT_FALSE(limiter.acquire(kStart).allowed);
  EXPECT_THROW(RateLimiter(0, 1), std::invalid_argument);
  EXPECT_THROW(RateLimiter(-3, 1), std::invalid_argument);
}

// Workers share one simulated clock that moves on with every request, in whatever order the
// threads interleave: the total admitted is the rate over the period plus the burst.
void hammer_simulated(int threads, bool keyed) {
  const double rate = 1000, burst = 50;
  const int64_t step = 10'000;          // 10 µs per request: 100x more demand than the rate
  const int64_t period = 2 * kS;        // simulated
  RateLimiter limiter(rate, burst);
  std::atomic<int64_t> clock{kStart};
  std::atomic<int64_t> allowed{0};
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&] {
      int64_t mine = 0;
      for (;;) {
        int64_t now = clock.fetch_add(step);
        if (now >= kStart + period) break;
        mine += (keyed ? limiter.acquire("client", now) : limiter.acquire(now)).allowed;
      }
      allowed += mine;
    });
  for (auto& t : pool) t.join();
  double expected = rate * 2 + burst;
  EXPECT_NEAR(static_cast<double>(allowed.load()), expected, expected * 0.05) << threads << " threads";
}

TEST(RateLimiter, RateHoldsAcrossThreadsSimulated) {
  hammer_simulated(2, true);
  hammer_simulated(4, true);
  hammer_simulated(4, false);
}

// The same with the real clock: each thread reads steady_clock itself, as workers do. GCRA never
// admits more than rate × time + burst; it admits less only when every thread is off the CPU for
// longer than burst / rate (here 200 ms), which a loaded 2-core machine can do for shorter spells.
void hammer_real(int threads) {
  const double rate = 2000, burst = 400;
  RateLimiter limiter(rate, burst);
  std::atomic<int64_t> allowed{0};
  std::atomic<bool> go{false};
  const int64_t period = 400 * kMs;
  std::vector<std::thread> pool;
  int64_t start = 0;
  for (int i = 0; i < threads; ++i)
    pool.emplace_back([&] {
      while (!go.load()) std::this_thread::yield();
      int64_t mine = 0;
      for (;;) {
        int64_t now = steady_now();
        if (now >= start + period) break;
        mine += limiter.acquire("client", now).allowed;
      }
      allowed += mine;
    });
  start = steady_now();
  go = true;
  for (auto& t : pool) t.join();
  double expected = rate * (static_cast<double>(period) / kS) + burst;
  EXPECT_NEAR(static_cast<double>(allowed.load()), expected, expected * 0.05) << threads << " threads";
}

TEST(RateLimiter, RateHoldsAcrossThreadsRealClock) {
  hammer_real(2);
  hammer_real(4);
}

TEST(RateLimiter, KeyTableIsBoundedUnderAFloodOfKeys) {
  RateLimiter limiter(1, 10);  // an idle entry takes 1 s to become reclaimable: the table fills
  std::string key;
  for (int i = 0; i < 1'000'000; ++i) {
    key = "spoofed-" + std::to_string(i);
    limiter.acquire(key, kStart + i * 100);  // 1M keys in 0.1 s
  }
  EXPECT_LE(limiter.size(), limiter.max_keys());
  EXPECT_LE(limiter.max_keys(), RateLimiter::kDefaultMaxKeys + RateLimiter::kShards);
  EXPECT_GT(limiter.size(), RateLimiter::kDefaultMaxKeys * 9 / 10);
  EXPECT_GT(limiter.overflowed(), 0u);
  // Keys without room share one bucket: the flood as a whole gets one client's rate, not more.
  RateLimiter small(1, 2, 64);  // one entry per shard
  int allowed = 0;
  for (int i = 0; i < 100'000; ++i) allowed += small.acquire("k" + std::to_string(i), kStart).allowed;
  EXPECT_LE(allowed, 64 * 2 + 2);
  EXPECT_LE(small.size(), 64u);
}

TEST(RateLimiter, IdleEntriesAreReclaimed) {
  RateLimiter limiter(1000, 1, 64 * 20);  // 20 per shard; an entry is idle 1 ms after its request
  for (int i = 0; i < 200'000; ++i) {
    auto d = limiter.acquire("k" + std::to_string(i), kStart + i * 10 * kMs / 1000);  // 100 new keys per ms
    ASSERT_TRUE(d.allowed) << i;
  }
  // Only ~100 keys are live at any moment, so none ever needed the overflow bucket.
  EXPECT_EQ(limiter.overflowed(), 0u);
  EXPECT_LE(limiter.size(), 64u * 20);
}

TEST(RateLimiter, ManyKeysAcrossThreadsStayIndependent) {
  // 4 threads share 8 keys; each key must get exactly its own burst at one instant.
  RateLimiter limiter(1, 100);
  std::atomic<int> allowed[8] = {};
  std::vector<std::thread> pool;
  for (int t = 0; t < 4; ++t)
    pool.emplace_back([&] {
      for (int i = 0; i < 1000; ++i)
        for (int k = 0; k < 8; ++k) allowed[k] += limiter.acquire("key" + std::to_string(k), kStart).allowed;
    });
  for (auto& t : pool) t.join();
  for (int k = 0; k < 8; ++k) EXPECT_EQ(allowed[k].load(), 100) << k;
}
