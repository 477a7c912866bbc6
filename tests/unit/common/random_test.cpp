#include "common/random.h"

#include <gtest/gtest.h>

#include <bit>
#include <cstring>
#include <set>

namespace flotilla {
namespace {

TEST(Random, TwoGeneratorsSeededByTheKernelDiffer) {
  // The ids of two gateways (or workers) started together must not repeat each other: with a
  // 32-bit seed they would for one pair in 2^32; with 256 bits from getrandom, never in practice.
  std::set<uint64_t> firsts;
  for (int i = 0; i < 1000; ++i) {
    Random r;
    firsts.insert(r());
  }
  EXPECT_EQ(firsts.size(), 1000u);
}

TEST(Random, MatchesTheReferenceImplementation) {
  // The first outputs of the authors' xoshiro256starstar.c, its state filled by their
  // splitmix64.c from the seed 12345 (https://prng.di.unimi.it/). A wrong shift or rotation
  // still sets every bit about half the time; only known answers catch it.
  Random r(12345);
  EXPECT_EQ(r(), 0xbe6a36374160d49bull);
  EXPECT_EQ(r(), 0x214aaa0637a688c6ull);
  EXPECT_EQ(r(), 0xf69d16de9954d388ull);
  EXPECT_EQ(r(), 0x0c60048c4e96e033ull);
  EXPECT_EQ(r(), 0x8e2076aeed51c648ull);
}

TEST(Random, AFixedSeedGivesAFixedSequence) {
  Random a(42), b(42), c(43);
  for (int i = 0; i < 100; ++i) {
    uint64_t x = a();
    EXPECT_EQ(x, b());
    EXPECT_NE(x, c());
  }
}

TEST(Random, EveryBitIsSetAboutHalfTheTime) {
  // A broken generator (a zero state, a wrong shift) fails this long before any subtle test.
  Random r(7);
  constexpr int kDraws = 100000;
  int ones[64] = {};
  int popcount = 0;
  for (int i = 0; i < kDraws; ++i) {
    uint64_t x = r();
    popcount += std::popcount(x);
    for (int bit = 0; bit < 64; ++bit) ones[bit] += static_cast<int>((x >> bit) & 1);
  }
  for (int bit = 0; bit < 64; ++bit) {
    EXPECT_GT(ones[bit], kDraws / 2 - 1500) << "bit " << bit;  // ~9.5 standard deviations
    EXPECT_LT(ones[bit], kDraws / 2 + 1500) << "bit " << bit;
  }
  EXPECT_NEAR(static_cast<double>(popcount) / kDraws, 32.0, 0.1);
}

TEST(Random, ZeroSeedStillProducesNumbers) {
  Random r(0);  // splitmix64 never leaves xoshiro's state all zero
  uint64_t any = 0;
  for (int i = 0; i < 4; ++i) any |= r();
  EXPECT_NE(any, 0u);
}

TEST(Random, KernelRandomFillsTheBuffer) {
  unsigned char a[64] = {}, b[64] = {};
  ASSERT_TRUE(kernel_random(a, sizeof a));
  ASSERT_TRUE(kernel_random(b, sizeof b));
  EXPECT_NE(std::memcmp(a, b, sizeof a), 0);
}

}  // namespace
}  // namespace flotilla
