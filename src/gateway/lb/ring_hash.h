// Consistent hashing on a ketama-style ring: each endpoint owns points hash("address_N") on a
// 64-bit circle, in proportion to its weight; a request hash belongs to the first point at or
// after it (clockwise). An endpoint's points depend only on its own address and weight, so when
// endpoints join or leave, the only keys that move are those the newcomer takes or the leaver
// held. Lookup is a binary search, O(log points); building is O(points log points).
#pragma once

#include <cstdint>
#include <vector>

#include "gateway/lb/load_balancer.h"
#include "gateway/lb/random.h"

namespace flotilla::gateway::lb {

class RingHashBalancer final : public LoadBalancer {
 public:
  RingHashBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed);
  // With a hash: its owner, or when that endpoint is not usable the next usable owner
  // clockwise (the same one every time for the same hash and the same usable set).
  // Without one: a random point, so traffic still follows the weights.
  int pick(const PickContext& context) override;

  size_t points() const { return hashes_.size(); }

 private:
  std::vector<uint64_t> hashes_;  // sorted; apart from owners_ so the search touches only these
  std::vector<uint32_t> owners_;  // owners_[i]: the endpoint index owning hashes_[i]
  size_t endpoints_;
  Rng rng_;
};

}  // namespace flotilla::gateway::lb
