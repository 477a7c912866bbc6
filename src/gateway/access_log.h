// The gateway's optional access log: one JSON object per line, written off the request path.
// Workers append formatted lines to a buffer under a short lock; a writer thread flushes it every
// 100 ms (or at 1 MiB). When the writer falls 16 MiB behind, lines are dropped and counted rather
// than letting memory grow or requests wait; so are lines a write fails to store (a full disk).
// reopen() (SIGUSR1, as nginx's `-s reopen`) makes the writer open the path again: after
// logrotate moved the file, lines go to a new one.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace flotilla::metrics {
class Counter;
}

namespace flotilla::gateway {

struct AccessRecord {
  std::string_view client{};
  std::string_view method{};
  std::string_view host{};
  std::string_view path{};  // as received, query included
  int status = 0;
  uint64_t bytes = 0;     // response body bytes sent
  int64_t duration_ns = 0;
  std::string_view upstream{};  // "IP:PORT" of the last try, or empty
  int tries = 0;
  std::string_view service{};
  std::string_view request_id{};  // the X-Request-Id sent upstream; empty when nothing was forwarded
  // Why the answer's body was cut short ("service closed", "service stalled", "malformed body",
  // "gateway stopped"); empty when it was whole (or the client went away). Written only when set.
  std::string_view cut{};
};

// Appends s as a JSON string (quotes included); control bytes and bytes >= 0x7f are escaped as
// \u00XX, so the output is valid JSON whatever bytes a client sent. Shared with the gateway's own
// JSON error answers.
void append_json_string(std::string& out, std::string_view s);

class AccessLog {
 public:
  // target: "stdout", "stderr" or a file path (appended to). Throws std::runtime_error when the
  // file cannot be opened.
  // lost: also counts the lines lost (for /metrics), when given.
  explicit AccessLog(const std::string& target, metrics::Counter* lost = nullptr);
  ~AccessLog();
  void write(const AccessRecord& r);
  // Lines lost: dropped while the writer was 16 MiB behind, or not stored by a failed write.
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  // Thread-safe (not async-signal-safe: call it from a signal handler's loop callback). The
  // writer thread opens the path again before its next write; stdout and stderr stay as they are.
  void reopen();

 private:
  void run();
  void reopen_now();
  void count_lost(uint64_t n);
  metrics::Counter* lost_ = nullptr;
  std::string path_;  // empty for stdout and stderr
  std::atomic<bool> reopen_{false};
  int fd_ = -1;
  bool owns_fd_ = false;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  bool stop_ = false;
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;
};

}  // namespace flotilla::gateway
