// Smooth weighted round robin, exactly nginx's (ngx_http_upstream_get_peer): every pick adds each
// usable endpoint's weight to its current weight, takes the largest, and subtracts the total from
// it. Weights {5, 1, 1} give a a b a c a a, not a a a a a b c: heavy endpoints are interleaved.
#pragma once

#include <cstdint>
#include <vector>

#include "gateway/lb/load_balancer.h"

namespace flotilla::gateway::lb {

class RoundRobinBalancer final : public LoadBalancer {
 public:
  // `seed` only picks where in the cycle this instance starts (see the .cpp).
  RoundRobinBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed);
  // O(n) per pick, like nginx: every usable endpoint's current weight moves.
  int pick(const PickContext& context) override;

 private:
  struct Peer {
    int64_t weight;
    int64_t current = 0;
  };
  std::vector<Peer> peers_;
};

}  // namespace flotilla::gateway::lb
