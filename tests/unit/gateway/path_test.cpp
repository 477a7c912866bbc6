#include "gateway/path.h"

#include <gtest/gtest.h>

using flotilla::gateway::normalize_path;

TEST(GatewayPath, Normalizes) {
  const std::pair<const char*, const char*> cases[] = {
      {"/", "/"},
      {"/a/b", "/a/b"},
      {"/a/b/", "/a/b/"},
      {"//a///b", "/a/b"},
      {"/a/./b", "/a/b"},
      {"/a/b/..", "/a/"},
      {"/a/b/../c", "/a/c"},
      {"/api/../admin", "/admin"},
      {"/../../etc/passwd", "/etc/passwd"},
      {"/api/%2e%2e/admin", "/admin"},       // encoded dots are unreserved: decoded, then resolved
      {"/api/%2E%2e/%2e/admin", "/admin"},
      {"/%61%62c", "/abc"},                 // unreserved escapes decoded
      {"/a%2fb", "/a%2Fb"},                 // an encoded '/' is not a separator; canonical case
      {"/a%2F..%2Fb", "/a%2F..%2Fb"},       // so it never creates a ".." segment
      {"/sp%20ace", "/sp%20ace"},
      {"/.", "/"},
      {"/..", "/"},
      {"/a/..", "/"},
      // Characters a URI cannot hold raw are escaped as browsers send them: one path either way.
      {"/users/{id}", "/users/%7Bid%7D"},
      {"/users/%7bid%7D", "/users/%7Bid%7D"},
      {"/a|b^c`d\\e\"f<g>", "/a%7Cb%5Ec%60d%5Ce%22f%3Cg%3E"},
      {"/keep!$&'()*+,;=:@-._~", "/keep!$&'()*+,;=:@-._~"},  // sub-delims and the rest stay raw
  };
  for (auto [in, want] : cases) {
    auto got = normalize_path(in);
    ASSERT_TRUE(got) << in;
    EXPECT_EQ(*got, want) << in;
  }
}

TEST(GatewayPath, Refuses) {
  for (const char* bad : {"", "a/b", "/a%", "/a%2", "/a%zz", "/a%00b", "/a%0d%0a", "/a%7f"}) {
    EXPECT_FALSE(normalize_path(bad)) << bad;
  }
}

TEST(GatewayPath, IdempotentAndNoDotSegmentsLeft) {
  for (const char* in : {"/a/../b/./c//d/", "/%2e/x/%2E%2E/y", "/x/y/z/../../..", "/q%2Fr/../s", "/{x}/|"}) {
    auto once = normalize_path(in);
    ASSERT_TRUE(once);
    EXPECT_EQ(normalize_path(*once), once) << in;
    EXPECT_EQ(once->find("/../"), std::string::npos);
    EXPECT_EQ(once->find("/./"), std::string::npos);
    EXPECT_EQ(once->find("//"), std::string::npos);
  }
}
