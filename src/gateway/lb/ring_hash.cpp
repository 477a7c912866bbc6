#include "gateway/lb/ring_hash.h"

#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>

namespace flotilla::gateway::lb {

namespace {
// Points for the lightest endpoint; the others get theirs in proportion to weight / lightest
// weight. An endpoint's share of the circle is a sum of random arcs, off by about
// 1/sqrt(points) of itself: 1024 points keep it within a few percent (Envoy's default, 1024
// points in all, leaves 10 endpoints about 100 each: ±10 %), and the ring at least 1024 long.
//
// Why not Envoy's scaling (points = ring size × weight / total weight)? It changes every
// endpoint's point count whenever one joins or leaves, and keys on the points that vanish move
// between endpoints that did not change. Relative to the lightest weight, counts change only
// when the lightest weight does (with equal weights, never), until the cap below.
constexpr double kLightestPoints = 1024;
// Cap, 12 bytes a point (768 KiB), reached past 64 equal-weight endpoints: beyond it counts
// scale to fit, so a join or leave also moves about 1/n of the keys between unchanged endpoints
// (halving counts instead would keep them still until a power of two, then move half of all keys).
constexpr double kMaxPoints = 1 << 16;
// Points walked past unusable owners before checking that any endpoint is usable at all.

struct Point {
  uint64_t hash;
  uint32_t owner;
};
}  // namespace

RingHashBalancer::RingHashBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed)
    : endpoints_(endpoints.size()), rng_(seed) {
  if (endpoints.empty()) return;
  uint64_t lightest = UINT64_MAX, total = 0;
  for (const auto& e : endpoints) {
    lightest = std::min(lightest, effective_weight(e));
    total += effective_weight(e);
  }
  double per_weight = kLightestPoints / static_cast<double>(lightest);
  per_weight = std::min(per_weight, kMaxPoints / static_cast<double>(total));

  std::vector<Point> ring;
  ring.reserve(static_cast<size_t>(per_weight * static_cast<double>(total)) + endpoints.size());
  std::string key;
  char digits[24];
  for (size_t i = 0; i < endpoints.size(); ++i) {
    auto count = std::max<uint64_t>(1, std::llround(per_weight * static_cast<double>(effective_weight(endpoints[i]))));
    key = endpoints[i].state->address;
    key += '_';
    const size_t base = key.size();
    for (uint64_t n = 0; n < count; ++n) {
      key.resize(base);
      key.append(digits, std::to_chars(digits, digits + sizeof digits, n).ptr);
      ring.push_back(Point{XXH64(key.data(), key.size(), 0), static_cast<uint32_t>(i)});
    }
  }
  // Ties (two points with one hash) are a 2^-64 event per pair; owner order settles them.
  std::sort(ring.begin(), ring.end(),
            [](const Point& a, const Point& b) { return a.hash != b.hash ? a.hash < b.hash : a.owner < b.owner; });
  hashes_.reserve(ring.size());
  owners_.reserve(ring.size());
  for (const auto& p : ring) {
    hashes_.push_back(p.hash);
    owners_.push_back(p.owner);
  }
}

int RingHashBalancer::pick(const PickContext& context) {
  if (hashes_.empty()) return -1;
  const uint64_t hash = context.hash ? *context.hash : rng_.next();
  // lower_bound without branches (a random hash makes every level a coin toss for a predictor).
  const uint64_t* base = hashes_.data();
  for (size_t len = hashes_.size(); len > 1;) {
    const size_t half = len / 2;
    base += half * static_cast<size_t>(base[half - 1] < hash);
    len -= half;
  }
  size_t at = static_cast<size_t>(base - hashes_.data()) + (*base < hash ? 1 : 0);
  return first_usable_owner(owners_, at, endpoints_, context.usable);
}

}  // namespace flotilla::gateway::lb
