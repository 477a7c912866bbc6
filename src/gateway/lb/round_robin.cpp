#include "gateway/lb/round_robin.h"

#include <algorithm>

#include "gateway/lb/random.h"

namespace flotilla::gateway::lb {

namespace {
// Bound on the start-up work (steps × endpoints) spent choosing a starting point.
constexpr uint64_t kStartWork = 1 << 16;
}  // namespace

RoundRobinBalancer::RoundRobinBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed) {
  peers_.reserve(endpoints.size());
  uint64_t total = 0;
  for (const auto& e : endpoints) {
    peers_.push_back(Peer{static_cast<int64_t>(effective_weight(e)), 0});
    total += effective_weight(e);
  }
  // A balancer is built per worker and per endpoint-set version. Were they all to start from
  // nginx's initial state, every worker's first picks after every change would go to the same
  // endpoint. So the seed picks a starting point: `seed mod cycle` steps in (within a bounded
  // prefix of the cycle). A random seed starts anywhere; seed 0 is nginx's own start.
  if (peers_.empty()) return;
  uint64_t steps = seed % std::min<uint64_t>(total, std::max<uint64_t>(1, kStartWork / peers_.size()));
  for (uint64_t i = 0; i < steps; ++i) pick(PickContext{});
}

int RoundRobinBalancer::pick(const PickContext& context) {
  // Endpoints that are not usable neither gain weight nor count toward the total, as nginx
  // skips down and already-tried peers. The running maximum is kept without branches: which
  // endpoint leads changes from pick to pick, and mispredictions were half the cost.
  size_t best = peers_.size();
  int64_t best_current = INT64_MIN;
  int64_t total = 0;
  for (size_t i = 0; i < peers_.size(); ++i) {
    if (!context.usable(i)) continue;
    Peer& p = peers_[i];
    p.current += p.weight;
    total += p.weight;
    const bool ahead = p.current > best_current;  // strictly: a tie goes to the earlier endpoint
    best = ahead ? i : best;
    best_current = ahead ? p.current : best_current;
  }
  if (best == peers_.size()) return -1;
  peers_[best].current -= total;
  return static_cast<int>(best);
}

}  // namespace flotilla::gateway::lb
