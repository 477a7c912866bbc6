// The single-machine store: SQLite in WAL mode with synchronous=FULL, written by one store thread
// that commits queued transactions in groups (one fsync for many writers).
#pragma once

#include <memory>
#include <string>

#include "registry/store/store.h"

namespace flotilla {
class EventLoop;
namespace metrics {
class Registry;
}
}  // namespace flotilla

namespace flotilla::store {

struct SqliteOptions {
  std::string path;              // the database file
  size_t max_batch = 1024;       // transactions per group commit
  metrics::Registry* metrics = nullptr;
};

class SqliteStore : public Store {
 public:
  // Opens (creating when missing) the database; throws std::runtime_error naming the file.
  SqliteStore(SqliteOptions options, EventLoop& deliver_on);
  ~SqliteStore() override;

  Snapshot load() override;
  void start(EventSink sink) override;
  void commit(Txn txn, Done done) override;
  bool keepalive(int64_t lease) override;
  void stop() override;
  std::string describe() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace flotilla::store
