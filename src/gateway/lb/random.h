// Weighted random choice, and the random source every policy draws from. Other policies build on
// these: least_request draws its two candidates with WeightedChoice, the hash policies draw a
// random hash when a request has none.
#pragma once

#include <cstdint>
#include <vector>

#include "gateway/lb/load_balancer.h"

namespace flotilla::gateway::lb {

// splitmix64 (Steele, Lea, Flood 2014): 64 bits of state, an add and three xor-shift-multiplies
// per number, passes BigCrush. One per balancer, so pick() shares nothing and takes no lock.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
    z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) for n > 0: Lemire's multiply-shift, no division; the bias (< n / 2^64) is
  // far below anything a load balancer could notice.
  uint64_t below(uint64_t n) {
    __extension__ using u128 = unsigned __int128;
    return static_cast<uint64_t>((static_cast<u128>(next()) * n) >> 64);
  }

 private:
  uint64_t state_;
};

// The weight a policy uses. Callers leave weight-0 instances out of a cluster; should one arrive
// anyway it counts as 1 rather than vanishing or dividing by zero.
inline uint64_t effective_weight(const Endpoint& e) { return e.weight < 1 ? 1 : e.weight; }

// The hash policies' lookup: the first usable owner at or after `at` on a circular table of
// endpoint indexes (a ring's points, a Maglev table). After a short walk it checks that some
// endpoint is usable at all, so a walk ends without visiting every entry when none is.
int first_usable_owner(const std::vector<uint32_t>& owners, size_t at, size_t endpoints, const Usable& usable);

// Draws an endpoint index with probability weight / total weight among the usable ones:
// prefix sums and a binary search, O(log n), no allocation.
class WeightedChoice {
 public:
  explicit WeightedChoice(const std::vector<Endpoint>& endpoints);

  // An index other than `except` (-1: none excluded), or -1 when no other endpoint is usable.
  // A few random draws that land on unusable endpoints are redrawn (rejection keeps the draw
  // exactly weighted among usable ones); then one O(n) pass decides.
  int pick(Rng& rng, const Usable& usable, int except = -1) const;

  size_t size() const { return ends_.size(); }
  uint64_t weight(size_t i) const { return ends_[i] - (i == 0 ? 0 : ends_[i - 1]); }

 private:
  int draw(Rng& rng, int except) const;
  int scan(Rng& rng, const Usable& usable, int except) const;

  std::vector<uint64_t> ends_;  // ends_[i] = w_0 + ... + w_i: endpoint i owns [ends_[i] - w_i, ends_[i])
  bool uniform_ = true;         // all weights equal: draw the index directly
};

class RandomBalancer final : public LoadBalancer {
 public:
  RandomBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed) : choice_(endpoints), rng_(seed) {}
  int pick(const PickContext& context) override { return choice_.pick(rng_, context.usable); }

 private:
  WeightedChoice choice_;
  Rng rng_;
};

}  // namespace flotilla::gateway::lb
