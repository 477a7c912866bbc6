// Blocking queries (?index=N&wait=T). A waiting query is parked on the topics its result depends
// on; when a write touches one of them, its result is recomputed (once per distinct query, however
// many wait on it) and the query is answered only if that result actually changed. This is what
// makes one change to a service wake exactly the watchers of that service, unlike Consul.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/duration.h"

namespace flotilla {
class EventLoop;
namespace metrics {
class Registry;
class Gauge;
class Counter;
}  // namespace metrics
}  // namespace flotilla

namespace flotilla::registry {

struct QueryResult {
  int status = 200;
  std::string body;
  uint64_t index = 0;
  std::string content_type = "application/json";

  uint64_t fingerprint() const;
};

class WatchHub {
 public:
  using Compute = std::function<QueryResult()>;
  using Deliver = std::function<void(QueryResult&&)>;
  struct Waiter;
  using Handle = std::weak_ptr<Waiter>;

  WatchHub(EventLoop& loop, metrics::Registry& metrics);
  ~WatchHub();

  // Parks a query until a topic it depends on changes its result, or `wait` passes. `first` is
  // the result the client already has (its fingerprint decides what counts as a change).
  // query_key identifies identical queries so a change recomputes each one once.
  Handle park(std::string query_key, std::vector<std::string> topics, const QueryResult& first, Duration wait,
              Compute compute, Deliver deliver);
  // The client went away: forget the waiter.
  void cancel(const Handle& handle);
  // After a write: re-evaluate the waiters of these topics.
  void notify(const std::set<std::string>& topics);
  // Adds the "kvp:<prefix>" topics of parked recursive reads whose prefix starts `key`. Costs
  // one comparison per distinct parked prefix, not one string per prefix of the key.
  void add_prefix_topics(const std::string& key, std::set<std::string>& topics) const;
  size_t waiting() const { return waiting_; }

 private:
  void finish(const std::shared_ptr<Waiter>& w);

  EventLoop& loop_;
  std::unordered_map<std::string, std::list<std::shared_ptr<Waiter>>> topics_;
  size_t waiting_ = 0;
  std::map<std::string, size_t> prefixes_;  // parked recursive reads, by prefix
  metrics::Gauge* waiting_gauge_;
  metrics::Counter* woken_;
  metrics::Counter* rechecked_;
};

}  // namespace flotilla::registry
