// Maglev consistent hashing (Eisenbud et al., NSDI 2016, as Envoy builds it): a lookup table of
// 65537 (a prime) entries, filled by letting endpoints take turns claiming the next free entry
// of their own permutation (offset and skip from two xxHash64 seeds of the address). Each
// endpoint ends up with entries in proportion to its weight, to within a couple of entries, and
// lookup is one array read, O(1). When endpoints join or leave, few keys move: not quite only
// those the newcomer takes or the leaver held, as with ring_hash (about 0.2 % more), but close.
#pragma once

#include <cstdint>
#include <vector>

#include "gateway/lb/load_balancer.h"
#include "gateway/lb/random.h"

namespace flotilla::gateway::lb {

// The lookup table of an endpoint set (shared by every worker's balancer).
struct MaglevTable final : Table {
  static constexpr uint32_t kSize = 65537;
  // Building is O(table size × log table size): a few milliseconds.
  static std::shared_ptr<const MaglevTable> build(const std::vector<Endpoint>& endpoints);
  std::vector<uint32_t> entries;  // endpoint indexes (256 KiB); empty when there are no endpoints
};

class MaglevBalancer final : public LoadBalancer {
 public:
  static constexpr uint32_t kTableSize = MaglevTable::kSize;

  // `table`: MaglevTable::build(endpoints) (null: built here).
  MaglevBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed, std::shared_ptr<const MaglevTable> table = nullptr);
  // With a hash: table[hash % 65537], or when that endpoint is not usable the next usable entry
  // after it (the same one every time for the same hash and the same usable set).
  // Without one: a random entry, so traffic still follows the weights.
  int pick(const PickContext& context) override;

 private:
  std::shared_ptr<const MaglevTable> table_;
  size_t endpoints_;
  Rng rng_;
};

}  // namespace flotilla::gateway::lb
