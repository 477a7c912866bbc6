#include "gateway/lb/load_balancer.h"

#include <xxhash.h>

#include "gateway/lb/least_request.h"
#include "gateway/lb/maglev.h"
#include "gateway/lb/random.h"
#include "gateway/lb/ring_hash.h"
#include "gateway/lb/round_robin.h"

namespace flotilla::gateway::lb {

namespace {
struct Named {
  Policy policy;
  std::string_view name;
};
constexpr Named kPolicies[] = {{Policy::round_robin, "round_robin"},
                               {Policy::least_request, "least_request"},
                               {Policy::random, "random"},
                               {Policy::ring_hash, "ring_hash"},
                               {Policy::maglev, "maglev"}};
}  // namespace

std::optional<Policy> parse_policy(std::string_view name) {
  for (const auto& p : kPolicies) {
    if (p.name == name) return p.policy;
  }
  return std::nullopt;
}

std::string_view policy_name(Policy policy) {
  for (const auto& p : kPolicies) {
    if (p.policy == policy) return p.name;
  }
  return "unknown";
}

std::shared_ptr<const Table> build_table(Policy policy, const std::vector<Endpoint>& endpoints) {
  switch (policy) {
    case Policy::ring_hash:
      return RingTable::build(endpoints);
    case Policy::maglev:
      return MaglevTable::build(endpoints);
    default:
      return nullptr;
  }
}

std::unique_ptr<LoadBalancer> make_load_balancer(Policy policy, const std::vector<Endpoint>& endpoints, uint64_t seed,
                                                 std::shared_ptr<const Table> table) {
  switch (policy) {
    case Policy::round_robin:
      return std::make_unique<RoundRobinBalancer>(endpoints, seed);
    case Policy::least_request:
      return std::make_unique<LeastRequestBalancer>(endpoints, seed);
    case Policy::random:
      return std::make_unique<RandomBalancer>(endpoints, seed);
    case Policy::ring_hash:
      return std::make_unique<RingHashBalancer>(endpoints, seed, std::dynamic_pointer_cast<const RingTable>(table));
    case Policy::maglev:
      return std::make_unique<MaglevBalancer>(endpoints, seed, std::dynamic_pointer_cast<const MaglevTable>(table));
  }
  return nullptr;
}

uint64_t hash_key(std::string_view value) { return XXH64(value.data(), value.size(), 0); }

}  // namespace flotilla::gateway::lb
