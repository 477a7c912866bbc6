#include "gateway/access_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <climits>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <stdexcept>

#include "common/metrics.h"
#include "common/thread_name.h"

namespace flotilla::gateway {

namespace {
constexpr size_t kFlushAt = 1 << 20;
constexpr size_t kDropAt = 16 << 20;
}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  // Runs of bytes that need no escape (all of them, in most paths and hosts) are copied at once.
  size_t run = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const unsigned char u = static_cast<unsigned char>(s[i]);
    if (u >= 0x20 && u < 0x7f && u != '"' && u != '\\') continue;
    out.append(s.data() + run, i - run);
    run = i + 1;
    if (u == '"' || u == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(u));
    } else {  // control and non-ASCII bytes: the line stays valid JSON
      static constexpr char kHex[] = "0123456789abcdef";
      const char b[6] = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 15]};
      out.append(b, sizeof b);
    }
  }
  out.append(s.data() + run, s.size() - run);
  out.push_back('"');
}

namespace {
void append_number(std::string& out, uint64_t v) {
  char b[20];
  out.append(b, std::to_chars(b, b + sizeof b, v).ptr);
}

// `digits` decimal digits of v, zero-padded.
void append_padded(std::string& out, uint64_t v, int digits) {
  char b[20];
  for (int i = digits - 1; i >= 0; --i, v /= 10) b[i] = static_cast<char>('0' + v % 10);
  out.append(b, static_cast<size_t>(digits));
}

// "{"time":"2026-12-04T23:05:46." for the current second: formatted once per second per thread.
struct LinePrefix {
  int64_t second = INT64_MIN;
  std::string text;
};
thread_local LinePrefix line_prefix;

const std::string& prefix_for(int64_t second) {
  if (line_prefix.second != second) {
    const auto secs = static_cast<std::time_t>(second);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char ts[96];  // room for any int the compiler can imagine (no -Wformat-truncation)
    std::snprintf(ts, sizeof ts, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    line_prefix.text.assign(ts);
    line_prefix.second = second;
  }
  return line_prefix.text;
}

thread_local std::string line_scratch;  // each worker formats its lines here: no allocation per line
}  // namespace

AccessLog::AccessLog(const std::string& target, metrics::Counter* lost) : lost_(lost) {
  if (target == "stdout") {
    fd_ = STDOUT_FILENO;
  } else if (target == "stderr") {
    fd_ = STDERR_FILENO;
  } else {
    // A missing directory is made, as for the data dir (`.flotilla/logs/access.log` works on a
    // fresh checkout); one that cannot be made fails the open below with its reason.
    std::error_code ec;
    if (auto dir = std::filesystem::path(target).parent_path(); !dir.empty() && !std::filesystem::exists(dir, ec)) {
      std::filesystem::create_directories(dir, ec);
      if (ec)
        throw std::runtime_error("cannot open access log " + target + ": cannot create its directory " + dir.string() +
                                 ": " + ec.message());
    }
    fd_ = ::open(target.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) throw std::runtime_error("cannot open access log " + target + ": " + std::strerror(errno));
    owns_fd_ = true;
    path_ = target;
  }
  thread_ = std::thread([this] {
    set_thread_name("access-log");
    run();
  });
}

AccessLog::~AccessLog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
  if (owns_fd_) ::close(fd_);
}

void AccessLog::write(const AccessRecord& r) {
  std::string& line = line_scratch;
  line.clear();
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  // Floor division: a clock before 1970 still gives a valid time of day.
  const int64_t second = now_ms >= 0 ? now_ms / 1000 : (now_ms - 999) / 1000;
  line.append(prefix_for(second));
  append_padded(line, static_cast<uint64_t>(now_ms - second * 1000), 3);
  line.append("Z\",\"client\":");
  append_json_string(line, r.client);
  line.append(",\"method\":");
  append_json_string(line, r.method);
  line.append(",\"host\":");
  append_json_string(line, r.host);
  line.append(",\"path\":");
  append_json_string(line, r.path);
  line.append(",\"status\":");
  append_number(line, static_cast<uint64_t>(std::max(r.status, 0)));
  // An answer to HEAD has no body, whatever length its head gives: 0 here, also for the gateway's
  // own answers, whose call sites pass the size of the JSON they would have sent.
  line.append(",\"bytes\":");
  append_number(line, r.method == "HEAD" ? 0 : r.bytes);
  // Seconds with 6 decimals, rounded half up to the microsecond.
  const uint64_t us = (static_cast<uint64_t>(std::max<int64_t>(r.duration_ns, 0)) + 500) / 1000;
  line.append(",\"duration\":");
  append_number(line, us / 1000000);
  line.push_back('.');
  append_padded(line, us % 1000000, 6);
  line.append(",\"service\":");
  append_json_string(line, r.service);
  line.append(",\"upstream\":");
  append_json_string(line, r.upstream);
  line.append(",\"tries\":");
  append_number(line, static_cast<uint64_t>(std::max(r.tries, 0)));
  line.append(",\"request_id\":");
  append_json_string(line, r.request_id);
  if (!r.cut.empty()) {
    line.append(",\"cut\":");
    append_json_string(line, r.cut);
  }
  line.append("}\n");
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (pending_.size() + line.size() > kDropAt) {
      count_lost(1);
      return;
    }
    pending_.append(line);
    wake = pending_.size() >= kFlushAt;
  }
  if (wake) cv_.notify_one();
}

void AccessLog::count_lost(uint64_t n) {
  dropped_.fetch_add(n, std::memory_order_relaxed);
  if (lost_) lost_->inc(n);
}

void AccessLog::reopen() {
  if (path_.empty()) return;
  reopen_.store(true, std::memory_order_relaxed);
  cv_.notify_one();
}

void AccessLog::reopen_now() {
  // The old file keeps what was written to it; a path that cannot be opened now (a directory
  // gone, permissions) keeps the old descriptor and says so: nothing is lost meanwhile.
  int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    spdlog::error("gateway: cannot reopen the access log {}: {}; still writing to the old file", path_,
                  std::strerror(errno));
    return;
  }
  ::close(fd_);
  fd_ = fd;
  spdlog::info("gateway: access log {} reopened", path_);
}

void AccessLog::run() {
  std::string batch;
  for (;;) {
    bool stopping;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(100), [this] {
        return stop_ || pending_.size() >= kFlushAt || reopen_.load(std::memory_order_relaxed);
      });
      batch.swap(pending_);
      stopping = stop_;
    }
    // Lines queued before the signal go to the new file too: logrotate moved the old one and
    // compresses it next, and a line appended to it meanwhile could be lost.
    if (reopen_.exchange(false, std::memory_order_relaxed)) reopen_now();
    size_t off = 0;
    while (off < batch.size()) {
      ssize_t n = ::write(fd_, batch.data() + off, batch.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        // A full disk (or a non-blocking stdout that is full) loses log lines, never requests:
        // counted, and said once per batch.
        auto lost = static_cast<uint64_t>(std::count(batch.begin() + static_cast<std::ptrdiff_t>(off), batch.end(), '\n'));
        count_lost(lost);
        spdlog::warn("gateway: access log: {} line(s) lost: {}", lost, n < 0 ? std::strerror(errno) : "nothing written");
        break;
      }
      off += static_cast<size_t>(n);
    }
    batch.clear();
    if (stopping) return;
  }
}

}  // namespace flotilla::gateway
