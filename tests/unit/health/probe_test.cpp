#include "health/probe.h"

#include <gtest/gtest.h>

using namespace flotilla::health;

TEST(Probe, ParsesCheckUrls) {
  Url u;
  ASSERT_TRUE(parse_url("http://127.0.0.1:8080/health?x=1", u));
  EXPECT_FALSE(u.tls);
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, "8080");
  EXPECT_EQ(u.target, "/health?x=1");
  ASSERT_TRUE(parse_url("https://example.test", u));
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.port, "443");
  EXPECT_EQ(u.target, "/");
  ASSERT_TRUE(parse_url("http://[::1]:9/", u));
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, "9");
  ASSERT_TRUE(parse_url("http://user:pw@h:81?q", u));
  EXPECT_EQ(u.host, "h");
  EXPECT_EQ(u.target, "/?q");
}

TEST(Probe, RejectsBadUrls) {
  Url u;
  for (const char* bad : {"ftp://h/", "http://", "http://:80/", "http://h:port/", "http://h:99999/", "h:80",
                          "http://h:123456789012345678901234/"}) {
    EXPECT_FALSE(parse_url(bad, u)) << bad;
  }
}
