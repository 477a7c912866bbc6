#include "gateway/http1/syntax.h"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace flotilla::gateway::http1::syntax {
namespace {

// Every literal the parsers and the header builders compare field names and Connection options
// with.
const std::vector<std::string> kLiterals = {
    "te", "host", "date", "close", "expect", "upgrade", "trailer", "chunked", "connection", "keep-alive",
    "tracestate", "traceparent", "x-request-id", "content-length", "http2-settings", "x-forwarded-for",
    "proxy-connection", "x-forwarded-host", "transfer-encoding", "x-forwarded-proto", "proxy-authenticate",
    "proxy-authorization"};

std::string tchars() {
  std::string t;
  for (int c = 0; c < 256; ++c)
    if (is_tchar(static_cast<char>(c))) t.push_back(static_cast<char>(c));
  return t;
}

TEST(Syntax, TokenComparisonMatchesEveryCaseOfTheLiteral) {
  std::mt19937 rng(1);
  for (const auto& lit : kLiterals) {
    for (int round = 0; round < 200; ++round) {
      std::string s = lit;
      for (char& c : s)
        if (c >= 'a' && c <= 'z' && rng() % 2) c = static_cast<char>(c - 'a' + 'A');
      EXPECT_TRUE(iequals_token(s, lit)) << s;
      EXPECT_TRUE(iequals(s, lit)) << s;
    }
  }
}

TEST(Syntax, TokenComparisonAgreesWithIequalsOnEveryOneByteChange) {
  // Each literal with one byte replaced by every tchar, at every position: the word-at-a-time
  // comparison must give iequals()'s answer, also for bytes in the overlapping last word.
  const std::string t = tchars();
  for (const auto& lit : kLiterals)
    for (size_t i = 0; i < lit.size(); ++i)
      for (char c : t) {
        std::string s = lit;
        s[i] = c;
        EXPECT_EQ(iequals_token(s, lit), iequals(s, lit)) << s << " vs " << lit;
      }
}

TEST(Syntax, TokenComparisonAgreesWithIequalsOnRandomTokens) {
  const std::string t = tchars();
  std::mt19937 rng(2);
  for (const auto& lit : kLiterals)
    for (int round = 0; round < 2000; ++round) {
      std::string s(lit.size(), 'x');
      for (char& c : s) c = t[rng() % t.size()];
      EXPECT_EQ(iequals_token(s, lit), iequals(s, lit)) << s;
    }
}

size_t naive_cr_or_lf(const std::string& s, size_t from, size_t end) {
  for (size_t i = from; i < end; ++i)
    if (s[i] == '\r' || s[i] == '\n') return i;
  return end;
}

size_t naive_invalid(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i)
    if (!is_field_value_byte(s[i])) return i;
  return std::string_view::npos;
}

// Bytes that sit next to the ones searched for, or that upset word-at-a-time tests by borrows:
// CR, LF, HTAB, NUL, 0x01, 0x0c (one below CR), 0x0e, 0x1f, space, DEL, 0x80, 0xff, letters.
const std::string kTricky = std::string("\r\n\t\0\x01\x0c\x0e\x1f \x7f\x80\xff", 12) + "aZ:-";

TEST(Syntax, FindCrOrLfAgreesWithAByteLoopEverywhere) {
  std::mt19937 rng(3);
  for (int round = 0; round < 200000; ++round) {
    const size_t n = rng() % 40;
    std::string s(n, 'x');
    for (char& c : s)
      if (rng() % 4 == 0) c = kTricky[rng() % kTricky.size()];
    const size_t from = n ? rng() % (n + 1) : 0;
    const size_t end = from + (n - from ? rng() % (n - from + 1) : 0);
    ASSERT_EQ(find_cr_or_lf(s.data(), from, end), naive_cr_or_lf(s, from, end))
        << "n=" << n << " from=" << from << " end=" << end;
  }
}

TEST(Syntax, FindInvalidValueByteAgreesWithAByteLoopEverywhere) {
  std::mt19937 rng(4);
  for (int round = 0; round < 200000; ++round) {
    const size_t n = rng() % 40;
    std::string s(n, 'v');
    for (char& c : s)
      if (rng() % 8 == 0) c = kTricky[rng() % kTricky.size()];
    // A view that starts inside the string: the bytes before it must not count.
    const size_t skip = n ? rng() % (n + 1) : 0;
    std::string_view v(s.data() + skip, n - skip);
    ASSERT_EQ(find_invalid_value_byte(v), naive_invalid(v)) << "n=" << n << " skip=" << skip;
  }
}

TEST(Syntax, TokenComparisonNeedsTheSameLength) {
  EXPECT_FALSE(iequals_token("connectio", "connection"));
  EXPECT_FALSE(iequals_token("connections", "connection"));
  EXPECT_FALSE(iequals_token("", "te"));
  EXPECT_TRUE(iequals_token("", ""));
}

}  // namespace
}  // namespace flotilla::gateway::http1::syntax
