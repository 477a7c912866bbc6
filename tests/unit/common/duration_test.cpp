#include "common/duration.h"

#include <gtest/gtest.h>

using namespace flotilla;
using namespace std::chrono_literals;

TEST(Duration, ParsesGoSyntax) {
  EXPECT_EQ(parse_duration("250ms"), Duration(250ms));
  EXPECT_EQ(parse_duration("10s"), Duration(10s));
  EXPECT_EQ(parse_duration("1m30s"), Duration(90s));
  EXPECT_EQ(parse_duration("1.5h"), Duration(90min));
  EXPECT_EQ(parse_duration("2h45m"), Duration(165min));
  EXPECT_EQ(parse_duration("0"), Duration::zero());
  EXPECT_EQ(parse_duration("10us"), Duration(10us));
  EXPECT_EQ(parse_duration("7ns"), Duration(7ns));
  EXPECT_EQ(parse_duration("-1s"), Duration(-1s));
}

TEST(Duration, RejectsMalformed) {
  for (const char* bad : {"", "10", "s", "1x", "1.s5", "ms", "--1s", "1s2", "9999999999999h", "1 s"}) {
    EXPECT_FALSE(parse_duration(bad).has_value()) << bad;
  }
}

TEST(Duration, FormatsLikeGo) {
  EXPECT_EQ(format_duration(0s), "0s");
  EXPECT_EQ(format_duration(250ms), "250ms");
  EXPECT_EQ(format_duration(90s), "1m30s");
  EXPECT_EQ(format_duration(1500ms), "1.5s");
  EXPECT_EQ(format_duration(3h), "3h0m0s");
  EXPECT_EQ(format_duration(10us), "10us");
  for (auto d : {Duration(123456789), Duration(42s), Duration(7min)}) {
    EXPECT_EQ(parse_duration(format_duration(d)), d);
  }
}
