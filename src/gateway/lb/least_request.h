// Least request by the power of two choices (Mitzenmacher): draw two distinct usable endpoints,
// send to the one with fewer requests in flight per unit of weight. O(1) per pick, and unlike
// "the global least" it does not stampede every worker onto the same endpoint between updates.
//
// With unequal weights the two candidates are drawn in proportion to weight, and compared on
// active / weight (a_1 * w_2 vs a_2 * w_1); a tie goes to the first. So with no load, or load
// already in proportion to weight, traffic follows the weights exactly (the first candidate
// decides, and it was weighted), and a surplus of load per unit of weight steers traffic away.
// Envoy reaches the same ends with an EDF scheduler over weight / (active + 1) once weights
// differ; sampling keeps O(1), no allocation and no per-pick reordering.
// Note: at equal non-zero load, unequal weights favour the heavier endpoint beyond its weight
// until its in-flight count rises to match, which is the point of weighing load.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "gateway/lb/load_balancer.h"
#include "gateway/lb/random.h"

namespace flotilla::gateway::lb {

class LeastRequestBalancer final : public LoadBalancer {
 public:
  LeastRequestBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed);
  int pick(const PickContext& context) override;

 private:
  WeightedChoice choice_;
  Rng rng_;
  std::vector<const std::atomic<int64_t>*> active_;  // EndpointState::active, shared by all workers
};

}  // namespace flotilla::gateway::lb
