// Instance logs: each instance's stdout and stderr arrive through pipes and are written, one line
// per record with its time, to <dir>/<service>/<instance>.log, rotated by size (the agent owns
// rotation: <instance>.log.1, .2 … up to `keep` old files). `flotilla logs` reads them back merged
// across the instances of a service, in time order, as docker-compose does.
//
// Record format (one line, UTF-8 passed through as bytes):
//   2026-12-02T08:32:27.123456Z out|err <the line, without its newline>
// A line longer than 16 KiB is cut into records of 16 KiB. A partial last line is written when
// its pipe closes (the instance exited).
// Asio stays out of this header.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace flotilla {
class EventLoop;
}

namespace flotilla::supervisor {

struct LogLimits {
  // Rotate before a record would take the file past this (0: never), so a file exceeds it only
  // by holding a single record larger than it.
  uint64_t max_bytes = 10 * 1024 * 1024;
  int keep = 3;  // rotated files kept (0: the full file is deleted)
};

// Reads one instance's two pipes on the loop and writes its log file. Takes ownership of the fds
// (made non-blocking): closes each at its end of file, or on destruction. -1 stands for a stream
// the instance does not have; the two fds must differ. Create, use and destroy it on the loop's
// thread. The pipes are always drained, even when the disk fails (the lines are then dropped and
// the failure logged once), so a service never blocks on its output.
class InstanceLog {
 public:
  // on_line runs on the loop after each batch of records is written (for followers); may be
  // empty; it may destroy this object. echo, when set, is also given each record's text as it is
  // cut (a foreground `flotilla up` prints them). Throws std::invalid_argument for a service or
  // instance name that is not a plain file name.
  InstanceLog(EventLoop& loop, std::string dir, std::string service, std::string instance, int stdout_fd,
              int stderr_fd, LogLimits limits, std::function<void()> on_line,
              std::function<void(std::string_view)> echo = {});
  // Before EOF (agent shutdown): writes what the pipes already hold (up to 1 MiB each) and any
  // partial last line, then stops reading. on_line is not called from here.
  ~InstanceLog();
  // True once both pipes reached end of file and everything is written.
  bool finished() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

struct LogRecord {
  int64_t time_us = 0;   // microseconds since the Unix epoch (UTC)
  std::string instance;  // the file it came from
  std::string stream;    // "out" or "err"
  std::string text;
};

struct LogQuery {
  std::string service;
  int64_t since_us = 0;  // records at or after this time (0: all)
  size_t tail = 0;       // only the last N records of the answer (0: all)
  // Follow cursor: records strictly after this position (from a previous answer); empty: none.
  std::string after;
  // Non-empty: only these instances' files (the others are left out, as if absent).
  std::set<std::string> instances;
};

struct LogAnswer {
  std::vector<LogRecord> records;  // time order; ties by instance name, then file order
  // Pass as `after` (with the same service) to get exactly the records written since this
  // answer was read: none repeated, none lost (unless rotation deleted them meanwhile), across
  // rotations and instances. It covers every record read, also those left out by `since` or
  // `tail`. Opaque; today "instance=time_us:n;…" (n: records of the instance with that time
  // already seen; names %XX-escaped). Empty when the service has no records yet.
  std::string cursor;
};

// Merges every file (rotated ones included) of the service's instances. Blocking file reads:
// callers run it off the request path or accept the cost (logs are read rarely). Memory: the
// answer, or about `tail` records per instance when tail is set. Malformed lines are skipped.
// A missing service directory answers empty. Throws std::runtime_error for an unreadable
// directory, std::invalid_argument for a malformed `after` or a service name that is not a plain
// file name (no '/', not "." or "..") — both are the caller's 400.
LogAnswer read_logs(const std::string& dir, const LogQuery& query);
// Several services at once (`flotilla logs` without a service): each query as above, with the
// same `after` (one cursor for all: instance names never repeat across services), merged in time
// order (ties by instance name), then only the last `tail` (0: all).
LogAnswer read_logs(const std::string& dir, const std::vector<LogQuery>& queries, size_t tail);

// Deletes an instance's files: <instance>.log and every <instance>.log.N (used when an instance is
// gone for good, after `keep` instances of history per service). Ignores missing files. Throws
// std::invalid_argument for names that are not plain file names.
void remove_instance_logs(const std::string& dir, const std::string& service, const std::string& instance);

}  // namespace flotilla::supervisor
