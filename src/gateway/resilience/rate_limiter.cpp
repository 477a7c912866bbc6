#include "gateway/resilience/rate_limiter.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace flotilla::gateway::resilience {

static_assert(RateLimiter::kShards == 64, "the shard index is the hash's top 6 bits");

int retry_after_seconds(const Decision& decision) {
  int64_t ns = decision.retry_after.count();
  if (ns <= 0) return 1;
  int64_t s = ns / 1'000'000'000 + (ns % 1'000'000'000 != 0);  // ceil, without overflow near INT64_MAX
  return static_cast<int>(std::clamp<int64_t>(s, 1, std::numeric_limits<int>::max()));
}

RateLimiter::RateLimiter(double rate_per_second, double burst, size_t max_keys) {
  if (!(rate_per_second > 0)) throw std::invalid_argument("rate limit: requests_per_second must be above 0");
  // 1 ns is the finest interval an int64 TAT can count (a rate of 1e9/s); keep the tolerance
  // far from int64 overflow when added to a steady-clock time.
  double interval = std::clamp(1e9 / rate_per_second, 1.0, 1e15);
  interval_ns_ = std::llround(interval);
  // tau from the rounded interval, so an integral burst admits exactly `burst` requests at once.
  double tolerance = (std::max(burst, 1.0) - 1.0) * static_cast<double>(interval_ns_);
  tolerance_ns_ = std::llround(std::min(tolerance, 1e17));
  per_shard_ = std::max<size_t>(1, (max_keys + kShards - 1) / kShards);
}

Decision RateLimiter::admit(std::atomic<int64_t>& tat, int64_t now_ns) const {
  int64_t old = tat.load(std::memory_order_relaxed);
  for (;;) {
    // Relaxed is enough: the decision depends on this one variable, and the CAS orders all
    // updates of it.
    int64_t base = std::max(old, now_ns);
    if (base - now_ns > tolerance_ns_) return {false, std::chrono::nanoseconds(base - now_ns - tolerance_ns_)};
    if (tat.compare_exchange_weak(old, base + interval_ns_, std::memory_order_relaxed)) return {};
  }
}

Decision RateLimiter::acquire(std::string_view key, int64_t now_ns) {
  uint64_t hash = XXH64(key.data(), key.size(), 0);
  Entry* entry = find_or_insert(shards_[hash >> 58], hash, now_ns);
  if (entry == nullptr) {
    overflowed_.fetch_add(1, std::memory_order_relaxed);
    return admit(overflow_tat_, now_ns);
  }
  return admit(entry->tat, now_ns);
}

RateLimiter::Entry* RateLimiter::find_or_insert(Shard& shard, uint64_t hash, int64_t now_ns) {
  std::lock_guard lock(shard.mu);
  if (auto it = shard.index.find(hash); it != shard.index.end()) return it->second;
  Entry* entry = nullptr;
  if (shard.free.empty() && shard.storage.size() < per_shard_) {
    entry = &shard.storage.emplace_back();
  } else {
    if (shard.free.empty() && now_ns >= shard.next_expiry) sweep(shard, now_ns);
    if (shard.free.empty()) return nullptr;
    // A recycled entry keeps its TAT: it is in the past, which is exactly a full bucket.
    entry = shard.free.back();
    shard.free.pop_back();
  }
  shard.index.emplace(hash, entry);
  // The new key's first request moves its TAT to at least now + T; nothing it holds can be
  // reclaimed earlier.
  shard.next_expiry = std::min(shard.next_expiry, now_ns + interval_ns_);
  return entry;
}

void RateLimiter::sweep(Shard& shard, int64_t now_ns) {
  int64_t next = std::numeric_limits<int64_t>::max();
  for (auto it = shard.index.begin(); it != shard.index.end();) {
    int64_t tat = it->second->tat.load(std::memory_order_relaxed);
    if (tat <= now_ns) {
      shard.free.push_back(it->second);
      it = shard.index.erase(it);
    } else {
      next = std::min(next, tat);  // a TAT only grows, so this entry stays live at least until then
      ++it;
    }
  }
  shard.next_expiry = next;
}

size_t RateLimiter::size() const {
  size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard.mu);
    n += shard.index.size();
  }
  return n;
}

}  // namespace flotilla::gateway::resilience
