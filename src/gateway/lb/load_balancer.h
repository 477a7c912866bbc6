// Load balancing: one small policy per file behind this interface (as brpc's policy/ folder).
// A LoadBalancer is built from a cluster's endpoint list (one per worker per endpoint-set
// version, so policies with state — round-robin positions — need no locks), and picks the index
// of an endpoint per request. Endpoints that must not be picked right now (ejected, or already
// tried by this request when another exists) are filtered by `usable`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/endpoint.h"

namespace flotilla::gateway::lb {

enum class Policy : uint8_t { round_robin, least_request, random, ring_hash, maglev };

// "round_robin" etc.; nullopt for an unknown name.
std::optional<Policy> parse_policy(std::string_view name);
std::string_view policy_name(Policy p);

// A predicate over endpoint indexes without std::function's cost.
struct Usable {
  bool (*fn)(const void* context, size_t index) = nullptr;  // nullptr: every endpoint is usable
  const void* context = nullptr;
  bool operator()(size_t index) const { return fn == nullptr || fn(context, index); }
};

struct PickContext {
  // The request's hash key (hash_on) for ring_hash and maglev; without one those pick at random.
  std::optional<uint64_t> hash;
  Usable usable;
};

class LoadBalancer {
 public:
  virtual ~LoadBalancer() = default;
  // The index (into the endpoint list it was built from) to send to, or -1 when no endpoint is
  // usable. Hash policies map equal hashes to the same endpoint while it stays usable.
  virtual int pick(const PickContext& context) = 0;
};

// The part of a policy that depends only on the endpoint set: the hash policies' ring and
// table (up to 2^18 points, milliseconds to build). Built once per endpoint set off the request
// path (Gateway, with the cluster) and read by every worker's balancer; immutable.
class Table {
 public:
  virtual ~Table() = default;
};
// Null for policies without one.
std::shared_ptr<const Table> build_table(Policy policy, const std::vector<Endpoint>& endpoints);

// `endpoints` must outlive the balancer (the snapshot holds both). `seed` seeds the policy's
// random source (each worker passes its own). `table`: build_table(policy, endpoints), shared;
// null: the balancer builds its own.
// Every endpoint has a `state`: its address is the endpoint's identity on the hash policies'
// rings, and least_request reads its in-flight count. A weight below 1 counts as 1 (callers
// leave weight-0 instances out of a cluster). pick() advances the balancer's own state (round
// robin positions, the random source) without locks: a balancer belongs to one worker.
std::unique_ptr<LoadBalancer> make_load_balancer(Policy policy, const std::vector<Endpoint>& endpoints,
                                                 uint64_t seed, std::shared_ptr<const Table> table = nullptr);

// Stable 64-bit hash of a hash_on value (xxHash64, seed 0), the same in every process.
uint64_t hash_key(std::string_view value);

}  // namespace flotilla::gateway::lb
