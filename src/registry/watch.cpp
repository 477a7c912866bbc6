#include "registry/watch.h"

#include <xxhash.h>

#include "common/event_loop.h"
#include "common/metrics.h"

namespace flotilla::registry {

uint64_t QueryResult::fingerprint() const {
  return XXH3_64bits_withSeed(body.data(), body.size(), static_cast<uint64_t>(status));
}

struct WatchHub::Waiter {
  Waiter(EventLoop& loop) : timer(loop) {}
  std::string query_key;
  std::vector<std::pair<std::string, std::list<std::shared_ptr<Waiter>>::iterator>> positions;
  uint64_t fingerprint = 0;
  uint64_t index = 0;
  Compute compute;
  Deliver deliver;
  Timer timer;
  bool done = false;
};

WatchHub::WatchHub(EventLoop& loop, metrics::Registry& m) : loop_(loop) {
  waiting_gauge_ = &m.gauge("flotilla_blocking_queries_waiting", "Blocking queries currently parked.");
  woken_ = &m.counter("flotilla_blocking_queries_woken_total",
                      "Blocking queries answered early because their result changed.");
  rechecked_ = &m.counter("flotilla_blocking_queries_recomputed_total",
                          "Distinct blocking query results recomputed after a write.");
}

WatchHub::~WatchHub() {
  for (auto& [topic, list] : topics_)
    for (auto& w : list) w->timer.cancel();
}

WatchHub::Handle WatchHub::park(std::string query_key, std::vector<std::string> topics, const QueryResult& first,
                                Duration wait, Compute compute, Deliver deliver) {
  auto w = std::make_shared<Waiter>(loop_);
  w->query_key = std::move(query_key);
  w->fingerprint = first.fingerprint();
  w->index = first.index;
  w->compute = std::move(compute);
  w->deliver = std::move(deliver);
  for (auto& t : topics) {
    auto& list = topics_[t];
    list.push_front(w);
    if (t.rfind("kvp:", 0) == 0) ++prefixes_[t.substr(4)];
    w->positions.emplace_back(t, list.begin());
  }
  ++waiting_;
  waiting_gauge_->set(static_cast<int64_t>(waiting_));
  std::weak_ptr<Waiter> weak = w;
  w->timer.arm(wait, [this, weak] {
    auto self = weak.lock();
    if (!self || self->done) return;
    auto result = self->compute();
    auto deliver = std::move(self->deliver);
    finish(self);
    deliver(std::move(result));
  });
  return w;
}

void WatchHub::finish(const std::shared_ptr<Waiter>& w) {
  if (w->done) return;
  w->done = true;
  w->timer.cancel();
  for (auto& [topic, it] : w->positions) {
    auto t = topics_.find(topic);
    if (t == topics_.end()) continue;
    t->second.erase(it);
    if (t->second.empty()) topics_.erase(t);
    if (topic.rfind("kvp:", 0) == 0) {
      auto p = prefixes_.find(topic.substr(4));
      if (p != prefixes_.end() && --p->second == 0) prefixes_.erase(p);
    }
  }
  w->positions.clear();
  --waiting_;
  waiting_gauge_->set(static_cast<int64_t>(waiting_));
}

void WatchHub::add_prefix_topics(const std::string& key, std::set<std::string>& topics) const {
  for (const auto& [prefix, count] : prefixes_)
    if (key.compare(0, prefix.size(), prefix) == 0) topics.insert("kvp:" + prefix);
}

void WatchHub::cancel(const Handle& handle) {
  if (auto w = handle.lock()) {
    w->deliver = nullptr;
    finish(w);
  }
}

void WatchHub::notify(const std::set<std::string>& topics) {
  if (waiting_ == 0) return;
  std::vector<std::shared_ptr<Waiter>> affected;
  for (const auto& t : topics) {
    auto it = topics_.find(t);
    if (it == topics_.end()) continue;
    for (auto& w : it->second) affected.push_back(w);
  }
  if (affected.empty()) return;
  // One recomputation per distinct query in this pass.
  std::unordered_map<std::string, std::pair<QueryResult, uint64_t>> results;
  for (auto& w : affected) {
    if (w->done) continue;
    auto it = results.find(w->query_key);
    if (it == results.end()) {
      rechecked_->inc();
      auto r = w->compute();
      auto fp = r.fingerprint();
      it = results.emplace(w->query_key, std::make_pair(std::move(r), fp)).first;
    }
    if (it->second.second == w->fingerprint) continue;
    auto deliver = std::move(w->deliver);
    finish(w);
    woken_->inc();
    QueryResult copy = it->second.first;
    // The answer's index must move past the one the client sent, or it would ask again at once.
    if (copy.index <= w->index && w->index != UINT64_MAX) copy.index = w->index + 1;
    if (deliver) deliver(std::move(copy));
  }
}

}  // namespace flotilla::registry
