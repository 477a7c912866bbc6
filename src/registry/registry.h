// The registry's write side: every change (register, deregister, check status, KV, sessions)
// becomes one store transaction built from the current view, and its caller is answered once the
// transaction is durable and applied to the view. Runs on the control thread.
#pragma once

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "registry/state.h"
#include "registry/store/store.h"
#include "registry/types.h"
#include "registry/watch.h"

namespace flotilla {
class EventLoop;
namespace metrics {
class Registry;
}
}  // namespace flotilla

namespace flotilla::registry {

struct Identity {
  std::string node_name;
  std::string datacenter = "dc1";
  std::string address = "127.0.0.1";
};

struct WriteResult {
  bool ok = true;         // false: the store failed (error says why)
  bool applied = true;    // KV/session answers: false for a failed CAS, lock held, ...
  std::string error;
  std::string id;         // session create
};

struct KvPut {
  std::string key;
  std::string value;
  uint64_t flags = 0;
  std::optional<uint64_t> cas;
  std::string acquire;  // session ID
  std::string release;  // session ID
};

constexpr size_t kMaxKvValue = 512 * 1024;

class Registry {
 public:
  using Done = std::function<void(const WriteResult&)>;
  // Called for every check put or deleted (nullptr), after the view changed.
  using CheckListener = std::function<void(const std::string& id, const Check* check)>;

  Registry(EventLoop& loop, store::Store& store, Identity identity, metrics::Registry& metrics);
  ~Registry();

  // Loads the view from the store, writes the node record if it changed, starts following
  // the store. Throws on a store error.
  void start();

  const State& state() const { return state_; }
  WatchHub& watches() { return watches_; }
  const Identity& identity() const { return identity_; }
  void on_check_change(CheckListener listener) { check_listeners_.push_back(std::move(listener)); }

  // Validation problems throw ApiError before anything is written.
  void register_service(Service service, std::vector<Check> checks, bool replace_existing_checks, Done done);
  void deregister_service(const std::string& id, Done done);
  // service_id empty: the node itself.
  void set_maintenance(const std::string& service_id, bool enable, const std::string& reason, Done done);
  void register_check(Check check, Done done);
  void deregister_check(const std::string& id, Done done);
  // Writes only when status or output changed (output-only changes at most every
  // output_interval, as Consul's check_update_interval).
  void update_check(const std::string& id, const std::string& status, const std::string& output, Done done);

  void kv_put(KvPut put, Done done);
  void kv_delete(const std::string& key, bool recurse, std::optional<uint64_t> cas, Done done);

  void session_create(Session session, Done done);
  void session_destroy(const std::string& id, Done done);
  // false: no such session (or its TTL ran out).
  bool session_renew(const std::string& id);

  // No write is committing or waiting to be built: at shutdown, run the loop until this holds
  // (bounded), so the last writes asked for (deregistrations) reach the store.
  bool idle() const;

  Duration output_interval = std::chrono::minutes(5);

 private:
  using Build = std::function<std::optional<store::Txn>(WriteResult& result)>;
  struct Deferred {
    Build build;
    Done done;
    bool user_compare;
    bool settled;
    int attempt;
  };
  // Builds a transaction from the current view and commits it; when a compare fails because the
  // view moved meanwhile, builds again (bounded). build returns nullopt to answer without writing.
  // user_compare: a failed compare is the caller's answer (KV cas), not a reason to retry.
  // A build that decides there is nothing to write returns a transaction without ops whose
  // compares name the records it read (nullopt: it read nothing that writes could change). If a
  // write of ours to one of them is still committing, it is built again once that is applied:
  // "nothing to do" read from a view that lacks it could be wrong (a deregistration issued while
  // the registration commits would find no service and leave it registered for good).
  // settled: the same wait even when it does write (a deregistration must see every check being
  // added to its service). While one waits, later writes queue behind it: writes apply in the
  // order they were asked for.
  void run(Build build, Done done, bool user_compare = false, bool settled = false);
  // Builds and commits; returns the write itself when it must wait (the caller queues it).
  std::optional<Deferred> build_and_commit(Build build, Done done, bool user_compare, bool settled, int attempt);
  bool committing(const store::Txn& txn) const;
  void run_deferred();
  static void answer(const Done& done, const WriteResult& result);
  void on_events(uint64_t revision, std::vector<store::Event>&& events);
  void flush_notifications();
  void invalidate_sessions_of_check(const std::string& check_id);
  // Keys released (or deleted) by a write, by the lock-delay that starts once it is applied.
  using Released = std::map<Duration, std::vector<std::string>>;
  // Adds to `txn` the end of every session that depends on one of `ending` (checks this write
  // makes critical or deletes): the session deleted, its lease revoked, its locks released or
  // deleted per its behavior, in the same transaction as the check change, as Consul does.
  void end_sessions_of_checks(const std::set<std::string>& ending, store::Txn& txn, Released& released) const;
  // `done` that first starts the lock-delays of what the write released.
  Done starting_lock_delays(std::shared_ptr<Released> released, Done done);
  // Releases (or deletes, per the session's behavior) every key held by a session that no
  // longer exists. One pass at a time; a request during a pass makes one more pass.
  void release_orphaned_locks();
  void add_release(const KvEntry& entry, const std::string& behavior, store::Txn& txn) const;
  void start_lock_delay(const std::vector<std::string>& keys, Duration delay);
  bool lock_delayed(const std::string& key);

  EventLoop& loop_;
  store::Store& store_;
  Identity identity_;
  metrics::Registry& metrics_;
  State state_;
  WatchHub watches_;
  std::vector<CheckListener> check_listeners_;
  std::map<std::string, std::chrono::steady_clock::time_point> lock_delay_;
  std::map<std::string, std::chrono::steady_clock::time_point> output_written_;
  std::set<std::string> pending_topics_;  // touched by applied events, watchers not yet told
  bool flush_posted_ = false;
  std::map<std::string, Session> ended_sessions_;  // ended by the store, locks not yet released
  bool release_running_ = false;
  bool release_again_ = false;
  uint64_t commits_issued_ = 0;                          // transactions handed to the store
  struct Named {  // the records a committing transaction names (compares and ops)
    std::vector<std::string> keys;
    std::vector<std::string> prefixes;  // of del_prefix ops
  };
  std::map<uint64_t, Named> inflight_;  // until the store answers
  std::unordered_map<std::string, int> inflight_keys_;
  std::multiset<std::string> inflight_prefixes_;
  std::deque<Deferred> deferred_;
};

}  // namespace flotilla::registry
