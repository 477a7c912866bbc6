#include "registry/state.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace flotilla::registry {

namespace {
constexpr size_t kMaxTombstones = 100000;

bool starts_with(const std::string& s, std::string_view p) { return s.compare(0, p.size(), p) == 0; }
}  // namespace

void State::load(const store::Snapshot& snapshot) {
  Changes ignored;
  for (const auto& kv : snapshot.kvs) put(kv, ignored);
  revision_ = snapshot.revision;
  // Deletions before the snapshot left no trace, so every index starts at the loaded revision:
  // a client blocking with an older index is answered at once instead of missing a change.
  topic_index_.clear();
  kv_tombstones_.clear();
  kv_floor_ = snapshot.revision;
  base_index_ = std::max<uint64_t>(snapshot.revision, 1);
}

Changes State::apply(uint64_t revision, const std::vector<store::Event>& events) {
  Changes changes;
  for (const auto& e : events) {
    if (e.type == store::Event::Type::put) put(e.kv, changes);
    else erase(e.kv.key, e.kv.mod_revision, changes);
  }
  revision_ = std::max(revision_, revision);
  return changes;
}

void State::touch(const std::string& topic, uint64_t revision, Changes& changes) {
  auto& idx = topic_index_[topic];
  idx = std::max(idx, revision);
  changes.topics.insert(topic);
}

void State::touch_service(const std::string& name, uint64_t revision, Changes& changes) {
  touch("svc:" + name, revision, changes);
}

void State::touch_kv(const std::string& key, Changes& changes) {
  changes.topics.insert("kv:" + key);
}

void State::put(const store::KeyValue& kv, Changes& changes) {
  const auto& key = kv.key;
  uint64_t rev = kv.mod_revision;
  try {
    if (starts_with(key, keys::supervisor)) {
      supervisor_[key] = kv.value;
    } else if (starts_with(key, keys::kv)) {
      auto e = decode_kv(kv.value);
      e.key = key.substr(keys::kv.size());
      e.create_index = kv.create_revision;
      e.modify_index = kv.mod_revision;
      kv_tombstones_.erase(e.key);
      touch_kv(e.key, changes);
      kv_[e.key] = std::move(e);
    } else if (starts_with(key, keys::service)) {
      auto s = decode_service(kv.value);
      s.create_index = kv.create_revision;
      s.modify_index = kv.mod_revision;
      if (auto it = services_.find(s.id); it != services_.end() && it->second.name != s.name) {
        by_name_[it->second.name].erase(s.id);
        if (by_name_[it->second.name].empty()) by_name_.erase(it->second.name);
        touch_service(it->second.name, rev, changes);
      }
      touch("catalog", rev, changes);
      by_name_[s.name].insert(s.id);
      touch_service(s.name, rev, changes);
      services_[s.id] = std::move(s);
    } else if (starts_with(key, keys::check)) {
      auto c = decode_check(kv.value);
      c.create_index = kv.create_revision;
      c.modify_index = kv.mod_revision;
      if (auto it = checks_.find(c.id); it != checks_.end()) {
        const Check& old = it->second;
        if (old.service_id != c.service_id) {
          if (old.service_id.empty()) {
            node_check_ids_.erase(c.id);
          } else if (auto s = checks_by_service_.find(old.service_id); s != checks_by_service_.end()) {
            s->second.erase(c.id);
            if (s->second.empty()) checks_by_service_.erase(s);
          }
        }
        // A check that moved away from a service changes that service's results too.
        if (!old.service_id.empty() && old.service_name != c.service_name) touch_service(old.service_name, rev, changes);
      }
      if (c.service_id.empty()) {
        node_check_ids_.insert(c.id);
        touch("node", rev, changes);
      } else {
        checks_by_service_[c.service_id].insert(c.id);
        touch_service(c.service_name, rev, changes);
      }
      touch("checks", rev, changes);
      changes.checks.push_back(c.id);
      checks_[c.id] = std::move(c);
    } else if (starts_with(key, keys::session)) {
      auto s = decode_session(kv.value);
      s.create_index = kv.create_revision;
      s.modify_index = kv.mod_revision;
      touch("sessions", rev, changes);
      sessions_[s.id] = std::move(s);
    } else if (key == keys::node) {
      auto j = nlohmann::json::parse(kv.value);
      node_.name = j.at("name");
      node_.id = j.at("id");
      node_.address = j.at("address");
      node_.datacenter = j.at("datacenter");
      node_.create_index = kv.create_revision;
      node_.modify_index = kv.mod_revision;
      touch("node", rev, changes);
    }
  } catch (const std::exception& e) {
    // A record this version cannot read must not take the agent down; say which one.
    spdlog::error("store record {} at revision {} ignored: {}", key, rev, e.what());
  }
}

void State::erase(const std::string& key, uint64_t rev, Changes& changes) {
  if (starts_with(key, keys::supervisor)) {
    supervisor_.erase(key);
  } else if (starts_with(key, keys::kv)) {
    auto k = key.substr(keys::kv.size());
    kv_.erase(k);
    kv_tombstones_[k] = rev;
    if (kv_tombstones_.size() > kMaxTombstones) {
      // Fold the oldest half into the floor every KV read's index includes.
      std::vector<std::pair<uint64_t, std::string>> by_rev;
      by_rev.reserve(kv_tombstones_.size());
      for (auto& [k2, r] : kv_tombstones_) by_rev.emplace_back(r, k2);
      std::nth_element(by_rev.begin(), by_rev.begin() + by_rev.size() / 2, by_rev.end());
      for (size_t i = 0; i < by_rev.size() / 2; ++i) {
        kv_floor_ = std::max(kv_floor_, by_rev[i].first);
        kv_tombstones_.erase(by_rev[i].second);
      }
    }
    touch_kv(k, changes);
  } else if (starts_with(key, keys::service)) {
    auto id = key.substr(keys::service.size());
    auto it = services_.find(id);
    if (it == services_.end()) return;
    auto& ids = by_name_[it->second.name];
    ids.erase(id);
    if (ids.empty()) by_name_.erase(it->second.name);
    touch_service(it->second.name, rev, changes);
    touch("catalog", rev, changes);
    services_.erase(it);
  } else if (starts_with(key, keys::check)) {
    auto id = key.substr(keys::check.size());
    auto it = checks_.find(id);
    if (it == checks_.end()) return;
    if (it->second.service_id.empty()) {
      node_check_ids_.erase(id);
      touch("node", rev, changes);
    } else {
      auto& ids = checks_by_service_[it->second.service_id];
      ids.erase(id);
      if (ids.empty()) checks_by_service_.erase(it->second.service_id);
      touch_service(it->second.service_name, rev, changes);
    }
    touch("checks", rev, changes);
    changes.checks.push_back(id);
    checks_.erase(it);
  } else if (starts_with(key, keys::session)) {
    auto id = key.substr(keys::session.size());
    if (auto it = sessions_.find(id); it != sessions_.end()) {
      touch("sessions", rev, changes);
      changes.ended_sessions.push_back(std::move(it->second));
      sessions_.erase(it);
    }
  }
}

uint64_t State::topic_index(const std::string& topic) const {
  auto it = topic_index_.find(topic);
  // Never 0: Consul clients treat index 0 as "no index" and would not block.
  return it == topic_index_.end() ? base_index_ : std::max(it->second, base_index_);
}

uint64_t State::kv_index(const std::string& key, bool prefix) const {
  uint64_t idx = std::max<uint64_t>(kv_floor_, 1);
  if (!prefix) {
    if (auto it = kv_.find(key); it != kv_.end()) return std::max(idx, it->second.modify_index);
    if (auto it = kv_tombstones_.find(key); it != kv_tombstones_.end()) return std::max(idx, it->second);
    return idx;
  }
  for (auto it = kv_.lower_bound(key); it != kv_.end() && it->first.compare(0, key.size(), key) == 0; ++it)
    idx = std::max(idx, it->second.modify_index);
  for (auto it = kv_tombstones_.lower_bound(key);
       it != kv_tombstones_.end() && it->first.compare(0, key.size(), key) == 0; ++it)
    idx = std::max(idx, it->second);
  return idx;
}

const Service* State::service(const std::string& id) const {
  auto it = services_.find(id);
  return it == services_.end() ? nullptr : &it->second;
}
const Check* State::check(const std::string& id) const {
  auto it = checks_.find(id);
  return it == checks_.end() ? nullptr : &it->second;
}
const KvEntry* State::kv_entry(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}
const Session* State::session(const std::string& id) const {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : &it->second;
}

std::vector<const Service*> State::instances(const std::string& name) const {
  std::vector<const Service*> out;
  if (auto it = by_name_.find(name); it != by_name_.end())
    for (const auto& id : it->second) out.push_back(&services_.at(id));
  return out;
}

std::vector<const Check*> State::checks_of_service(const std::string& service_id) const {
  std::vector<const Check*> out;
  if (auto it = checks_by_service_.find(service_id); it != checks_by_service_.end())
    for (const auto& id : it->second) out.push_back(&checks_.at(id));
  return out;
}

std::vector<const Check*> State::node_checks() const {
  std::vector<const Check*> out;
  out.reserve(node_check_ids_.size());
  for (const auto& id : node_check_ids_) out.push_back(&checks_.at(id));
  return out;
}

}  // namespace flotilla::registry
