#include "registry/store/sqlite_store.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <atomic>
#include <map>
#include <optional>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "common/event_loop.h"
#include "common/metrics.h"
#include "common/thread_name.h"

namespace flotilla::store {

namespace {
using Clock = std::chrono::steady_clock;
}  // namespace

// Named, not anonymous: SqliteStore::Impl holds Statements, and a class with linkage must not
// have fields of internal-linkage types (GCC's -Wsubobject-linkage in the unity sanitizer build).
namespace sqlite_detail {

class Statement {
 public:
  Statement(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      throw std::runtime_error(std::string("sqlite prepare failed: ") + sqlite3_errmsg(db) + " in " + sql);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  sqlite3_stmt* get() { return stmt_; }
  Statement& bind(int i, const std::string& s) {
    sqlite3_bind_blob(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
    return *this;
  }
  Statement& bind_text(int i, const std::string& s) {
    sqlite3_bind_text(stmt_, i, s.data(), static_cast<int>(s.size()), SQLITE_STATIC);
    return *this;
  }
  Statement& bind(int i, int64_t v) {
    sqlite3_bind_int64(stmt_, i, v);
    return *this;
  }
  int step() { return sqlite3_step(stmt_); }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  int64_t col_int(int i) { return sqlite3_column_int64(stmt_, i); }
  std::string col_blob(int i) {
    auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, i));
    int n = sqlite3_column_bytes(stmt_, i);
    return p ? std::string(p, static_cast<size_t>(n)) : std::string();
  }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace sqlite_detail

using sqlite_detail::Statement;

namespace {

// Keys are stored as TEXT so that range scans by prefix use the primary key's order (BINARY).
std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto c = static_cast<unsigned char>(end.back());
    if (c < 0xFF) {
      end.back() = static_cast<char>(c + 1);
      return end;
    }
    end.pop_back();
  }
  return {};  // no upper bound
}

}  // namespace

struct SqliteStore::Impl {
  struct LeaseState {
    Duration ttl;
    Clock::time_point deadline;
  };
  struct Pending {
    Txn txn;
    Done done;
  };
  struct Outcome {
    TxnResult result;
    std::vector<Event> events;
    Done done;
  };

  Impl(SqliteOptions o, EventLoop& l) : options(std::move(o)), loop(l) {
    int rc = sqlite3_open_v2(options.path.c_str(), &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) {
      std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
      sqlite3_close(db);
      db = nullptr;
      throw std::runtime_error("cannot open store " + options.path + ": " + msg);
    }
    exec("PRAGMA journal_mode=WAL");
    exec("PRAGMA synchronous=FULL");  // a commit is durable when it returns
    exec("PRAGMA busy_timeout=5000");
    exec("PRAGMA wal_autocheckpoint=4000");
    exec(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,"
        " mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID");
    exec("CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease != 0");
    exec("CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl_ns INTEGER NOT NULL)");
    exec("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)");
    exec("INSERT OR IGNORE INTO meta(name, value) VALUES('revision', 0)");
    get_rev = std::make_unique<Statement>(db, "SELECT mod_rev, create_rev, version FROM kv WHERE key = ?1");
    upsert = std::make_unique<Statement>(
        db, "INSERT INTO kv(key, value, create_rev, mod_rev, version, lease) VALUES(?1, ?2, ?3, ?4, ?5, ?6)"
            " ON CONFLICT(key) DO UPDATE SET value=excluded.value, mod_rev=excluded.mod_rev,"
            " version=excluded.version, lease=excluded.lease");
    del = std::make_unique<Statement>(db, "DELETE FROM kv WHERE key = ?1");
    range = std::make_unique<Statement>(db, "SELECT key FROM kv WHERE key >= ?1 AND key < ?2");
    range_open = std::make_unique<Statement>(db, "SELECT key FROM kv WHERE key >= ?1");
    by_lease = std::make_unique<Statement>(db, "SELECT key FROM kv WHERE lease = ?1");
    lease_put = std::make_unique<Statement>(db, "INSERT OR REPLACE INTO leases(id, ttl_ns) VALUES(?1, ?2)");
    lease_del = std::make_unique<Statement>(db, "DELETE FROM leases WHERE id = ?1");
    set_rev = std::make_unique<Statement>(db, "UPDATE meta SET value = ?1 WHERE name = 'revision'");
    begin = std::make_unique<Statement>(db, "BEGIN IMMEDIATE");
    commit_stmt = std::make_unique<Statement>(db, "COMMIT");
    rollback = std::make_unique<Statement>(db, "ROLLBACK");
    if (options.metrics) {
      write_seconds = &options.metrics->histogram("flotilla_store_commit_seconds",
                                                  "Time to make one group of store writes durable (one fsync).",
                                                  metrics::latency_buckets());
      batch_size = &options.metrics->histogram("flotilla_store_commit_batch_size",
                                               "Transactions made durable by one group commit.",
                                               {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024});
      txn_counter = &options.metrics->counter("flotilla_store_transactions_total",
                                              "Store transactions committed (including failed compares).");
    }
  }

  ~Impl() {
    get_rev.reset(); upsert.reset(); del.reset(); range.reset(); range_open.reset(); by_lease.reset();
    lease_put.reset(); lease_del.reset(); set_rev.reset(); begin.reset(); commit_stmt.reset(); rollback.reset();
    if (db) sqlite3_close(db);
  }

  void exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      throw std::runtime_error("store " + options.path + ": " + msg);
    }
  }

  void check(int rc, const char* what) {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW)
      throw std::runtime_error(std::string(what) + ": " + sqlite3_errmsg(db));
  }

  // --- inside a write transaction (store thread) ---

  struct Current {
    bool exists = false;
    uint64_t mod_rev = 0, create_rev = 0, version = 0;
  };

  Current lookup(const std::string& key) {
    Current c;
    get_rev->bind_text(1, key);
    if (get_rev->step() == SQLITE_ROW) {
      c.exists = true;
      c.mod_rev = static_cast<uint64_t>(get_rev->col_int(0));
      c.create_rev = static_cast<uint64_t>(get_rev->col_int(1));
      c.version = static_cast<uint64_t>(get_rev->col_int(2));
    }
    get_rev->reset();
    return c;
  }

  void delete_key(const std::string& key, uint64_t rev, std::vector<Event>& events) {
    del->bind_text(1, key);
    check(del->step(), "delete");
    bool changed = sqlite3_changes(db) > 0;
    del->reset();
    if (changed) events.push_back(Event{Event::Type::del, KeyValue{key, {}, 0, rev, 0, 0}});
  }

  std::vector<std::string> keys_of(Statement& st) {
    std::vector<std::string> keys;
    while (st.step() == SQLITE_ROW) keys.push_back(st.col_blob(0));
    st.reset();
    return keys;
  }

  // Applies one transaction at revision `rev`; returns whether its compares held.
  bool apply(const Txn& txn, uint64_t rev, std::vector<Event>& events) {
    for (const auto& c : txn.compares) {
      auto cur = lookup(c.key);
      if (c.mod_revision == 0 ? cur.exists : (!cur.exists || cur.mod_rev != c.mod_revision)) return false;
    }
    for (const auto& op : txn.ops) {
      switch (op.type) {
        case Op::Type::put: {
          auto cur = lookup(op.key);
          KeyValue kv{op.key, op.value, cur.exists ? cur.create_rev : rev, rev, cur.version + 1, op.lease};
          upsert->bind_text(1, kv.key).bind(2, kv.value).bind(3, static_cast<int64_t>(kv.create_revision));
          upsert->bind(4, static_cast<int64_t>(rev)).bind(5, static_cast<int64_t>(kv.version)).bind(6, op.lease);
          check(upsert->step(), "put");
          upsert->reset();
          events.push_back(Event{Event::Type::put, std::move(kv)});
          break;
        }
        case Op::Type::del:
          delete_key(op.key, rev, events);
          break;
        case Op::Type::del_prefix: {
          auto end = prefix_end(op.key);
          std::vector<std::string> keys;
          if (end.empty()) {
            range_open->bind_text(1, op.key);
            keys = keys_of(*range_open);
          } else {
            range->bind_text(1, op.key).bind_text(2, end);
            keys = keys_of(*range);
          }
          for (const auto& k : keys) delete_key(k, rev, events);
          break;
        }
        case Op::Type::lease_grant: {
          lease_put->bind(1, op.lease).bind(2, static_cast<int64_t>(op.ttl.count()));
          check(lease_put->step(), "lease grant");
          lease_put->reset();
          lease_changes.emplace_back(op.lease, LeaseState{op.ttl, {}});  // takes effect once durable
          break;
        }
        case Op::Type::lease_revoke:
          revoke(op.lease, rev, events);
          break;
      }
    }
    return true;
  }

  void revoke(int64_t lease, uint64_t rev, std::vector<Event>& events) {
    by_lease->bind(1, lease);
    auto keys = keys_of(*by_lease);
    for (const auto& k : keys) delete_key(k, rev, events);
    lease_del->bind(1, lease);
    check(lease_del->step(), "lease revoke");
    lease_del->reset();
    lease_changes.emplace_back(lease, std::nullopt);
  }

  void run() {
    std::vector<Pending> batch;
    while (true) {
      std::vector<std::pair<int64_t, LeaseState>> expired;
      {
        std::unique_lock lock(mu);
        while (true) {
          // Expiry is checked on every pass, so a steady stream of writes cannot starve it. An
          // expired lease leaves the map at once: a keepalive from now on fails, consistently.
          auto next = Clock::time_point::max();
          auto now = Clock::now();
          for (auto it = leases.begin(); it != leases.end();) {
            if (it->second.deadline <= now) {
              expired.emplace_back(*it);
              it = leases.erase(it);
            } else {
              next = std::min(next, it->second.deadline);
              ++it;
            }
          }
          if (!queue.empty() || !expired.empty() || stopping) break;
          if (next == Clock::time_point::max()) cv.wait(lock);
          else cv.wait_until(lock, next);
        }
        if (queue.empty() && expired.empty() && stopping) return;
        while (!queue.empty() && batch.size() < options.max_batch) {
          batch.push_back(std::move(queue.front()));
          queue.pop_front();
        }
      }
      write_batch(batch, expired);
      batch.clear();
    }
  }

  void write_batch(std::vector<Pending>& batch, const std::vector<std::pair<int64_t, LeaseState>>& expired) {
    lease_changes.clear();
    auto started = Clock::now();
    std::vector<Outcome> outcomes;
    outcomes.reserve(batch.size() + expired.size());
    uint64_t rev = revision;
    std::string failure;
    try {
      check(begin->step(), "begin");
      begin->reset();
      for (auto& p : batch) {
        Outcome o;
        o.done = std::move(p.done);
        std::vector<Event> events;
        if (apply(p.txn, rev + 1, events)) {
          o.result.succeeded = true;
          if (!events.empty()) ++rev;  // only a change makes a revision
        }
        o.result.revision = rev;
        o.events = std::move(events);
        outcomes.push_back(std::move(o));
      }
      for (const auto& [id, state] : expired) {
        Outcome o;
        revoke(id, rev + 1, o.events);
        if (!o.events.empty()) ++rev;
        o.result.succeeded = true;
        o.result.revision = rev;
        outcomes.push_back(std::move(o));
      }
      if (rev != revision) {
        set_rev->bind(1, static_cast<int64_t>(rev));
        check(set_rev->step(), "revision");
        set_rev->reset();
      }
      check(commit_stmt->step(), "commit");
      commit_stmt->reset();
    } catch (const std::exception& e) {
      failure = e.what();
      spdlog::error("store write failed, {} transactions not applied: {}", batch.size(), failure);
      rollback->step();
      rollback->reset();
      sqlite3_reset(begin->get());
      sqlite3_reset(commit_stmt->get());
    }
    if (!failure.empty()) {
      // Nothing became durable: fail every transaction of the group, deliver no events.
      for (auto& o : outcomes) {
        o.events.clear();
        o.result = TxnResult{false, revision.load(), failure};
      }
      for (auto& p : batch)
        if (p.done) outcomes.push_back(Outcome{TxnResult{false, revision.load(), failure}, {}, std::move(p.done)});
      // The expired leases were taken out of the map; they are still in the database, so give
      // them another moment rather than forget them.
      std::lock_guard lock(mu);
      for (const auto& [id, state] : expired) leases[id] = LeaseState{state.ttl, Clock::now() + std::chrono::seconds(1)};
    } else {
      revision = rev;
      std::lock_guard lock(mu);
      auto now = Clock::now();
      for (auto& [id, state] : lease_changes) {
        if (state) leases[id] = LeaseState{state->ttl, now + state->ttl};
        else leases.erase(id);
      }
    }
    if (write_seconds) {
      write_seconds->observe(std::chrono::duration<double>(Clock::now() - started).count());
      batch_size->observe(static_cast<double>(batch.size()));
      txn_counter->inc(batch.size());
    }
    // One post per group keeps events and completions in revision order on the loop.
    loop.post([this, outcomes = std::make_shared<std::vector<Outcome>>(std::move(outcomes))]() mutable {
      // Each outcome on its own: one that throws (a bug) must not lose the others' events or
      // answers (the registry counts on every write being answered).
      for (auto& o : *outcomes) {
        try {
          if (!o.events.empty() && sink) sink(o.result.revision, std::move(o.events));
        } catch (const std::exception& e) {
          spdlog::error("store: applying revision {} failed: {}", o.result.revision, e.what());
        }
        try {
          if (o.done) o.done(o.result);
        } catch (const std::exception& e) {
          spdlog::error("store: a write's completion failed: {}", e.what());
        }
      }
    });
  }

  SqliteOptions options;
  EventLoop& loop;
  sqlite3* db = nullptr;
  std::unique_ptr<Statement> get_rev, upsert, del, range, range_open, by_lease, lease_put, lease_del, set_rev, begin,
      commit_stmt, rollback;
  std::atomic<uint64_t> revision{0};  // written by the store thread
  std::vector<std::pair<int64_t, std::optional<LeaseState>>> lease_changes;  // of the batch being written
  EventSink sink;
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Pending> queue;
  std::map<int64_t, LeaseState> leases;
  bool stopping = false;
  std::thread thread;
  metrics::Histogram* write_seconds = nullptr;
  metrics::Histogram* batch_size = nullptr;
  metrics::Counter* txn_counter = nullptr;
};

SqliteStore::SqliteStore(SqliteOptions options, EventLoop& loop)
    : impl_(std::make_unique<Impl>(std::move(options), loop)) {}

SqliteStore::~SqliteStore() { stop(); }

Snapshot SqliteStore::load() {
  Snapshot snap;
  {
    Statement st(impl_->db, "SELECT value FROM meta WHERE name = 'revision'");
    if (st.step() == SQLITE_ROW) snap.revision = static_cast<uint64_t>(st.col_int(0));
  }
  {
    Statement st(impl_->db, "SELECT key, value, create_rev, mod_rev, version, lease FROM kv ORDER BY key");
    while (st.step() == SQLITE_ROW) {
      snap.kvs.push_back(KeyValue{st.col_blob(0), st.col_blob(1), static_cast<uint64_t>(st.col_int(2)),
                                  static_cast<uint64_t>(st.col_int(3)), static_cast<uint64_t>(st.col_int(4)),
                                  st.col_int(5)});
    }
  }
  {
    // Lease timers restart from the restart: a session is never expired by the time the agent
    // was down.
    Statement st(impl_->db, "SELECT id, ttl_ns FROM leases");
    auto now = Clock::now();
    std::lock_guard lock(impl_->mu);
    while (st.step() == SQLITE_ROW) {
      Duration ttl(st.col_int(1));
      impl_->leases[st.col_int(0)] = Impl::LeaseState{ttl, now + ttl};
    }
  }
  impl_->revision = snap.revision;
  return snap;
}

void SqliteStore::start(EventSink sink) {
  impl_->sink = std::move(sink);
  impl_->thread = std::thread([this] {
    set_thread_name("sqlite-store");
    impl_->run();
  });
}

void SqliteStore::commit(Txn txn, Done done) {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) {
      impl_->loop.post([done = std::move(done), rev = impl_->revision.load()] {
        if (done) done(TxnResult{false, rev, "store is shutting down"});
      });
      return;
    }
    impl_->queue.push_back(Impl::Pending{std::move(txn), std::move(done)});
  }
  impl_->cv.notify_one();
}

bool SqliteStore::keepalive(int64_t lease) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->leases.find(lease);
  if (it == impl_->leases.end()) return false;
  it->second.deadline = Clock::now() + it->second.ttl;
  return true;
}

void SqliteStore::stop() {
  {
    std::lock_guard lock(impl_->mu);
    if (impl_->stopping) return;
    impl_->stopping = true;
  }
  impl_->cv.notify_one();
  if (impl_->thread.joinable()) impl_->thread.join();
}

std::string SqliteStore::describe() const { return "sqlite:" + impl_->options.path; }

}  // namespace flotilla::store
