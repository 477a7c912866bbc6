// A route's rate limit (`rate_limit:` in flotilla.yaml): a token bucket per key (client IP, a
// header value, or the whole route) whose rate holds for the whole process, across all workers.
//
// Why GCRA: the generic cell rate algorithm is a token bucket stored as ONE number, the
// "theoretical arrival time" (TAT) of the next request. A request at `now` conforms when
// max(TAT, now) - now <= tau, and then TAT becomes max(TAT, now) + T, where T = 1/rate is the
// emission interval and tau = (burst - 1) * T the burst tolerance. One int64 means one atomic
// and a CAS loop: workers share every bucket exactly, without locks, so the configured rate is the
// process's rate however many workers take traffic. A TAT in the past is a full bucket, which is
// what makes idle keys free to forget.
//
// Keys live in 64 shards, each a small mutex-protected map from the key's xxHash64 to its entry.
// The shard mutex is held only to find or insert the entry (a hash lookup, no allocation for a
// known key); the decision itself is the lock-free CAS. acquire(now) without a key (key: route)
// touches no map and no mutex at all.
//
// Memory is bounded: at most `max_keys` entries (rounded up to a multiple of 64). A shard that is
// full reclaims its idle entries (TAT in the past); if every entry is still active (a flood of
// distinct keys, e.g. spoofed header values), requests with keys that have no entry share one
// overflow bucket with the same rate and burst, so the flood is limited as one client instead of
// growing memory or bypassing the limit. Entries are recycled, never freed, while the limiter
// lives, so a worker holding an entry never touches freed memory; an entry is only recycled when
// its TAT is in the past, i.e. when it is indistinguishable from a new one.
//
// Cost: acquire(key) is O(1) expected: one hash, one shard lock for the lookup, one CAS (retried
// only under contention on the same key). Inserting into a full shard sweeps that shard
// (O(max_keys / 64)), at most once per expiry of its earliest entry.
//
// A rate change in the configuration builds a new limiter (the buckets start full again).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace flotilla::gateway::resilience {

struct Decision {
  bool allowed = true;
  // When refused: how long until this key's next request would be allowed (> 0). 0 when allowed.
  std::chrono::nanoseconds retry_after{0};
};

// The Retry-After header value for a refused request: whole seconds, rounded up, at least 1.
int retry_after_seconds(const Decision& decision);

class RateLimiter {
 public:
  static constexpr size_t kDefaultMaxKeys = 100'000;
  static constexpr size_t kShards = 64;

  // `rate_per_second` > 0; `burst` >= 1 requests (smaller values are taken as 1).
  RateLimiter(double rate_per_second, double burst, size_t max_keys = kDefaultMaxKeys);
  RateLimiter(const RateLimiter&) = delete;
  RateLimiter& operator=(const RateLimiter&) = delete;

  // One request from `key` at `now_ns` (steady_clock nanoseconds). Thread-safe.
  Decision acquire(std::string_view key, int64_t now_ns);
  // One request against the route's single bucket (key: route): lock-free, no lookup.
  Decision acquire(int64_t now_ns) { return admit(route_tat_, now_ns); }

  // Keys with an entry now (<= max_keys()).
  size_t size() const;
  size_t max_keys() const { return per_shard_ * kShards; }
  // Requests decided by the shared overflow bucket because their key found no room (for a metric).
  uint64_t overflowed() const { return overflowed_.load(std::memory_order_relaxed); }

 private:
  struct Entry {
    std::atomic<int64_t> tat{0};
  };
  struct alignas(64) Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, Entry*> index;  // key hash -> entry
    std::deque<Entry> storage;                   // entries never move; at most per_shard_
    std::vector<Entry*> free;                    // recycled entries
    int64_t next_expiry = 0;                     // no sweep can reclaim anything before this
  };

  Decision admit(std::atomic<int64_t>& tat, int64_t now_ns) const;
  Entry* find_or_insert(Shard& shard, uint64_t hash, int64_t now_ns);
  void sweep(Shard& shard, int64_t now_ns);

  int64_t interval_ns_;   // T
  int64_t tolerance_ns_;  // tau
  size_t per_shard_;
  std::array<Shard, kShards> shards_;
  alignas(64) std::atomic<int64_t> route_tat_{0};
  alignas(64) std::atomic<int64_t> overflow_tat_{0};
  std::atomic<uint64_t> overflowed_{0};
};

}  // namespace flotilla::gateway::resilience
