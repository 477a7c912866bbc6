#include "common/uuid.h"

#include <cstdio>
#include <cstring>

#include "common/random.h"

namespace flotilla {

std::string make_uuid() {
  // Session ids are handles on locks: from the kernel's random source, as Consul's crypto/rand.
  uint64_t ab[2];
  if (!kernel_random(ab, sizeof ab)) {
    thread_local Random rng;
    ab[0] = rng();
    ab[1] = rng();
  }
  uint64_t a = ab[0], b = ab[1];
  a = (a & 0xFFFFFFFFFFFF0FFFULL) | 0x0000000000004000ULL;  // version 4
  b = (b & 0x3FFFFFFFFFFFFFFFULL) | 0x8000000000000000ULL;  // variant 10
  char buf[40];
  std::snprintf(buf, sizeof buf, "%08x-%04x-%04x-%04x-%012llx", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xFFFF), static_cast<unsigned>(a & 0xFFFF),
                static_cast<unsigned>(b >> 48), static_cast<unsigned long long>(b & 0xFFFFFFFFFFFFULL));
  return buf;
}

}  // namespace flotilla
