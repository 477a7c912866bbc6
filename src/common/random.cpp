#include "common/random.h"

#include <sys/random.h>

#include <cerrno>
#include <chrono>
#include <cstddef>

namespace flotilla {

bool kernel_random(void* out, unsigned long n) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    ssize_t got = ::getrandom(p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += got;
    n -= static_cast<unsigned long>(got);
  }
  return true;
}

Random::Random() {
  if (kernel_random(s_, sizeof s_) && (s_[0] | s_[1] | s_[2] | s_[3]) != 0) return;
  expand(static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
         reinterpret_cast<uintptr_t>(this));
}

Random::Random(uint64_t seed) { expand(seed); }

// splitmix64: never leaves the state all zero (the one state xoshiro cannot leave).
void Random::expand(uint64_t seed) {
  for (uint64_t& s : s_) {
    uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    s = z ^ (z >> 31);
  }
}

}  // namespace flotilla
