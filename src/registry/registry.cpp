#include "registry/registry.h"

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>


#include "common/error.h"
#include "common/event_loop.h"
#include "common/metrics.h"
#include "common/random.h"
#include "common/uuid.h"

namespace flotilla::registry {

namespace {
using Clock = std::chrono::steady_clock;
constexpr int kMaxAttempts = 16;

std::string svc_key(const std::string& id) { return std::string(keys::service) + id; }
std::string chk_key(const std::string& id) { return std::string(keys::check) + id; }
std::string ses_key(const std::string& id) { return std::string(keys::session) + id; }
std::string kv_key(const std::string& key) { return std::string(keys::kv) + key; }

std::string maintenance_check_id(const std::string& service_id) {
  return service_id.empty() ? "_node_maintenance" : "_service_maintenance:" + service_id;
}

int64_t new_lease_id() {
  thread_local Random rng;
  return static_cast<int64_t>(rng() >> 1) | 1;
}
}  // namespace

Registry::Registry(EventLoop& loop, store::Store& store, Identity identity, metrics::Registry& metrics)
    : loop_(loop), store_(store), identity_(std::move(identity)), metrics_(metrics), watches_(loop, metrics) {
  for (const char* s : {status::passing, status::warning, status::critical}) {
    metrics.gauge_callback("flotilla_checks", "Health checks by status.", {{"status", s}}, [this, s] {
      double n = 0;
      for (const auto& [id, c] : state_.checks()) n += c.status == s;
      return n;
    });
  }
  metrics.gauge_callback("flotilla_services", "Registered service instances.", {},
                         [this] { return static_cast<double>(state_.services().size()); });
  metrics.gauge_callback("flotilla_kv_entries", "Keys in the KV store.", {},
                         [this] { return static_cast<double>(state_.kv().size()); });
  metrics.gauge_callback("flotilla_sessions", "Live sessions.", {},
                         [this] { return static_cast<double>(state_.sessions().size()); });
  metrics.gauge_callback("flotilla_registry_index", "The registry's current index (store revision).", {},
                         [this] { return static_cast<double>(state_.revision()); });
}

Registry::~Registry() = default;

void Registry::start() {
  state_.load(store_.load());
  store_.start([this](uint64_t rev, std::vector<store::Event>&& events) { on_events(rev, std::move(events)); });
  // Locks left held by sessions that ended while the agent was down (between a TTL expiry and
  // its release) are released now.
  release_orphaned_locks();

  // The node record and its "serfHealth" check, which sessions depend on by default.
  const auto& node = state_.node();
  store::Txn txn;
  if (node.name != identity_.node_name || node.address != identity_.address ||
      node.datacenter != identity_.datacenter || node.id.empty()) {
    nlohmann::json j{{"name", identity_.node_name},
                     {"id", node.id.empty() ? make_uuid() : node.id},
                     {"address", identity_.address},
                     {"datacenter", identity_.datacenter}};
    txn.ops.push_back(store::Op::put(std::string(keys::node), j.dump()));
  }
  if (!state_.check("serfHealth")) {
    Check c;
    c.id = "serfHealth";
    c.name = "Serf Health Status";
    c.status = status::passing;
    c.output = "Agent alive and reachable";
    txn.ops.push_back(store::Op::put(chk_key(c.id), encode(c)));
  }
  if (txn.ops.empty()) return;
  bool done = false;
  std::string error;
  store_.commit(std::move(txn), [&](const store::TxnResult& r) {
    done = true;
    error = r.error;
  });
  loop_.run_until([&] { return done; });
  if (!error.empty()) throw std::runtime_error("cannot write the node record: " + error);
}

void Registry::run(Build build, Done done, bool user_compare, bool settled) {
  if (!deferred_.empty()) {
    deferred_.push_back(Deferred{std::move(build), std::move(done), user_compare, settled, 0});
    return;
  }
  if (auto wait = build_and_commit(std::move(build), std::move(done), user_compare, settled, 0))
    deferred_.push_back(std::move(*wait));
}

bool Registry::committing(const store::Txn& txn) const {
  if (inflight_.empty()) return false;
  auto busy = [&](const std::string& key) {
    if (inflight_keys_.count(key)) return true;
    for (const auto& p : inflight_prefixes_)
      if (key.compare(0, p.size(), p) == 0) return true;
    return false;
  };
  for (const auto& c : txn.compares)
    if (busy(c.key)) return true;
  return false;
}

std::optional<Registry::Deferred> Registry::build_and_commit(Build build, Done done, bool user_compare, bool settled,
                                                             int attempt) {
  WriteResult result;
  std::optional<store::Txn> txn;
  try {
    txn = build(result);
  } catch (const std::exception& e) {
    // A bug (or a record that cannot be encoded): this write fails, the queue goes on.
    spdlog::error("registry: building a write failed: {}", e.what());
    result.ok = false;
    result.error = e.what();
    txn.reset();
  }
  // Nothing to write, decided from records a write of ours is still committing: decide again
  // once it is applied. A settled write waits for those records whatever it decided.
  if (txn && (txn->ops.empty() || settled) && committing(*txn))
    return Deferred{std::move(build), std::move(done), user_compare, settled, attempt};
  if (!txn || txn->ops.empty()) {
    answer(done, result);
    return std::nullopt;
  }
  const uint64_t seq = ++commits_issued_;
  Named& named = inflight_[seq];
  for (const auto& c : txn->compares) named.keys.push_back(c.key);
  for (const auto& op : txn->ops) {
    if (op.type == store::Op::Type::del_prefix) named.prefixes.push_back(op.key);
    else if (!op.key.empty()) named.keys.push_back(op.key);
  }
  for (const auto& k : named.keys) ++inflight_keys_[k];
  for (const auto& p : named.prefixes) inflight_prefixes_.insert(p);
  store_.commit(std::move(*txn), [this, seq, build = std::move(build), done = std::move(done), user_compare, settled,
                                  attempt, result](const store::TxnResult& r) mutable {
    // The view has this write's events by now (the store delivers them first).
    if (auto it = inflight_.find(seq); it != inflight_.end()) {
      for (const auto& k : it->second.keys)
        if (auto n = inflight_keys_.find(k); n != inflight_keys_.end() && --n->second == 0) inflight_keys_.erase(n);
      for (const auto& p : it->second.prefixes) inflight_prefixes_.erase(inflight_prefixes_.find(p));
      inflight_.erase(it);
    }
    if (!r.error.empty()) {
      result.ok = false;
      result.error = "store write failed: " + r.error;
    } else if (!r.succeeded) {
      if (user_compare) {
        result.applied = false;
      } else if (attempt + 1 < kMaxAttempts) {
        // The view moved between build and commit; build again from the newer view. It was
        // asked before anything queued: it goes first if it has to wait.
        if (auto wait = build_and_commit(std::move(build), std::move(done), user_compare, settled, attempt + 1))
          deferred_.push_front(std::move(*wait));
        run_deferred();
        return;
      } else {
        result.ok = false;
        result.error = "too many concurrent changes to the same records; try again";
      }
    }
    answer(done, result);
    run_deferred();
  });
  return std::nullopt;
}

void Registry::answer(const Done& done, const WriteResult& result) {
  // A completion that throws is a bug; it must not stop the writes queued behind this one.
  try {
    if (done) done(result);
  } catch (const std::exception& e) {
    spdlog::error("registry: a write's completion failed: {}", e.what());
  }
}

void Registry::run_deferred() {
  // In the order asked. One that must wait again stays first: those behind it wait too, so
  // writes apply in the order they were asked for.
  while (!deferred_.empty()) {
    auto d = std::move(deferred_.front());
    deferred_.pop_front();
    if (auto wait = build_and_commit(std::move(d.build), std::move(d.done), d.user_compare, d.settled, d.attempt)) {
      deferred_.push_front(std::move(*wait));
      break;
    }
  }
}

bool Registry::idle() const { return deferred_.empty() && inflight_.empty(); }

void Registry::on_events(uint64_t revision, std::vector<store::Event>&& events) {
  auto changes = state_.apply(revision, events);

  // Watchers are told after the writers of this group are answered (their completions follow
  // these events in the same batch), and once per topic however many writes touched it.
  pending_topics_.merge(changes.topics);
  if (!flush_posted_ && !pending_topics_.empty()) {
    flush_posted_ = true;
    loop_.post([this] { flush_notifications(); });
  }

  for (const auto& id : changes.checks) {
    const Check* c = state_.check(id);
    for (auto& l : check_listeners_) l(id, c);
    if (!c) output_written_.erase(id);
    // A session ends when a check it depends on goes critical or goes away, as in Consul.
    if (!c || c->status == status::critical) invalidate_sessions_of_check(id);
  }
  // A session that ended without releasing its locks (its TTL ran out: the store deleted it).
  for (const auto& s : changes.ended_sessions) ended_sessions_[s.id] = s;
  if (!changes.ended_sessions.empty()) release_orphaned_locks();
}

void Registry::flush_notifications() {
  flush_posted_ = false;
  std::set<std::string> topics;
  topics.swap(pending_topics_);
  std::set<std::string> prefixes;
  for (const auto& t : topics)
    if (t.rfind("kv:", 0) == 0) watches_.add_prefix_topics(t.substr(3), prefixes);
  topics.merge(prefixes);
  watches_.notify(topics);
}

void Registry::add_release(const KvEntry& e, const std::string& behavior, store::Txn& txn) const {
  txn.compares.push_back({kv_key(e.key), e.modify_index});
  if (behavior == "delete") {
    txn.ops.push_back(store::Op::del(kv_key(e.key)));
  } else {
    KvEntry n = e;
    n.session.clear();
    txn.ops.push_back(store::Op::put(kv_key(e.key), encode(n)));
  }
}

void Registry::start_lock_delay(const std::vector<std::string>& keys, Duration delay) {
  if (delay.count() <= 0) return;
  auto now = Clock::now();
  if (lock_delay_.size() > 4096) std::erase_if(lock_delay_, [now](const auto& kv) { return kv.second <= now; });
  for (const auto& k : keys) lock_delay_[k] = now + delay;
}

void Registry::release_orphaned_locks() {
  if (release_running_) {
    release_again_ = true;  // one more pass when the running one ends
    return;
  }
  // Keys whose session no longer exists: the ones of sessions that just ended use that session's
  // behavior and lock-delay; any other (left by a crash between expiry and release) is released.
  auto plan = std::make_shared<std::map<Duration, std::vector<std::string>>>();
  auto seen = std::make_shared<std::vector<std::string>>();  // ended sessions this pass covers
  release_running_ = true;
  run([this, plan, seen](WriteResult&) -> std::optional<store::Txn> {
        plan->clear();
        seen->clear();
        for (const auto& [id, s] : ended_sessions_) seen->push_back(id);
        store::Txn txn;
        for (const auto& [key, e] : state_.kv()) {
          if (e.session.empty() || state_.session(e.session)) continue;
          auto ended = ended_sessions_.find(e.session);
          add_release(e, ended != ended_sessions_.end() ? ended->second.behavior : "release", txn);
          (*plan)[ended != ended_sessions_.end() ? ended->second.lock_delay : Duration::zero()].push_back(key);
        }
        if (txn.ops.empty()) return std::nullopt;
        return txn;
      },
      [this, plan, seen](const WriteResult& r) {
        release_running_ = false;
        if (!r.ok) {
          // Acquire treats a lock of a missing session as free meanwhile; the next ended
          // session (or restart) tries again.
          spdlog::error("releasing the locks of ended sessions failed: {}", r.error);
        } else {
          for (const auto& [delay, keys] : *plan) start_lock_delay(keys, delay);
          for (const auto& id : *seen) ended_sessions_.erase(id);
        }
        if (release_again_) {
          release_again_ = false;
          release_orphaned_locks();
        }
      });
}

void Registry::end_sessions_of_checks(const std::set<std::string>& ending, store::Txn& txn, Released& released) const {
  if (ending.empty()) return;
  for (const auto& [id, s] : state_.sessions()) {
    auto uses = [&](const std::vector<std::string>& list) {
      return std::any_of(list.begin(), list.end(), [&](const std::string& c) { return ending.count(c) > 0; });
    };
    if (!uses(s.node_checks) && !uses(s.service_checks)) continue;
    txn.compares.push_back({ses_key(id), s.modify_index});
    for (const auto& [key, e] : state_.kv()) {
      if (e.session != id) continue;
      add_release(e, s.behavior, txn);
      released[s.lock_delay].push_back(key);
    }
    txn.ops.push_back(store::Op::del(ses_key(id)));
    if (s.lease) txn.ops.push_back(store::Op::revoke(s.lease));
  }
}

Registry::Done Registry::starting_lock_delays(std::shared_ptr<Released> released, Done done) {
  return [this, released = std::move(released), done = std::move(done)](const WriteResult& r) {
    if (r.ok && r.applied)
      for (const auto& [delay, keys] : *released) start_lock_delay(keys, delay);
    if (done) done(r);
  };
}

void Registry::invalidate_sessions_of_check(const std::string& check_id) {
  std::vector<std::string> ids;
  for (const auto& [id, s] : state_.sessions()) {
    bool uses = std::find(s.node_checks.begin(), s.node_checks.end(), check_id) != s.node_checks.end() ||
                std::find(s.service_checks.begin(), s.service_checks.end(), check_id) != s.service_checks.end();
    if (uses) ids.push_back(id);
  }
  for (const auto& id : ids) {
    spdlog::info("session {} invalidated: check {} is critical or gone", id, check_id);
    session_destroy(id, [id](const WriteResult& r) {
      if (!r.ok) spdlog::error("invalidating session {} failed: {}", id, r.error);
    });
  }
}

// --- services and checks ---

void Registry::register_service(Service service, std::vector<Check> checks, bool replace_existing_checks,
                                Done done) {
  for (auto& c : checks) {
    c.service_id = service.id;
    c.service_name = service.name;
    c.service_tags = service.tags;
  }
  // Settled: a check being added to this service (register_check, maintenance) is seen, so
  // replace_existing_checks replaces it rather than letting it survive the registration.
  auto released = std::make_shared<Released>();
  run([this, service = std::move(service), checks = std::move(checks), replace_existing_checks,
       released](WriteResult&) -> std::optional<store::Txn> {
        released->clear();
        store::Txn txn;
        std::set<std::string> ending;  // checks this registration deletes or makes critical
        const Service* old = state_.service(service.id);
        txn.compares.push_back({svc_key(service.id), old ? old->modify_index : 0});
        // An identical registration (clients re-register periodically) writes nothing, so it
        // neither moves indexes nor wakes watchers.
        if (!old || !(*old == service)) txn.ops.push_back(store::Op::put(svc_key(service.id), encode(service)));
        std::set<std::string> listed;
        for (auto c : checks) {
          listed.insert(c.id);
          const Check* prev = state_.check(c.id);
          txn.compares.push_back({chk_key(c.id), prev ? prev->modify_index : 0});
          if (prev && prev->kind == c.kind && prev->definition == c.definition) {
            // Same check registered again: keep what it has learned.
            c.status = prev->status;
            c.output = prev->output;
            if (prev->name == c.name && prev->notes == c.notes && prev->service_id == c.service_id &&
                prev->service_name == c.service_name && prev->service_tags == c.service_tags)
              continue;
          }
          if (c.status == status::critical && (!prev || prev->status != status::critical)) ending.insert(c.id);
          txn.ops.push_back(store::Op::put(chk_key(c.id), encode(c)));
        }
        if (old) {
          for (const Check* c : state_.checks_of_service(service.id)) {
            if (listed.count(c->id)) continue;
            txn.compares.push_back({chk_key(c->id), c->modify_index});
            if (replace_existing_checks && c->kind != status::maintenance) {
              txn.ops.push_back(store::Op::del(chk_key(c->id)));
              ending.insert(c->id);
            } else if (c->service_name != service.name || c->service_tags != service.tags) {
              Check n = *c;
              n.service_name = service.name;
              n.service_tags = service.tags;
              txn.ops.push_back(store::Op::put(chk_key(c->id), encode(n)));
            }
          }
        }
        end_sessions_of_checks(ending, txn, *released);
        return txn;  // no ops: nothing to write, decided from what the compares name
      },
      starting_lock_delays(released, std::move(done)), false, true);
}

void Registry::deregister_service(const std::string& id, Done done) {
  // Settled: built once no write naming this service is committing, so a check being added to
  // it (maintenance, register_check) is seen and deleted with it, not left behind.
  auto released = std::make_shared<Released>();
  run([this, id, released](WriteResult&) -> std::optional<store::Txn> {
        released->clear();
        const Service* s = state_.service(id);
        store::Txn txn;
        txn.compares.push_back({svc_key(id), s ? s->modify_index : 0});
        if (!s) return txn;
        txn.ops.push_back(store::Op::del(svc_key(id)));
        std::set<std::string> gone;
        for (const Check* c : state_.checks_of_service(id)) {
          txn.compares.push_back({chk_key(c->id), c->modify_index});
          txn.ops.push_back(store::Op::del(chk_key(c->id)));
          gone.insert(c->id);
        }
        end_sessions_of_checks(gone, txn, *released);
        return txn;
      },
      starting_lock_delays(released, std::move(done)), false, true);
}

void Registry::set_maintenance(const std::string& service_id, bool enable, const std::string& reason, Done done) {
  if (!service_id.empty() && !state_.service(service_id))
    throw ApiError(404, "unknown service ID \"" + service_id + "\"", "service_id");
  run([this, service_id, enable, reason](WriteResult&) -> std::optional<store::Txn> {
        auto id = maintenance_check_id(service_id);
        const Check* prev = state_.check(id);
        store::Txn txn;
        txn.compares.push_back({chk_key(id), prev ? prev->modify_index : 0});
        if (!enable) {
          if (!prev) return txn;
          txn.ops.push_back(store::Op::del(chk_key(id)));
          return txn;
        }
        Check c;
        c.id = id;
        c.kind = status::maintenance;
        c.status = status::critical;
        c.notes = reason.empty() ? (service_id.empty()
                                        ? "Maintenance mode is enabled for this node, but no reason was provided."
                                        : "Maintenance mode is enabled for this service, but no reason was provided.")
                                 : reason;
        if (service_id.empty()) {
          c.name = "Node Maintenance Mode";
        } else {
          const Service* s = state_.service(service_id);
          if (!s) {
            txn.compares.push_back({svc_key(service_id), 0});
            return txn;
          }
          c.name = "Service Maintenance Mode";
          c.service_id = s->id;
          c.service_name = s->name;
          c.service_tags = s->tags;
          txn.compares.push_back({svc_key(s->id), s->modify_index});
        }
        if (prev && prev->notes == c.notes) return txn;
        txn.ops.push_back(store::Op::put(chk_key(id), encode(c)));
        return txn;
      },
      std::move(done));
}

void Registry::register_check(Check check, Done done) {
  auto released = std::make_shared<Released>();
  if (!check.service_id.empty()) {
    const Service* s = state_.service(check.service_id);
    if (!s) throw bad_request("ServiceID \"" + check.service_id + "\" does not exist", "ServiceID");
    check.service_name = s->name;
    check.service_tags = s->tags;
  }
  run([this, check = std::move(check), released](WriteResult&) mutable -> std::optional<store::Txn> {
        released->clear();
        store::Txn txn;
        const Check* prev = state_.check(check.id);
        txn.compares.push_back({chk_key(check.id), prev ? prev->modify_index : 0});
        Check c = check;
        if (prev && prev->kind == c.kind && prev->definition == c.definition) {
          c.status = prev->status;
          c.output = prev->output;
        }
        if (!c.service_id.empty()) {
          const Service* s = state_.service(c.service_id);
          txn.compares.push_back({svc_key(c.service_id), s ? s->modify_index : 0});
          if (!s) return txn;  // deregistered meanwhile
        }
        if (prev && encode(*prev) == encode(c)) return txn;  // identical: nothing to write
        txn.ops.push_back(store::Op::put(chk_key(c.id), encode(c)));
        // Registered critical (or re-registered with a new definition, which starts critical).
        if (c.status == status::critical && (!prev || prev->status != status::critical))
          end_sessions_of_checks({c.id}, txn, *released);
        return txn;
      },
      starting_lock_delays(released, std::move(done)));
}

void Registry::deregister_check(const std::string& id, Done done) {
  auto released = std::make_shared<Released>();
  run([this, id, released](WriteResult&) -> std::optional<store::Txn> {
        released->clear();
        const Check* c = state_.check(id);
        store::Txn txn;
        txn.compares.push_back({chk_key(id), c ? c->modify_index : 0});
        if (!c) return txn;
        txn.ops.push_back(store::Op::del(chk_key(id)));
        end_sessions_of_checks({id}, txn, *released);
        return txn;
      },
      starting_lock_delays(released, std::move(done)));
}

void Registry::update_check(const std::string& id, const std::string& new_status, const std::string& output,
                            Done done) {
  // The result is about the check as it was defined when asked: if it is registered again
  // with another definition meanwhile (a new URL, port or kind), the old probe's verdict is
  // dropped, not written onto the new check.
  const Check* asked = state_.check(id);
  std::optional<std::pair<std::string, CheckDefinition>> defined;
  if (asked) defined.emplace(asked->kind, asked->definition);
  auto released = std::make_shared<Released>();
  run([this, id, new_status, output, defined = std::move(defined), released](WriteResult& result) -> std::optional<store::Txn> {
        released->clear();
        const Check* c = state_.check(id);
        store::Txn txn;
        txn.compares.push_back({chk_key(id), c ? c->modify_index : 0});
        if (!c || (defined && (c->kind != defined->first || !(c->definition == defined->second)))) {
          result.applied = false;
          return txn;
        }
        if (c->status == new_status && c->output == output) return txn;
        auto now = Clock::now();
        if (c->status == new_status && (c->kind == "http" || c->kind == "tcp")) {
          // Output-only change of a check the agent runs: at most once per output_interval.
          auto it = output_written_.find(id);
          if (it != output_written_.end() && now - it->second < output_interval) return txn;
        }
        output_written_[id] = now;
        Check n = *c;
        n.status = new_status;
        n.output = output;
        txn.ops.push_back(store::Op::put(chk_key(id), encode(n)));
        if (n.status == status::critical) end_sessions_of_checks({id}, txn, *released);
        return txn;
      },
      starting_lock_delays(released, std::move(done)));
}

// --- KV ---

bool Registry::lock_delayed(const std::string& key) {
  auto it = lock_delay_.find(key);
  if (it == lock_delay_.end()) return false;
  if (Clock::now() < it->second) return true;
  lock_delay_.erase(it);
  return false;
}

void Registry::kv_put(KvPut put, Done done) {
  if (put.value.size() > kMaxKvValue)
    throw ApiError(413, "value is " + std::to_string(put.value.size()) + " bytes; the limit is 512 KiB");
  for (const auto& sid : {put.acquire, put.release}) {
    if (!sid.empty() && !state_.session(sid))
      throw bad_request("invalid session \"" + sid + "\"", put.acquire.empty() ? "release" : "acquire");
  }
  bool user_compare = put.cas.has_value();
  run([this, put = std::move(put)](WriteResult& result) -> std::optional<store::Txn> {
        const KvEntry* cur = state_.kv_entry(put.key);
        uint64_t cur_index = cur ? cur->modify_index : 0;
        store::Txn txn;
        txn.compares.push_back({kv_key(put.key), cur_index});
        if (put.cas && *put.cas != cur_index) {
          result.applied = false;
          return txn;
        }
        KvEntry n;
        n.value = put.value;
        n.flags = put.flags;
        n.session = cur ? cur->session : "";
        n.lock_index = cur ? cur->lock_index : 0;
        if (!put.acquire.empty()) {
          const Session* s = state_.session(put.acquire);
          bool held_by_other = cur && !cur->session.empty() && cur->session != put.acquire &&
                               state_.session(cur->session);  // a missing session holds nothing
          if (!s || held_by_other || lock_delayed(put.key)) {
            result.applied = false;
            return txn;
          }
          if (!cur || cur->session != put.acquire) ++n.lock_index;
          n.session = put.acquire;
          txn.compares.push_back({ses_key(s->id), s->modify_index});
        } else if (!put.release.empty()) {
          if (!cur || cur->session != put.release) {
            result.applied = false;
            return txn;
          }
          n.session.clear();
        }
        txn.ops.push_back(store::Op::put(kv_key(put.key), encode(n)));
        return txn;
      },
      std::move(done), user_compare);
}

void Registry::kv_delete(const std::string& key, bool recurse, std::optional<uint64_t> cas, Done done) {
  run([this, key, recurse, cas](WriteResult& result) -> std::optional<store::Txn> {
        store::Txn txn;
        if (recurse) {
          txn.ops.push_back(store::Op::del_prefix(kv_key(key)));
          return txn;
        }
        const KvEntry* cur = state_.kv_entry(key);
        txn.compares.push_back({kv_key(key), cur ? cur->modify_index : 0});
        if (!cur) return txn;  // nothing to delete: true, with or without cas (as Consul)
        if (cas && cur->modify_index != *cas) {
          result.applied = false;
          return txn;
        }
        txn.ops.push_back(store::Op::del(kv_key(key)));
        return txn;
      },
      std::move(done), cas.has_value());
}

// --- sessions ---

void Registry::session_create(Session session, Done done) {
  for (const auto& id : session.node_checks) {
    // (The older "Checks" field, folded in here, may also name service checks.)
    const Check* c = state_.check(id);
    if (!c) throw bad_request("check \"" + id + "\" does not exist", "NodeChecks");
    if (c->status == status::critical) throw bad_request("check \"" + id + "\" is in critical state", "NodeChecks");
  }
  for (const auto& id : session.service_checks) {
    const Check* c = state_.check(id);
    if (!c) throw bad_request("check \"" + id + "\" does not exist", "ServiceChecks");
    if (c->status == status::critical) throw bad_request("check \"" + id + "\" is in critical state", "ServiceChecks");
  }
  session.id = make_uuid();
  session.node = identity_.node_name;
  if (session.ttl.count() > 0) session.lease = new_lease_id();
  run([this, session](WriteResult& result) -> std::optional<store::Txn> {
        store::Txn txn;
        // A check that went critical (or away) while this was queued: the session would not
        // have been created, and the invalidation for it has already run.
        for (const auto* list : {&session.node_checks, &session.service_checks}) {
          for (const auto& id : *list) {
            const Check* c = state_.check(id);
            if (!c || c->status == status::critical) {
              result.ok = false;
              result.error = "check \"" + id + "\" " + (c ? "is in critical state" : "does not exist");
              return std::nullopt;
            }
            txn.compares.push_back({chk_key(id), c->modify_index});
          }
        }
        txn.compares.push_back({ses_key(session.id), 0});
        if (session.lease) txn.ops.push_back(store::Op::grant(session.lease, session.ttl));
        txn.ops.push_back(store::Op::put(ses_key(session.id), encode(session), session.lease));
        result.id = session.id;
        return txn;
      },
      std::move(done));
}

void Registry::session_destroy(const std::string& id, Done done) {
  auto released = std::make_shared<std::vector<std::string>>();
  auto delay = std::make_shared<Duration>(Duration::zero());
  run([this, id, released, delay](WriteResult&) -> std::optional<store::Txn> {
        released->clear();
        const Session* s = state_.session(id);
        store::Txn txn;
        txn.compares.push_back({ses_key(id), s ? s->modify_index : 0});
        if (!s) return txn;
        // Its locks are released in the same transaction: nobody sees a lock of a dead session.
        for (const auto& [key, e] : state_.kv()) {
          if (e.session != id) continue;
          add_release(e, s->behavior, txn);
          released->push_back(key);
        }
        *delay = s->lock_delay;
        txn.ops.push_back(store::Op::del(ses_key(id)));
        if (s->lease) txn.ops.push_back(store::Op::revoke(s->lease));
        return txn;
      },
      [this, released, delay, done = std::move(done)](const WriteResult& r) {
        if (r.ok && r.applied) start_lock_delay(*released, *delay);
        if (done) done(r);
      });
}

bool Registry::session_renew(const std::string& id) {
  const Session* s = state_.session(id);
  if (!s) return false;
  if (!s->lease) return true;
  return store_.keepalive(s->lease);
}

}  // namespace flotilla::registry
