// The registry's durable store: a revisioned key-value space, the same contract etcd v3 offers,
// so that SQLite (one machine) and etcd (many) are interchangeable behind it.
//
// - Every committed transaction that changes something gets the next revision (the registry's
//   `index`). Revisions only grow, across restarts too.
// - A transaction is a list of compares (a key's mod_revision equals N; 0 = absent) and the
//   operations to apply when all hold. It is durable when its callback runs.
// - Committed changes are delivered as events, in revision order, before the callback of the
//   transaction that made them. Everything is delivered on the EventLoop the store was given.
// - Leases (for TTL things such as sessions): keys put with a lease are deleted when the lease
//   expires or is revoked; a lease's timer restarts from a restart of the store.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/duration.h"

namespace flotilla::store {

struct KeyValue {
  std::string key;
  std::string value;
  uint64_t create_revision = 0;
  uint64_t mod_revision = 0;
  uint64_t version = 0;
  int64_t lease = 0;
};

struct Event {
  enum class Type { put, del };
  Type type;
  KeyValue kv;  // for del: key and mod_revision (the deleting revision)
};

struct Compare {
  std::string key;
  uint64_t mod_revision = 0;  // 0: the key must not exist
};

struct Op {
  enum class Type { put, del, del_prefix, lease_grant, lease_revoke };
  Type type;
  std::string key;  // key or prefix
  std::string value;
  int64_t lease = 0;  // put: attach to lease; lease ops: the lease id
  Duration ttl{0};    // lease_grant

  static Op put(std::string key, std::string value, int64_t lease = 0) {
    return Op{Type::put, std::move(key), std::move(value), lease, {}};
  }
  static Op del(std::string key) { return Op{Type::del, std::move(key), {}, 0, {}}; }
  static Op del_prefix(std::string prefix) { return Op{Type::del_prefix, std::move(prefix), {}, 0, {}}; }
  static Op grant(int64_t lease, Duration ttl) { return Op{Type::lease_grant, {}, {}, lease, ttl}; }
  static Op revoke(int64_t lease) { return Op{Type::lease_revoke, {}, {}, lease, {}}; }
};

struct Txn {
  std::vector<Compare> compares;
  std::vector<Op> ops;
};

struct TxnResult {
  bool succeeded = false;  // false: a compare failed (nothing applied) or an error
  uint64_t revision = 0;   // the store's revision after this transaction
  std::string error;       // non-empty: the store failed (disk full, I/O error)
};

struct Snapshot {
  uint64_t revision = 0;
  std::vector<KeyValue> kvs;
};

class Store {
 public:
  using EventSink = std::function<void(uint64_t revision, std::vector<Event>&& events)>;
  using Done = std::function<void(const TxnResult&)>;

  virtual ~Store() = default;
  // Reads the whole keyspace; the caller builds its view from it, then calls start().
  virtual Snapshot load() = 0;
  // From now on, committed changes are delivered to sink.
  virtual void start(EventSink sink) = 0;
  // Thread-safe. done runs on the store's EventLoop once the outcome is durable.
  virtual void commit(Txn txn, Done done) = 0;
  // Restarts a lease's TTL; false when the lease does not exist (expired or revoked).
  virtual bool keepalive(int64_t lease) = 0;
  // Finishes queued transactions, then stops delivering.
  virtual void stop() = 0;
  // "sqlite:/path" or "etcd://..." — for logs and /v1/agent/self.
  virtual std::string describe() const = 0;
};

}  // namespace flotilla::store
