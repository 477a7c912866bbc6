// Consistent hashing on a ketama-style ring: each endpoint owns points hash("address_N") on a
// 64-bit circle, in proportion to its weight; a request hash belongs to the first point at or
// after it (clockwise). An endpoint's points depend only on its own address and weight, so when
// endpoints join or leave, the only keys that move are those the newcomer takes or the leaver
// held. Lookup is a binary search, O(log points); building is O(points) (a radix sort).
#pragma once

#include <cstdint>
#include <vector>

#include "gateway/lb/load_balancer.h"
#include "gateway/lb/random.h"

namespace flotilla::gateway::lb {

// The ring of an endpoint set (shared by every worker's balancer).
struct RingTable final : Table {
  static std::shared_ptr<const RingTable> build(const std::vector<Endpoint>& endpoints);
  std::vector<uint64_t> hashes;  // sorted; apart from owners so the search touches only these
  std::vector<uint32_t> owners;  // owners[i]: the endpoint index owning hashes[i]
};

class RingHashBalancer final : public LoadBalancer {
 public:
  // `table`: RingTable::build(endpoints) (null: built here).
  RingHashBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed,
                   std::shared_ptr<const RingTable> table = nullptr);
  // With a hash: its owner, or when that endpoint is not usable the next usable owner
  // clockwise (the same one every time for the same hash and the same usable set).
  // Without one: a random point, so traffic still follows the weights.
  int pick(const PickContext& context) override;

  size_t points() const { return table_->hashes.size(); }

 private:
  std::shared_ptr<const RingTable> table_;
  size_t endpoints_;
  Rng rng_;
};

}  // namespace flotilla::gateway::lb
