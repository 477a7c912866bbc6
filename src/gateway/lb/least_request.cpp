#include "gateway/lb/least_request.h"

#include <algorithm>

namespace flotilla::gateway::lb {

LeastRequestBalancer::LeastRequestBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed)
    : choice_(endpoints), rng_(seed) {
  active_.reserve(endpoints.size());
  for (const auto& e : endpoints) active_.push_back(&e.state->active);
}

int LeastRequestBalancer::pick(const PickContext& context) {
  const int a = choice_.pick(rng_, context.usable);
  if (a < 0) return -1;
  const int b = choice_.pick(rng_, context.usable, a);
  if (b < 0) return a;  // the only usable endpoint
  // Relaxed reads: a count a moment stale only blurs a choice that is a heuristic anyway.
  // Clamped to [0, 2^31) so the cross products cannot overflow with 32-bit weights.
  auto load = [&](int i) -> uint64_t {
    return static_cast<uint64_t>(std::clamp<int64_t>(active_[i]->load(std::memory_order_relaxed), 0, INT32_MAX));
  };
  return load(a) * choice_.weight(b) <= load(b) * choice_.weight(a) ? a : b;
}

}  // namespace flotilla::gateway::lb
