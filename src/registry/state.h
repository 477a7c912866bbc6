// The registry's in-memory view of the store: every service, check, KV entry and session, built
// from a snapshot and kept current by the store's events. All reads are answered from here, on the
// control thread, without touching the store. Only durable changes ever reach it.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "registry/store/store.h"
#include "registry/types.h"

namespace flotilla::registry {

struct Node {
  std::string name;
  std::string id;
  std::string address;
  std::string datacenter;
  uint64_t create_index = 0;
  uint64_t modify_index = 0;
};

// What an applied batch of events touched: the topics blocking queries wait on, plus the
// records the health runner and session logic react to.
struct Changes {
  std::set<std::string> topics;
  std::vector<std::string> checks;            // IDs put or deleted
  std::vector<Session> ended_sessions;  // as they were before deletion
};

class State {
 public:
  // Topics: "svc:<name>" (instances and checks of a service), "catalog" (the set of services and
  // their tags), "checks" (any check), "node" (the node and its checks), "sessions",
  // "kv:<key>" (one key) and "kvp:<prefix>" (a recursive read).
  void load(const store::Snapshot& snapshot);
  Changes apply(uint64_t revision, const std::vector<store::Event>& events);

  uint64_t revision() const { return revision_; }
  uint64_t topic_index(const std::string& topic) const;
  // The index of a KV read: the newest modification or deletion under prefix (or of one key).
  uint64_t kv_index(const std::string& key, bool prefix) const;

  const Node& node() const { return node_; }
  const std::map<std::string, Service>& services() const { return services_; }
  const std::map<std::string, Check>& checks() const { return checks_; }
  const std::map<std::string, KvEntry>& kv() const { return kv_; }
  const std::map<std::string, Session>& sessions() const { return sessions_; }
  // The supervisor's records by full store key ("sup/..."), values as written.
  const std::map<std::string, std::string>& supervisor_records() const { return supervisor_; }

  const Service* service(const std::string& id) const;
  const Check* check(const std::string& id) const;
  const KvEntry* kv_entry(const std::string& key) const;
  const Session* session(const std::string& id) const;
  // Instance IDs of a service name, in ID order.
  std::vector<const Service*> instances(const std::string& name) const;
  std::vector<const Check*> checks_of_service(const std::string& service_id) const;
  std::vector<const Check*> node_checks() const;

 private:
  void put(const store::KeyValue& kv, Changes& changes);
  void erase(const std::string& key, uint64_t revision, Changes& changes);
  void touch(const std::string& topic, uint64_t revision, Changes& changes);
  void touch_service(const std::string& name, uint64_t revision, Changes& changes);
  void touch_kv(const std::string& key, Changes& changes);

  uint64_t revision_ = 0;
  Node node_;
  std::map<std::string, Service> services_;
  std::map<std::string, Check> checks_;
  std::map<std::string, KvEntry> kv_;
  std::map<std::string, Session> sessions_;
  std::map<std::string, std::string> supervisor_;
  std::map<std::string, std::set<std::string>> by_name_;           // service name -> instance IDs
  std::map<std::string, std::set<std::string>> checks_by_service_;  // service ID -> check IDs
  std::set<std::string> node_check_ids_;  // checks of the node itself (every health entry has them)
  std::unordered_map<std::string, uint64_t> topic_index_;
  // Deleted KV keys and when, so a recursive read's index moves when a key disappears. Bounded:
  // the oldest are folded into kv_floor_.
  std::map<std::string, uint64_t> kv_tombstones_;
  uint64_t kv_floor_ = 0;
  uint64_t base_index_ = 1;
};

}  // namespace flotilla::registry
