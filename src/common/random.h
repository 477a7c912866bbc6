// Fast random numbers for values that must differ between processes and calls but need not be
// secret: request ids, trace and span ids, retry jitter, load-balancer seeds. xoshiro256**
// (Blackman and Vigna), seeded with 256 bits from the kernel (getrandom), so two gateways
// started in the same microsecond still produce different ids. A std::mt19937_64 seeded from
// std::random_device{}() has a 32-bit seed: across 77 000 processes two share a sequence with
// even odds. Not for secrets (tokens): use getrandom() itself there.
#pragma once

#include <cstdint>

namespace flotilla {

class Random {
 public:
  using result_type = uint64_t;
  // Seeded from getrandom(); from the clock and the address of this object only if the
  // kernel refuses (it never should).
  Random();
  // A fixed sequence (tests): the seed expanded by splitmix64.
  explicit Random(uint64_t seed);

  uint64_t operator()() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  static constexpr uint64_t min() { return 0; }
  static constexpr uint64_t max() { return UINT64_MAX; }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  void expand(uint64_t seed);
  uint64_t s_[4];
};

// `n` bytes from the kernel's random source (getrandom), retried on EINTR; false if it refuses.
bool kernel_random(void* out, unsigned long n);

}  // namespace flotilla
