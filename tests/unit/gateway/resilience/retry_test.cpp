#include "gateway/resilience/retry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <random>
#include <thread>

using namespace flotilla::gateway::resilience;
using namespace std::chrono_literals;

TEST(RetryOn, ParsesEachCondition) {
  auto cf = parse_retry_on({"connect-failure"});
  EXPECT_TRUE(cf.connect_failure);
  EXPECT_FALSE(cf.reset);
  EXPECT_TRUE(cf.status.none());

  auto reset = parse_retry_on({"reset"});
  EXPECT_TRUE(reset.connect_failure && reset.reset);
  EXPECT_TRUE(reset.status.none());

  auto any5 = parse_retry_on({"5xx"});
  EXPECT_TRUE(any5.connect_failure && any5.reset);
  EXPECT_EQ(any5.status.count(), 100u);
  EXPECT_TRUE(any5.status.test(500) && any5.status.test(599));

  auto gw = parse_retry_on({"gateway-error"});
  EXPECT_TRUE(gw.connect_failure && gw.reset);
  EXPECT_EQ(gw.status.count(), 3u);
  EXPECT_TRUE(gw.status.test(502) && gw.status.test(503) && gw.status.test(504));

  auto r4 = parse_retry_on({"retriable-4xx"});
  EXPECT_FALSE(r4.connect_failure || r4.reset);
  EXPECT_EQ(r4.status.count(), 1u);
  EXPECT_TRUE(r4.status.test(409));

  auto codes = parse_retry_on({"503", "429"});
  EXPECT_FALSE(codes.connect_failure || codes.reset);
  EXPECT_EQ(codes.status.count(), 2u);

  EXPECT_TRUE(parse_retry_on({}).status.none());
  for (const char* bad : {"5XX", "timeout", "600", "99", "0503", "50a", "", "200", "302", "100"})
    EXPECT_THROW(parse_retry_on({bad}), std::invalid_argument) << bad;
}

TEST(RetryOn, RetryableOutcomes) {
  auto defaults = parse_retry_on({"connect-failure", "reset", "503"});  // DESIGN §6
  EXPECT_TRUE(retryable(defaults, Outcome::connect_failure()));
  EXPECT_TRUE(retryable(defaults, Outcome::reset(true)));
  EXPECT_TRUE(retryable(defaults, Outcome::timeout(true)));
  EXPECT_TRUE(retryable(defaults, Outcome::response(503)));
  EXPECT_FALSE(retryable(defaults, Outcome::response(502)));
  EXPECT_FALSE(retryable(defaults, Outcome::response(500)));
  EXPECT_FALSE(retryable(defaults, Outcome::response(200)));

  auto cf = parse_retry_on({"connect-failure"});
  EXPECT_TRUE(retryable(cf, Outcome::connect_failure()));
  EXPECT_FALSE(retryable(cf, Outcome::reset(false)));
  EXPECT_FALSE(retryable(cf, Outcome::timeout(false)));

  auto gw = parse_retry_on({"gateway-error"});
  EXPECT_TRUE(retryable(gw, Outcome::response(504)));
  EXPECT_FALSE(retryable(gw, Outcome::response(500)));
  EXPECT_TRUE(retryable(gw, Outcome::timeout(true)));

  auto any5 = parse_retry_on({"5xx"});
  EXPECT_TRUE(retryable(any5, Outcome::response(500)));
  EXPECT_TRUE(retryable(any5, Outcome::response(599)));
  EXPECT_FALSE(retryable(any5, Outcome::response(409)));

  auto r4 = parse_retry_on({"retriable-4xx"});
  EXPECT_TRUE(retryable(r4, Outcome::response(409)));
  EXPECT_FALSE(retryable(r4, Outcome::response(404)));
  EXPECT_FALSE(retryable(r4, Outcome::connect_failure()));

  // An exact code matches only an answer, and nonsense statuses match nothing.
  auto c504 = parse_retry_on({"504"});
  EXPECT_FALSE(retryable(c504, Outcome::timeout(true)));
  EXPECT_FALSE(retryable(any5, Outcome::response(-1)));
  EXPECT_FALSE(retryable(any5, Outcome::response(600)));
  EXPECT_FALSE(retryable(any5, Outcome::response(100000)));
}

TEST(Retry, Idempotency) {
  for (const char* m : {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}) EXPECT_TRUE(is_idempotent(m)) << m;
  for (const char* m : {"POST", "PATCH", "CONNECT", "PROPFIND", "get", ""}) EXPECT_FALSE(is_idempotent(m)) << m;

  // Idempotent: whatever happened.
  EXPECT_TRUE(may_resend("GET", Outcome::reset(true)));
  EXPECT_TRUE(may_resend("PUT", Outcome::response(503)));
  EXPECT_TRUE(may_resend("DELETE", Outcome::timeout(true)));
  // Not idempotent: only if nothing of it reached the upstream.
  EXPECT_TRUE(may_resend("POST", Outcome::connect_failure()));
  EXPECT_TRUE(may_resend("POST", Outcome::reset(false)));
  EXPECT_FALSE(may_resend("POST", Outcome::reset(true)));
  EXPECT_FALSE(may_resend("PATCH", Outcome::timeout(true)));
  EXPECT_FALSE(may_resend("POST", Outcome::response(503)));
  Outcome odd{Outcome::Kind::connect_failure, 0, true};  // a connect failure never sent anything
  EXPECT_TRUE(may_resend("POST", odd));
}

TEST(Retry, ShouldRetryCombinesBoth) {
  auto on = parse_retry_on({"connect-failure", "reset", "503"});
  EXPECT_TRUE(should_retry(on, "GET", Outcome::response(503)));
  EXPECT_FALSE(should_retry(on, "POST", Outcome::response(503)));
  EXPECT_TRUE(should_retry(on, "POST", Outcome::connect_failure()));
  EXPECT_FALSE(should_retry(on, "POST", Outcome::reset(true)));
  EXPECT_FALSE(should_retry(on, "GET", Outcome::response(500)));
}

TEST(Retry, FullJitterBackoffBounds) {
  Backoff b;  // 25 ms, cap 250 ms
  auto ceiling = [&](int retry) { return backoff_delay(b, retry, UINT64_MAX); };
  // UINT64_MAX % (c + 1) is not c in general; probe the exact ceiling with random = c instead.
  auto at = [&](int retry, std::chrono::nanoseconds c) { return backoff_delay(b, retry, c.count()); };
  EXPECT_EQ(at(0, 25ms), 25ms);
  EXPECT_EQ(at(0, 25ms + 1ns), 0ns);  // wraps: never above the ceiling
  EXPECT_EQ(at(1, 50ms), 50ms);
  EXPECT_EQ(at(2, 100ms), 100ms);
  EXPECT_EQ(at(3, 200ms), 200ms);
  EXPECT_EQ(at(4, 250ms), 250ms);
  EXPECT_EQ(at(4, 250ms + 1ns), 0ns);
  EXPECT_EQ(backoff_delay(b, 0, 0), 0ns);
  for (int retry : {0, 1, 5, 62, 63, 64, 1000, INT32_MAX}) EXPECT_LE(ceiling(retry), 250ms) << retry;

  std::mt19937_64 rng(42);
  for (int retry = 0; retry < 8; ++retry) {
    auto cap = std::min<std::chrono::nanoseconds>(250ms, 25ms * (1 << retry));
    double sum = 0;
    const int n = 20000;
    for (int i = 0; i < n; ++i) {
      auto d = backoff_delay(b, retry, rng());
      ASSERT_GE(d, 0ns);
      ASSERT_LE(d, cap);
      sum += static_cast<double>(d.count());
    }
    EXPECT_NEAR(sum / n, static_cast<double>(cap.count()) / 2, static_cast<double>(cap.count()) * 0.02) << retry;
  }
  Backoff zero{0ns, 0ns};
  EXPECT_EQ(backoff_delay(zero, INT32_MAX, 12345), 0ns);
}

TEST(RetryBudget, TwentyPercentOfActiveWithAFloorOfThree) {
  std::atomic<int64_t> retries{0};
  RetryBudget budget({}, retries);
  EXPECT_EQ(budget.max_retries(0), 3);
  EXPECT_EQ(budget.max_retries(10), 3);
  EXPECT_EQ(budget.max_retries(19), 3);
  EXPECT_EQ(budget.max_retries(20), 4);
  EXPECT_EQ(budget.max_retries(100), 20);
  EXPECT_EQ(budget.max_retries(1004), 200);

  std::vector<Slot> held;
  for (int i = 0; i < 3; ++i) held.push_back(budget.try_acquire(5));
  for (auto& s : held) EXPECT_TRUE(s);
  EXPECT_FALSE(budget.try_acquire(5));
  EXPECT_TRUE(budget.try_acquire(20));  // more traffic, more room (taken and released)
  held.pop_back();
  EXPECT_TRUE(budget.try_acquire(5));
  EXPECT_EQ(retries.load(), 2);

  RetryBudget strict({50.0, 0}, retries);
  held.clear();
  EXPECT_EQ(strict.max_retries(1), 0);
  EXPECT_FALSE(strict.try_acquire(1));
  EXPECT_TRUE(strict.try_acquire(2));
}

TEST(RetryBudget, RacingThreadsStayWithinTheBudget) {
  std::atomic<int64_t> retries{0};
  std::atomic<int64_t> peak{0};
  RetryBudget budget({}, retries);
  std::barrier sync(2);
  auto worker = [&] {
    sync.arrive_and_wait();
    for (int i = 0; i < 100'000; ++i) {
      Slot s = budget.try_acquire(50);  // room for 10
      if (!s) continue;
      int64_t seen = retries.load();
      int64_t p = peak.load();
      while (seen > p && !peak.compare_exchange_weak(p, seen)) {
      }
    }
  };
  std::thread a(worker), b(worker);
  a.join();
  b.join();
  EXPECT_LE(peak.load(), 10);
  EXPECT_EQ(retries.load(), 0);
}
