#include "gateway/resilience/outlier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <barrier>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace flotilla;
using namespace flotilla::gateway;
using namespace flotilla::gateway::resilience;

namespace {
constexpr int64_t kS = 1'000'000'000;
constexpr int64_t kStart = 1'000 * kS;

std::vector<Endpoint> cluster(int n) {
  std::vector<Endpoint> v;
  for (int i = 0; i < n; ++i) {
    Endpoint e;
    e.host = "10.0.0." + std::to_string(i + 1);
    e.port = 8000;
    e.state = std::make_shared<EndpointState>(e.host + ":8000");
    v.push_back(std::move(e));
  }
  return v;
}

// `n` failures in a row; true when one of them ejected.
bool fail(const OutlierDetector& d, std::vector<Endpoint>& c, int index, int n, int64_t now) {
  bool ejected = false;
  for (int i = 0; i < n; ++i) ejected |= d.on_failure(*c[index].state, c, now);
  return ejected;
}
}  // namespace

TEST(Outlier, FiveConsecutiveFailuresEject) {
  OutlierDetector d;
  auto c = cluster(4);
  auto& s = *c[0].state;
  EXPECT_FALSE(fail(d, c, 0, 4, kStart));
  EXPECT_FALSE(OutlierDetector::ejected(s, kStart));
  EXPECT_TRUE(d.on_failure(s, c, kStart));
  EXPECT_TRUE(OutlierDetector::ejected(s, kStart));
  EXPECT_TRUE(OutlierDetector::ejected(s, kStart + 30 * kS - 1));
  EXPECT_FALSE(OutlierDetector::ejected(s, kStart + 30 * kS));  // back after base_ejection_time
  EXPECT_EQ(s.times_ejected.load(), 1u);
  EXPECT_EQ(s.ejections_total.load(), 1u);
  EXPECT_EQ(s.consecutive_failures.load(), 0u);
  EXPECT_EQ(OutlierDetector::ejected_count(c, kStart), 1u);
  EXPECT_EQ(OutlierDetector::ejected_count(c, kStart + 30 * kS), 0u);
}

TEST(Outlier, ALoweredThresholdEjectsAnEndpointAlreadyPastIt) {
  // Endpoint state outlives a reload: 3 failures counted under a threshold of 5, then the
  // threshold becomes 2. The next failure ejects (the count never equals 2 again).
  OutlierDetector before;
  auto c = cluster(4);
  EXPECT_FALSE(fail(before, c, 0, 3, kStart));
  OutlierConfig lower;
  lower.consecutive_failures = 2;
  OutlierDetector after(lower);
  EXPECT_TRUE(after.on_failure(*c[0].state, c, kStart));
  EXPECT_TRUE(OutlierDetector::ejected(*c[0].state, kStart));
}

TEST(Outlier, ASuccessResetsTheCount) {
  OutlierDetector d;
  auto c = cluster(4);
  EXPECT_FALSE(fail(d, c, 0, 4, kStart));
  d.on_success(*c[0].state);
  EXPECT_FALSE(fail(d, c, 0, 4, kStart));
  EXPECT_FALSE(OutlierDetector::ejected(*c[0].state, kStart));
  EXPECT_TRUE(d.on_failure(*c[0].state, c, kStart));  // the fifth in a row
}

TEST(Outlier, EjectionTimeGrowsAndIsCapped) {
  OutlierDetector d;
  auto c = cluster(2);
  auto& s = *c[0].state;
  int64_t now = kStart;
  for (int64_t expected : {30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 300, 300}) {
    ASSERT_TRUE(fail(d, c, 0, 5, now));
    int64_t until = s.ejected_until_ns.load();
    EXPECT_EQ(until - now, expected * kS);
    now = until;  // it fails again as soon as it is back
  }
  EXPECT_EQ(s.ejections_total.load(), 12u);
  EXPECT_EQ(d.ejection_time(0).count(), 0);
  EXPECT_EQ(d.ejection_time(1000000).count(), 300 * kS);
}

TEST(Outlier, TimesEjectedDecaysWhileBackInService) {
  OutlierDetector d;
  auto c = cluster(2);
  auto& s = *c[0].state;
  ASSERT_TRUE(fail(d, c, 0, 5, kStart));                  // 30 s
  ASSERT_TRUE(fail(d, c, 0, 5, kStart + 30 * kS));        // 60 s, until +90
  ASSERT_TRUE(fail(d, c, 0, 5, kStart + 90 * kS));        // 90 s, until +180
  // Back for 30 s (one base_ejection_time): one step down, so the next is the 3rd again.
  ASSERT_TRUE(fail(d, c, 0, 5, kStart + 210 * kS));
  EXPECT_EQ(s.ejected_until_ns.load() - (kStart + 210 * kS), 90 * kS);
  // Back long enough to forget it all: 30 s again.
  int64_t back = s.ejected_until_ns.load() + 10 * 30 * kS;
  ASSERT_TRUE(fail(d, c, 0, 5, back));
  EXPECT_EQ(s.ejected_until_ns.load() - back, 30 * kS);
  EXPECT_EQ(s.times_ejected.load(), 1u);
}

TEST(Outlier, FailuresWhileEjectedAreIgnored) {
  OutlierDetector d;
  auto c = cluster(2);
  auto& s = *c[0].state;
  ASSERT_TRUE(fail(d, c, 0, 5, kStart));
  EXPECT_FALSE(fail(d, c, 0, 20, kStart + kS));  // responses to requests sent before the ejection
  EXPECT_EQ(s.consecutive_failures.load(), 0u);
  int64_t back = kStart + 30 * kS;
  EXPECT_FALSE(fail(d, c, 0, 4, back));  // a clean count on return
  EXPECT_TRUE(d.on_failure(s, c, back));
}

TEST(Outlier, MaxEjectionPercent) {
  OutlierDetector d;  // 50 %
  {
    auto c = cluster(1);  // 50 % of 1 is 0: a single endpoint is never ejected
    EXPECT_FALSE(fail(d, c, 0, 50, kStart));
    EXPECT_EQ(c[0].state->ejections_total.load(), 0u);
  }
  {
    auto c = cluster(2);
    EXPECT_TRUE(fail(d, c, 0, 5, kStart));
    EXPECT_FALSE(fail(d, c, 1, 5, kStart));
    EXPECT_FALSE(OutlierDetector::ejected(*c[1].state, kStart));
    // Once the first is back, the second may go.
    EXPECT_TRUE(fail(d, c, 1, 5, kStart + 30 * kS));
  }
  {
    auto c = cluster(3);
    EXPECT_TRUE(fail(d, c, 0, 5, kStart));
    EXPECT_FALSE(fail(d, c, 1, 5, kStart));
    EXPECT_FALSE(fail(d, c, 2, 5, kStart));
    EXPECT_EQ(OutlierDetector::ejected_count(c, kStart), 1u);
  }
  {
    auto c = cluster(4);
    EXPECT_TRUE(fail(d, c, 0, 5, kStart));
    EXPECT_TRUE(fail(d, c, 1, 5, kStart));
    EXPECT_FALSE(fail(d, c, 2, 5, kStart));
    EXPECT_FALSE(fail(d, c, 3, 5, kStart));
    EXPECT_EQ(OutlierDetector::ejected_count(c, kStart), 2u);
  }
  {
    OutlierConfig all;
    all.max_ejection_percent = 100;
    OutlierDetector d100(all);
    auto c = cluster(1);
    EXPECT_TRUE(fail(d100, c, 0, 5, kStart));
    OutlierConfig none;
    none.max_ejection_percent = 0;
    OutlierDetector d0(none);
    auto c4 = cluster(4);
    EXPECT_FALSE(fail(d0, c4, 0, 5, kStart));
  }
}

TEST(Outlier, RefusedEjectionStillResetsTheCount) {
  OutlierDetector d;
  auto c = cluster(2);
  ASSERT_TRUE(fail(d, c, 0, 5, kStart));
  EXPECT_FALSE(fail(d, c, 1, 5, kStart));  // capped
  EXPECT_EQ(c[1].state->consecutive_failures.load(), 0u);
  int64_t back = kStart + 30 * kS;
  EXPECT_FALSE(fail(d, c, 1, 4, back));  // a new run of 5 is needed, as in Envoy
  EXPECT_TRUE(d.on_failure(*c[1].state, c, back));
}

TEST(Outlier, WhatCountsAsAFailure) {
  OutlierDetector d;
  EXPECT_TRUE(d.is_failure(Outcome::connect_failure()));
  EXPECT_TRUE(d.is_failure(Outcome::reset(true)));
  EXPECT_TRUE(d.is_failure(Outcome::timeout(false)));
  EXPECT_TRUE(d.is_failure(Outcome::response(500)));
  EXPECT_TRUE(d.is_failure(Outcome::response(503)));
  EXPECT_FALSE(d.is_failure(Outcome::response(200)));
  EXPECT_FALSE(d.is_failure(Outcome::response(404)));
  EXPECT_FALSE(d.is_failure(Outcome::response(429)));

  OutlierConfig gateway_only;
  gateway_only.count_5xx = false;
  OutlierDetector g(gateway_only);
  EXPECT_TRUE(g.is_failure(Outcome::reset(false)));
  EXPECT_FALSE(g.is_failure(Outcome::response(503)));

  // report(): a 5xx that does not count is a success and resets the run.
  auto c = cluster(2);
  auto& s = *c[0].state;
  for (int i = 0; i < 4; ++i) g.report(s, c, Outcome::connect_failure(), kStart);
  g.report(s, c, Outcome::response(503), kStart);
  EXPECT_EQ(s.consecutive_failures.load(), 0u);
  for (int i = 0; i < 4; ++i) EXPECT_FALSE(d.report(s, c, Outcome::response(502), kStart));
  EXPECT_TRUE(d.report(s, c, Outcome::timeout(true), kStart));
}

TEST(Outlier, DisabledWithZeroConsecutive) {
  OutlierConfig off;
  off.consecutive_failures = 0;
  OutlierDetector d(off);
  auto c = cluster(4);
  EXPECT_FALSE(fail(d, c, 0, 100, kStart));
}

TEST(Outlier, FromConfig) {
  config::OutlierDetection od;
  od.consecutive_failures = 3;
  od.base_ejection_time = std::chrono::seconds(10);
  od.max_ejection_time = std::chrono::seconds(25);
  od.max_ejection_percent = 100;
  OutlierDetector d(outlier_config(od));
  auto c = cluster(1);
  ASSERT_TRUE(fail(d, c, 0, 3, kStart));
  EXPECT_EQ(c[0].state->ejected_until_ns.load() - kStart, 10 * kS);
  EXPECT_EQ(d.ejection_time(2).count(), 20 * kS);
  EXPECT_EQ(d.ejection_time(3).count(), 25 * kS);
}

TEST(Outlier, ConcurrentFailuresEjectExactlyOnce) {
  OutlierDetector d;
  for (int round = 0; round < 500; ++round) {
    auto c = cluster(4);
    std::barrier sync(2);
    std::atomic<int> ejections{0};
    auto worker = [&] {
      sync.arrive_and_wait();
      for (int i = 0; i < 50; ++i) ejections += d.on_failure(*c[0].state, c, kStart);
    };
    std::thread a(worker), b(worker);
    a.join();
    b.join();
    ASSERT_EQ(ejections.load(), 1) << "round " << round;
    ASSERT_EQ(c[0].state->ejections_total.load(), 1u);
    ASSERT_TRUE(OutlierDetector::ejected(*c[0].state, kStart));
  }
}

TEST(Outlier, ConcurrentEjectionsNeverExceedTheCap) {
  OutlierDetector d;  // 50 %: at most 2 of 4
  int total = 0;
  for (int round = 0; round < 500; ++round) {
    auto c = cluster(4);
    std::barrier sync(4);
    std::atomic<int> ejections{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < 4; ++t)
      pool.emplace_back([&, t] {
        sync.arrive_and_wait();
        ejections += fail(d, c, t, 5, kStart);
      });
    for (auto& t : pool) t.join();
    ASSERT_LE(ejections.load(), 2) << "round " << round;
    ASSERT_EQ(static_cast<int>(OutlierDetector::ejected_count(c, kStart)), ejections.load());
    total += ejections.load();
  }
  // Racing deciders may both withdraw (conservative), but that is rare.
  EXPECT_GT(total, 500);
}
