#include "common/metrics.h"

#include <gtest/gtest.h>

using namespace flotilla::metrics;

TEST(Metrics, RendersPrometheusText) {
  Registry r;
  r.counter("req_total", "Requests.", {{"code", "200"}}).inc(3);
  r.counter("req_total", "Requests.", {{"code", "500"}}).inc();
  r.gauge("open", "Open things.").set(7);
  auto& h = r.histogram("lat_seconds", "Latency.", {0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5);
  r.gauge_callback("computed", "Computed.", {{"a", "b\"c"}}, [] { return 1.5; });
  auto text = r.render();
  EXPECT_NE(text.find("# TYPE req_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("req_total{code=\"200\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("req_total{code=\"500\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("open 7\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.1\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"1\"} 2\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_count 3\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_sum 5.55\n"), std::string::npos);
  EXPECT_NE(text.find("computed{a=\"b\\\"c\"} 1.5\n"), std::string::npos);
}

TEST(Metrics, SameSeriesIsSameCounter) {
  Registry r;
  auto& a = r.counter("x_total", "X.", {{"k", "v"}});
  auto& b = r.counter("x_total", "X.", {{"k", "v"}});
  EXPECT_EQ(&a, &b);
  EXPECT_THROW(r.gauge("x_total", "X."), std::logic_error);
}
