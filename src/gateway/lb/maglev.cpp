#include "gateway/lb/maglev.h"

#include <xxhash.h>

#include <algorithm>
#include <numeric>

namespace flotilla::gateway::lb {

namespace {
constexpr uint32_t kEmpty = UINT32_MAX;
// Entries walked past unusable endpoints before checking that any endpoint is usable at all.
}  // namespace

std::shared_ptr<const MaglevTable> MaglevTable::build(const std::vector<Endpoint>& endpoints) {
  auto t = std::make_shared<MaglevTable>();
  if (endpoints.empty()) return t;
  auto& table = t->entries;
  struct Builder {
    uint32_t index;
    uint64_t weight;
    uint64_t position;  // the next entry of this endpoint's permutation
    uint64_t skip;
    uint64_t claimed = 0;
  };
  // Filled in address order, so the table depends on the set of endpoints, not on the order of
  // the list: every worker and every gateway maps a hash to the same address.
  std::vector<uint32_t> order(endpoints.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](uint32_t a, uint32_t b) { return endpoints[a].state->address < endpoints[b].state->address; });
  std::vector<Builder> builders;
  builders.reserve(endpoints.size());
  uint64_t heaviest = 0;
  for (uint32_t i : order) {
    const auto& address = endpoints[i].state->address;
    uint64_t offset = XXH64(address.data(), address.size(), 0) % kSize;
    uint64_t skip = XXH64(address.data(), address.size(), 1) % (kSize - 1) + 1;
    builders.push_back(Builder{i, effective_weight(endpoints[i]), offset, skip});
    heaviest = std::max(heaviest, effective_weight(endpoints[i]));
  }

  // Weighted population (Envoy): in round r an endpoint claims an entry only while
  // claimed × heaviest <= r × weight, so the heaviest claims every round and one of a third of
  // its weight every third round. Integers, so no float drift; r × weight < 2^49.
  table.assign(kSize, kEmpty);
  uint32_t filled = 0;
  for (uint64_t round = 0; filled < kSize; ++round) {
    for (auto& b : builders) {
      if (b.claimed * heaviest > round * b.weight) continue;
      while (table[b.position] != kEmpty) b.position = (b.position + b.skip) % kSize;
      table[b.position] = b.index;
      b.position = (b.position + b.skip) % kSize;
      ++b.claimed;
      if (++filled == kSize) break;
    }
  }
  return t;
}

MaglevBalancer::MaglevBalancer(const std::vector<Endpoint>& endpoints, uint64_t seed,
                               std::shared_ptr<const MaglevTable> table)
    : table_(table ? std::move(table) : MaglevTable::build(endpoints)), endpoints_(endpoints.size()), rng_(seed) {}

int MaglevBalancer::pick(const PickContext& context) {
  if (table_->entries.empty()) return -1;
  const uint64_t hash = context.hash ? *context.hash : rng_.next();
  return first_usable_owner(table_->entries, hash % kTableSize, endpoints_, context.usable);
}

}  // namespace flotilla::gateway::lb
