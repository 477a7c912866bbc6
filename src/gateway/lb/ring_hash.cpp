#include "gateway/lb/ring_hash.h"

#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>
#include <utility>

namespace flotilla::gateway::lb {

namespace {
// Points for the heaviest endpoint; the others get theirs in proportion to weight / heaviest
// weight (at least one). An endpoint's share of the circle is a sum of random arcs, off by about
// 1/sqrt(points) of itself: 4096 points keep the heaviest within a few percent, an endpoint at a
// tenth of its weight (410 points) within about 5 %, and the ring at least 4096 long. An endpoint
// a thousand times lighter than the heaviest gets 4 points: its small share swings by ±50 %.
//
// Why relative to the heaviest? Counts then change only when the heaviest weight does. A join
// or leave of an endpoint no heavier than the rest (a new instance, a canary at a low weight),
// or an instance going to `warning` at a lower Weights.Warning, leaves every other endpoint's
// points where they were: only keys on the points added or removed move. Relative to the
// lightest (as before 2026-12-03) such a change rescaled every endpoint: a weight-1 canary
// joining three weight-4 instances moved 45 % of the keys between instances that had not changed.
// Envoy's scaling (ring size × weight / total weight) moves some keys on every change.
constexpr double kHeaviestPoints = 4096;
// Cap, 12 bytes a point (3 MiB), reached past 64 equal-weight endpoints: beyond it counts
// scale to fit, so a join or leave also moves about 1/n of the keys between unchanged endpoints
// (halving counts instead would keep them still until a power of two, then move half of all keys).
constexpr double kMaxPoints = 1 << 18;
// Points walked past unusable owners before checking that any endpoint is usable at all.

struct Point {
  uint64_t hash;
  uint32_t owner;
};
}  // namespace

std::shared_ptr<const RingTable> RingTable::build(const std::vector<Endpoint>& endpoints) {
  auto t = std::make_shared<RingTable>();
  if (endpoints.empty()) return t;
  uint64_t heaviest = 0, total = 0;
  for (const auto& e : endpoints) {
    heaviest = std::max(heaviest, effective_weight(e));
    total += effective_weight(e);
  }
  double per_weight = kHeaviestPoints / static_cast<double>(heaviest);
  per_weight = std::min(per_weight, kMaxPoints / static_cast<double>(total));

  // Made in owner order, so the stable sort below leaves ties (two points with one hash, a
  // 2^-64 event per pair) in owner order. Scratch space kept by the building thread: a large
  // service's 2^18 points are 4 MiB twice, which fresh from the allocator cost a page fault per
  // 4 KiB on every build (35 ms of a 44 ms build of 200 endpoints here; 9 ms with it kept).
  thread_local std::vector<Point> ring, other;
  ring.clear();
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
  // Least-significant-digit radix sort on the hash, 8 bits a pass (256 buckets keep the
  // scatter within the cache), stable: O(points), for every endpoint change rebuilds the ring.
  other.resize(ring.size());
  for (int shift = 0; shift < 64; shift += 8) {
    uint32_t counts[256] = {};
    for (const auto& p : ring) ++counts[(p.hash >> shift) & 0xff];
    uint32_t at = 0;
    for (auto& c : counts) at += std::exchange(c, at);
    for (const auto& p : ring) other[counts[(p.hash >> shift) & 0xff]++] = p;
    ring.swap(other);
  }
  t->hashes.reserve(ring.size());
  t->owners.reserve(ring.size());
  for (const auto& p : ring) {
    t->hashes.push_back(p.hash);
    t->owners.push_back(p.owner);
  }
  return t;
}

RingHashBalancer::RingHashBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed,
                                   std::shared_ptr<const RingTable> table)
    : table_(table ? std::move(table) : RingTable::build(endpoints)), endpoints_(endpoints.size()), rng_(seed) {}

int RingHashBalancer::pick(const PickContext& context) {
  const auto& hashes = table_->hashes;
  if (hashes.empty()) return -1;
  const uint64_t hash = context.hash ? *context.hash : rng_.next();
  // lower_bound without branches (a random hash makes every level a coin toss for a predictor).
  const uint64_t* base = hashes.data();
  for (size_t len = hashes.size(); len > 1;) {
    const size_t half = len / 2;
    base += half * static_cast<size_t>(base[half - 1] < hash);
    len -= half;
  }
  size_t at = static_cast<size_t>(base - hashes.data()) + (*base < hash ? 1 : 0);
  return first_usable_owner(table_->owners, at, endpoints_, context.usable);
}

}  // namespace flotilla::gateway::lb
