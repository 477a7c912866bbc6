#include "gateway/lb/random.h"

namespace flotilla::gateway::lb {

namespace {
// Redraws before the O(n) pass. With half the cluster unusable (the outlier detector's cap)
// four draws all miss 6 % of the time.
constexpr int kDraws = 4;
}  // namespace

WeightedChoice::WeightedChoice(const std::vector<Endpoint>& endpoints) {
  ends_.reserve(endpoints.size());
  uint64_t total = 0;
  for (const auto& e : endpoints) {
    total += effective_weight(e);
    ends_.push_back(total);
    uniform_ = uniform_ && effective_weight(e) == effective_weight(endpoints.front());
  }
}

int WeightedChoice::draw(Rng& rng, int except) const {
  // Leaving `except` out: draw from the others' span, then step over except's stretch (with
  // equal weights, over its index); this samples the others exactly. The step is taken about
  // half the time, so it is arithmetic, not a branch.
  const bool leave_out = except >= 0;
  const size_t skip = leave_out ? static_cast<size_t>(except) : 0;
  if (uniform_) {
    const uint64_t i = rng.below(ends_.size() - leave_out);
    return static_cast<int>(i + static_cast<uint64_t>(leave_out && i >= skip));
  }
  const uint64_t skipped = leave_out ? weight(skip) : 0;
  uint64_t r = rng.below(ends_.back() - skipped);
  r += skipped * static_cast<uint64_t>(r >= ends_[skip] - weight(skip));
  // upper_bound without branches: where r falls is random, so a branchy search mispredicts about
  // once per level.
  const uint64_t* base = ends_.data();
  for (size_t len = ends_.size(); len > 1;) {
    const size_t half = len / 2;
    base += half * static_cast<size_t>(base[half - 1] <= r);
    len -= half;
  }
  return static_cast<int>(base - ends_.data()) + (*base <= r ? 1 : 0);
}

int WeightedChoice::scan(Rng& rng, const Usable& usable, int except) const {
  // Weighted reservoir sampling: one pass, and still correct if `usable` changes its mind
  // midway (ejection state is shared with other workers).
  int chosen = -1;
  uint64_t seen = 0;
  for (size_t i = 0; i < ends_.size(); ++i) {
    if (static_cast<int>(i) == except || !usable(i)) continue;
    seen += weight(i);
    if (rng.below(seen) < weight(i)) chosen = static_cast<int>(i);
  }
  return chosen;
}

int WeightedChoice::pick(Rng& rng, const Usable& usable, int except) const {
  if (ends_.size() <= (except >= 0 ? 1u : 0u)) return -1;  // nothing (else) to pick
  for (int attempt = 0; attempt < kDraws; ++attempt) {
    int i = draw(rng, except);
    if (usable(static_cast<size_t>(i))) return i;
  }
  return scan(rng, usable, except);
}

int first_usable_owner(const std::vector<uint32_t>& owners, size_t at, size_t endpoints, const Usable& usable) {
  constexpr size_t kWalkBeforeCheck = 32;
  for (size_t walked = 0; walked < owners.size(); ++walked, ++at) {
    if (at == owners.size()) at = 0;  // past the last entry: the circle closes
    if (usable(owners[at])) return static_cast<int>(owners[at]);
    if (walked == kWalkBeforeCheck) {
      bool any = false;
      for (size_t i = 0; i < endpoints && !any; ++i) any = usable(i);
      if (!any) return -1;
    }
  }
  return -1;
}

}  // namespace flotilla::gateway::lb
