#include "supervisor/autoscaler.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace flotilla;
using namespace flotilla::supervisor;
using namespace std::chrono_literals;

namespace {

config::Autoscale rps(int min, int max, double target) { return {min, max, "rps_per_instance", target}; }

// Explicit time points: the autoscaler never reads the clock itself.
const Autoscaler::Clock::time_point t0{std::chrono::hours(1)};

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

}  // namespace

TEST(Autoscaler, HpaExampleScalesUpAtOnce) {
  Autoscaler a(rps(1, 8, 200));
  auto d = a.evaluate(2, 412, t0);  // 2 × 412 / 200 = 4.12 -> 5
  EXPECT_EQ(d.recommendation, 5);
  EXPECT_EQ(d.desired, 5);
  EXPECT_TRUE(d.changed);
  EXPECT_DOUBLE_EQ(d.metric, 412);
  EXPECT_EQ(d.reason, "rps_per_instance 412.0 / target 200 at 2 instances -> 5");
}

TEST(Autoscaler, MoreHpaExamples) {
  Autoscaler a(config::Autoscale{1, 20, "cpu_percent", 50});
  EXPECT_EQ(a.evaluate(4, 100, t0).desired, 8);  // doubling the target doubles the instances
  Autoscaler b(config::Autoscale{1, 20, "p95_ms", 100});
  EXPECT_EQ(b.evaluate(3, 250, t0).desired, 8);  // 3 × 2.5 = 7.5 -> 8
  Autoscaler c(config::Autoscale{1, 20, "inflight", 10});
  auto d = c.evaluate(1, 35, t0);
  EXPECT_EQ(d.desired, 4);
  EXPECT_EQ(d.reason, "inflight 35.0 / target 10 at 1 instance -> 4");
  // An exact product is not rounded up by floating-point noise: 2 × 0.3 / 0.1 is 6, not 7.
  Autoscaler e(config::Autoscale{1, 20, "cpu_percent", 0.1});
  EXPECT_EQ(e.evaluate(2, 0.3, t0).desired, 6);
}

TEST(Autoscaler, ToleranceBandKeepsCurrent) {
  Autoscaler a(rps(1, 10, 100));
  for (double m : {90.0, 95.0, 100.0, 105.0, 110.0}) {  // |m/100 - 1| <= 0.1, the band's edges included
    auto d = a.evaluate(4, m, t0);
    EXPECT_EQ(d.recommendation, 4) << m;
    EXPECT_EQ(d.desired, 4) << m;
    EXPECT_FALSE(d.changed) << m;
  }
  EXPECT_TRUE(has(a.evaluate(4, 108, t0).reason, "within tolerance 0.1"));
  // Just outside the band: 4 × 1.11 = 4.44 -> 5.
  Autoscaler b(rps(1, 10, 100));
  EXPECT_EQ(b.evaluate(4, 111, t0).desired, 5);
  // A tighter tolerance acts on smaller deviations.
  Autoscaler c(rps(1, 10, 100), 0.01);
  EXPECT_EQ(c.evaluate(4, 105, t0).desired, 5);
}

TEST(Autoscaler, ClampsToMinAndMax) {
  Autoscaler a(rps(2, 6, 100));
  auto up = a.evaluate(3, 1000, t0);  // 30 wanted
  EXPECT_EQ(up.recommendation, 6);
  EXPECT_EQ(up.desired, 6);
  EXPECT_TRUE(has(up.reason, "capped at max 6")) << up.reason;

  Autoscaler b(rps(2, 6, 100), 0.1, 0s);  // no window: scale-down applies at once
  auto down = b.evaluate(4, 1, t0);       // 1 wanted
  EXPECT_EQ(down.recommendation, 2);
  EXPECT_EQ(down.desired, 2);
  EXPECT_TRUE(has(down.reason, "raised to min 2")) << down.reason;

  // Below min for any reason (a crash): brought back up at once even within the tolerance.
  Autoscaler c(rps(3, 6, 100));
  auto d = c.evaluate(1, 100, t0);
  EXPECT_EQ(d.desired, 3);
  EXPECT_TRUE(d.changed);

  // An absurd metric does not overflow.
  Autoscaler e(rps(1, 1000, 1));
  EXPECT_EQ(e.evaluate(1000, 1e300, t0).desired, 1000);
}

TEST(Autoscaler, ScaleDownHeldForTheWindowThenReleased) {
  Autoscaler a(rps(1, 10, 100), 0.1, 60s);
  EXPECT_EQ(a.evaluate(2, 250, t0).desired, 5);  // up at once

  // The burst is over: each sample recommends 1, but 5 was recommended within the last 60 s.
  for (auto at : {t0 + 1s, t0 + 30s, t0 + 60s}) {
    auto d = a.evaluate(5, 10, at);
    EXPECT_EQ(d.recommendation, 1);
    EXPECT_EQ(d.desired, 5) << "held at +" << (at - t0) / 1s << "s";
    EXPECT_FALSE(d.changed);
    EXPECT_TRUE(has(d.reason, "held")) << d.reason;
  }
  // More than 60 s after the last 5: released to the highest left in the window (all 1s).
  auto d = a.evaluate(5, 10, t0 + 61s);
  EXPECT_EQ(d.desired, 1);
  EXPECT_TRUE(d.changed);
  EXPECT_EQ(d.reason, "rps_per_instance 10.0 / target 100 at 5 instances -> 1");
}

TEST(Autoscaler, ScaleDownGoesToTheHighestRecentRecommendation) {
  Autoscaler a(rps(1, 10, 100), 0.1, 60s);
  EXPECT_EQ(a.evaluate(2, 400, t0).desired, 8);
  EXPECT_EQ(a.evaluate(8, 50, t0 + 20s).recommendation, 4);  // held at 8
  EXPECT_EQ(a.evaluate(8, 25, t0 + 40s).recommendation, 2);  // held at 8
  // The 8 left the window; the 4 (t0+20s) is the highest still in it.
  auto d = a.evaluate(8, 25, t0 + 61s);
  EXPECT_EQ(d.recommendation, 2);
  EXPECT_EQ(d.desired, 4);
  // Then the 4 leaves too (t0+81s > t0+20s+60s).
  EXPECT_EQ(a.evaluate(4, 50, t0 + 81s).desired, 2);
}

TEST(Autoscaler, ScaleDownNeverRaisesAboveCurrent) {
  // A recent high recommendation holds a scale-down back but does not push the count up again.
  Autoscaler a(rps(1, 10, 100), 0.1, 60s);
  EXPECT_EQ(a.evaluate(2, 400, t0).desired, 8);
  auto d = a.evaluate(3, 50, t0 + 5s);  // only 3 ready (say, the others still starting)
  EXPECT_EQ(d.recommendation, 2);
  EXPECT_EQ(d.desired, 3);
  EXPECT_FALSE(d.changed);
  // A scale-up during the window goes to this sample's recommendation, not the window's highest.
  auto up = a.evaluate(3, 200, t0 + 6s);
  EXPECT_EQ(up.desired, 6);
}

TEST(Autoscaler, ScaleUpIgnoresTheWindow) {
  Autoscaler a(rps(1, 10, 100), 0.1, 60s);
  EXPECT_EQ(a.evaluate(4, 100, t0).desired, 4);      // within tolerance: 4 recorded
  EXPECT_EQ(a.evaluate(4, 50, t0 + 1s).desired, 4);  // 2 recommended, held at 4
  EXPECT_EQ(a.evaluate(4, 300, t0 + 2s).desired, 10);  // 12 capped at 10, at once
}

TEST(Autoscaler, ZeroCurrent) {
  Autoscaler a(rps(0, 5, 100));
  auto d = a.evaluate(0, 1, t0);  // any demand starts one
  EXPECT_EQ(d.recommendation, 1);
  EXPECT_EQ(d.desired, 1);
  EXPECT_TRUE(d.changed);
  EXPECT_EQ(d.reason, "rps_per_instance 1.0 / target 100 at 0 instances -> 1");

  Autoscaler idle(rps(0, 5, 100));
  auto n = idle.evaluate(0, 0, t0);  // no demand, min 0: stays at 0
  EXPECT_EQ(n.desired, 0);
  EXPECT_FALSE(n.changed);

  Autoscaler b(rps(3, 5, 100));
  EXPECT_EQ(b.evaluate(0, 5000, t0).desired, 3) << "min, not a multiple of the metric";
  Autoscaler c(rps(2, 5, 100));
  EXPECT_EQ(c.evaluate(0, 0, t0).desired, 2) << "min applies even without demand";
}

TEST(Autoscaler, NanMetricKeepsCurrent) {
  Autoscaler a(rps(1, 5, 100), 0.1, 0s);
  auto d = a.evaluate(3, std::nan(""), t0);
  EXPECT_EQ(d.desired, 3);
  EXPECT_FALSE(d.changed);
}

TEST(Autoscaler, KeepsSettings) {
  Autoscaler a(config::Autoscale{2, 7, "p95_ms", 250});
  EXPECT_EQ(a.settings(), (config::Autoscale{2, 7, "p95_ms", 250}));
  EXPECT_EQ(a.evaluate(2, 500.24, t0).reason, "p95_ms 500.2 / target 250 at 2 instances -> 5");
}

// --- canary ---

namespace {
config::CanaryAnalysis analysis() { return {}; }  // 1 % error increase, 1.5 × p95 + 5 ms, 20 requests
}  // namespace

TEST(CanaryJudge, WaitsForEnoughRequests) {
  auto c = judge_canary(analysis(), {12, 12, 900}, {1000, 0, 40});
  EXPECT_EQ(c.verdict, CanaryVerdict::wait) << "even all failures give no verdict below min_requests";
  EXPECT_EQ(c.reason.rfind("12 requests < 20", 0), 0u) << c.reason;
  EXPECT_EQ(judge_canary(analysis(), {19, 0, 10}, {100, 0, 10}).verdict, CanaryVerdict::wait);
  EXPECT_EQ(judge_canary(analysis(), {20, 0, 10}, {100, 0, 10}).verdict, CanaryVerdict::pass) << "boundary";
  auto none = analysis();
  none.min_requests = 0;
  EXPECT_EQ(judge_canary(none, {0, 0, 0}, {100, 0, 10}).verdict, CanaryVerdict::wait) << "no requests, no verdict";
}

TEST(CanaryJudge, PassesWithinBothLimits) {
  auto c = judge_canary(analysis(), {100, 1, 60}, {1000, 0, 40});
  EXPECT_EQ(c.verdict, CanaryVerdict::pass);
  EXPECT_EQ(c.reason, "error ratio 0.010 <= stable 0.000 + 0.010, p95 60ms <= 1.5 × 40ms + 5ms");
}

TEST(CanaryJudge, FailsOnErrorRatio) {
  auto c = judge_canary(analysis(), {100, 12, 30}, {1000, 0, 40});
  EXPECT_EQ(c.verdict, CanaryVerdict::fail);
  EXPECT_EQ(c.reason, "error ratio 0.120 > stable 0.000 + 0.010");
  // Relative to stable's own ratio: 6 % against stable 5 % + 1 % passes, 7 % fails.
  EXPECT_EQ(judge_canary(analysis(), {100, 6, 40}, {1000, 50, 40}).verdict, CanaryVerdict::pass) << "boundary";
  auto f = judge_canary(analysis(), {100, 7, 40}, {1000, 50, 40});
  EXPECT_EQ(f.verdict, CanaryVerdict::fail);
  EXPECT_EQ(f.reason, "error ratio 0.070 > stable 0.050 + 0.010");
  // Just over the limit at 1000 requests: 11 failures.
  EXPECT_EQ(judge_canary(analysis(), {1000, 11, 40}, {1000, 0, 40}).verdict, CanaryVerdict::fail);
  EXPECT_EQ(judge_canary(analysis(), {1000, 10, 40}, {1000, 0, 40}).verdict, CanaryVerdict::pass);
}

TEST(CanaryJudge, StableWithoutRequestsCountsAsNoErrorsAndNoP95) {
  auto ok = judge_canary(analysis(), {50, 0, 5000}, {0, 0, 0});
  EXPECT_EQ(ok.verdict, CanaryVerdict::pass) << "p95 is not compared without stable traffic";
  EXPECT_TRUE(has(ok.reason, "not compared")) << ok.reason;
  auto bad = judge_canary(analysis(), {50, 1, 10}, {0, 0, 0});  // 2 % > 0 + 1 %
  EXPECT_EQ(bad.verdict, CanaryVerdict::fail);
  EXPECT_EQ(bad.reason, "error ratio 0.020 > stable 0.000 + 0.010");
}

TEST(CanaryJudge, FailsOnP95) {
  auto c = judge_canary(analysis(), {100, 0, 812}, {1000, 0, 40});
  EXPECT_EQ(c.verdict, CanaryVerdict::fail);
  EXPECT_EQ(c.reason, "p95 812ms > 1.5 × 40ms + 5ms");
  // Boundary: 1.5 × 40 + 5 = 65 passes, 65.5 fails.
  EXPECT_EQ(judge_canary(analysis(), {100, 0, 65}, {1000, 0, 40}).verdict, CanaryVerdict::pass);
  EXPECT_EQ(judge_canary(analysis(), {100, 0, 65.5}, {1000, 0, 40}).verdict, CanaryVerdict::fail);
  // The 5 ms slack keeps very fast services from failing on noise.
  EXPECT_EQ(judge_canary(analysis(), {100, 0, 5}, {1000, 0, 0}).verdict, CanaryVerdict::pass);
  EXPECT_EQ(judge_canary(analysis(), {100, 0, 6}, {1000, 0, 0}).verdict, CanaryVerdict::fail);
}

TEST(CanaryJudge, ErrorRatioIsCheckedFirstAndSettingsApply) {
  auto c = judge_canary(analysis(), {100, 50, 900}, {1000, 0, 40});
  EXPECT_EQ(c.verdict, CanaryVerdict::fail);
  EXPECT_EQ(c.reason.rfind("error ratio", 0), 0u) << c.reason;

  config::CanaryAnalysis loose;
  loose.max_error_ratio_increase = 0.2;
  loose.max_p95_ratio = 3;
  loose.min_requests = 5;
  EXPECT_EQ(judge_canary(loose, {5, 1, 125}, {1000, 0, 40}).verdict, CanaryVerdict::pass);  // 0.2, 3 × 40 + 5
  auto f = judge_canary(loose, {5, 1, 126}, {1000, 0, 40});
  EXPECT_EQ(f.verdict, CanaryVerdict::fail);
  EXPECT_EQ(f.reason, "p95 126ms > 3 × 40ms + 5ms");
  EXPECT_EQ(judge_canary(loose, {5, 2, 10}, {1000, 0, 40}).verdict, CanaryVerdict::fail);
}
