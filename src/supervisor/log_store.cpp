// Instance log files: the writer (InstanceLog, on the control loop) and the reader (read_logs).
//
// Ordering guarantees the follow cursor relies on:
//   - the writer gives each record the time its bytes were read, clamped so that an instance's
//     times never go backwards (also across an agent restart appending to an existing file);
//   - records of one instance are therefore ordered by (time, n), n counting the records of that
//     instance carrying that same microsecond; rotation renames files and never rewrites one, so
//     this position survives rotation, unlike a byte offset;
//   - the reader ignores an unterminated last line (a write in progress) and opens an instance's
//     files newest first, retrying when a rotation finished meanwhile, so each answer holds a
//     prefix of every instance's records and the cursor (the last position per instance) lets
//     the next answer start exactly after it.
#include "supervisor/log_store.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <iterator>
#include <limits>
#include <map>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <utility>

#include "common/event_loop.h"
#include "common/unique_fd.h"

namespace flotilla::supervisor {

namespace {

namespace asio = boost::asio;

constexpr size_t kMaxText = 16 * 1024;           // longer lines are cut into several records
constexpr size_t kTimeLen = 27;                  // 2026-12-02T08:32:27.123456Z
constexpr size_t kHeaderLen = kTimeLen + 5;      // + " out "
constexpr size_t kReadBudget = 256 * 1024;       // per wake-up, so one chatty instance can't hog the loop
constexpr size_t kShutdownBudget = 1024 * 1024;  // what is drained from the pipes on destruction
constexpr size_t kReaderChunk = 256 * 1024;      // > any valid record; longer lines are corrupt

// ---- time <-> text -------------------------------------------------------------------------

void put2(char* p, unsigned v) {
  p[0] = static_cast<char>('0' + v / 10);
  p[1] = static_cast<char>('0' + v % 10);
}

// Writes the 27 characters of `us` (microseconds since the epoch, UTC) at out.
void format_time(int64_t us, char* out) {
  using namespace std::chrono;
  sys_time<microseconds> tp{microseconds{us}};
  auto day = floor<days>(tp);
  year_month_day ymd{day};
  int64_t in_day = (tp - day).count();  // microseconds into the day, >= 0
  int y = static_cast<int>(ymd.year());
  if (y < 0) y = 0;
  if (y > 9999) y = 9999;
  out[0] = static_cast<char>('0' + y / 1000);
  out[1] = static_cast<char>('0' + y / 100 % 10);
  out[2] = static_cast<char>('0' + y / 10 % 10);
  out[3] = static_cast<char>('0' + y % 10);
  out[4] = '-';
  put2(out + 5, static_cast<unsigned>(ymd.month()));
  out[7] = '-';
  put2(out + 8, static_cast<unsigned>(ymd.day()));
  out[10] = 'T';
  int64_t secs = in_day / 1000000;
  put2(out + 11, static_cast<unsigned>(secs / 3600));
  out[13] = ':';
  put2(out + 14, static_cast<unsigned>(secs / 60 % 60));
  out[16] = ':';
  put2(out + 17, static_cast<unsigned>(secs % 60));
  out[19] = '.';
  int64_t frac = in_day % 1000000;
  for (int i = 25; i >= 20; --i) {
    out[i] = static_cast<char>('0' + frac % 10);
    frac /= 10;
  }
  out[26] = 'Z';
}

bool digits(std::string_view s, size_t pos, size_t n, int& value) {
  value = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    char c = s[i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  return true;
}

// Parses the 27-character time at the start of s.
bool parse_time(std::string_view s, int64_t& us) {
  if (s.size() < kTimeLen) return false;
  if (s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' || s[26] != 'Z')
    return false;
  int y, mo, d, h, mi, se, frac;
  if (!digits(s, 0, 4, y) || !digits(s, 5, 2, mo) || !digits(s, 8, 2, d) || !digits(s, 11, 2, h) ||
      !digits(s, 14, 2, mi) || !digits(s, 17, 2, se) || !digits(s, 20, 6, frac))
    return false;
  if (h > 23 || mi > 59 || se > 59) return false;
  using namespace std::chrono;
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return false;
  int64_t day_count = sys_days{ymd}.time_since_epoch().count();
  us = ((day_count * 86400 + h * 3600 + mi * 60 + se) * 1000000) + frac;
  return true;
}

struct ParsedLine {
  int64_t time_us;
  std::string_view stream;
  std::string_view text;
};

// "<time> out|err <text>" (the space after the stream is absent only for an empty text written
// by something else; we always write it).
bool parse_record(std::string_view line, ParsedLine& out) {
  if (line.size() < kHeaderLen - 1 || !parse_time(line, out.time_us) || line[kTimeLen] != ' ') return false;
  std::string_view stream = line.substr(kTimeLen + 1, 3);
  if (stream != "out" && stream != "err") return false;
  if (line.size() == kHeaderLen - 1) {
    out.text = {};
  } else if (line[kHeaderLen - 1] == ' ') {
    out.text = line.substr(kHeaderLen);
  } else {
    return false;
  }
  out.stream = stream;
  return true;
}

int64_t now_us() {
  using namespace std::chrono;
  return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// ---- names and paths -----------------------------------------------------------------------

// A path component we create or read: refuses what could leave <dir> (a user-supplied service).
bool valid_component(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

void require_component(const std::string& s, const char* what) {
  if (!valid_component(s)) throw std::invalid_argument(std::string("invalid ") + what + " name \"" + s + "\"");
}

// "<instance>.log" -> rotation 0, "<instance>.log.<N>" -> N; false for anything else.
bool parse_log_name(std::string_view name, std::string& instance, int& rotation) {
  constexpr std::string_view kExt = ".log";
  if (name.size() > kExt.size() && name.substr(name.size() - kExt.size()) == kExt) {
    instance = name.substr(0, name.size() - kExt.size());
    rotation = 0;
    return true;
  }
  size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || dot + 1 == name.size()) return false;
  std::string_view num = name.substr(dot + 1);
  if (num.size() > 6 || num[0] == '0') return false;
  int n = 0;
  for (char c : num) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  std::string_view base = name.substr(0, dot);
  if (base.size() <= kExt.size() || base.substr(base.size() - kExt.size()) != kExt) return false;
  instance = base.substr(0, base.size() - kExt.size());
  rotation = n;
  return true;
}

std::string rotated(const std::string& path, int n) { return path + "." + std::to_string(n); }

}  // namespace

// ---- writer --------------------------------------------------------------------------------

struct InstanceLog::Impl : std::enable_shared_from_this<Impl> {
  struct Stream {
    Stream(asio::io_context& io, const char* tag) : sd(io), tag(tag) {}
    asio::posix::stream_descriptor sd;
    const char* tag;
    std::string pending;  // read but not yet a whole line
    bool eof = true;
  };

  Impl(asio::io_context& io, std::string dir, std::string service, std::string instance, LogLimits limits,
       std::function<void()> on_line)
      : streams{Stream(io, "out"), Stream(io, "err")},
        service_dir(std::move(dir) + "/" + service),
        path(service_dir + "/" + instance + ".log"),
        label(service + "/" + instance),
        limits(limits),
        on_line(std::move(on_line)) {}

  ~Impl() { close_file(); }

  Stream streams[2];
  std::string service_dir;
  std::string path;   // <dir>/<service>/<instance>.log
  std::string label;  // service/instance, for our own log messages
  LogLimits limits;
  std::function<void()> on_line;
  std::function<void(std::string_view)> echo;

  int fd = -1;
  uint64_t file_size = 0;
  std::chrono::steady_clock::time_point next_open_attempt{};
  int64_t last_time_us = 0;  // times never go backwards within an instance (the cursor needs it)

  std::string batch;  // records of the current read, written at once
  size_t batch_records = 0;
  char header[kHeaderLen];  // the current read's "<time> " (stream tag filled per record)

  bool failing = false;  // a disk error was logged; cleared (with a note) when writing works again
  uint64_t dropped = 0;
  bool closed = false;  // the owner is gone
  bool finished = false;
  char buf[64 * 1024];

  void start(int fd_out, int fd_err) {
    int fds[2] = {fd_out, fd_err};
    for (int i = 0; i < 2; ++i) {
      if (fds[i] < 0) continue;
      int flags = ::fcntl(fds[i], F_GETFL);
      if (flags >= 0 && !(flags & O_NONBLOCK)) ::fcntl(fds[i], F_SETFL, flags | O_NONBLOCK);
      streams[i].sd.assign(fds[i]);
      streams[i].eof = false;
    }
    open_file();
    for (int i = 0; i < 2; ++i)
      if (!streams[i].eof) wait(i);
    if (streams[0].eof && streams[1].eof) finish();
  }

  void wait(int i) {
    streams[i].sd.async_wait(asio::posix::stream_descriptor::wait_read,
                             [self = shared_from_this(), i](const boost::system::error_code& ec) {
                               self->on_readable(i, ec);
                             });
  }

  void on_readable(int i, const boost::system::error_code& ec) {
    if (closed || streams[i].eof) return;  // cancelled by the destructor, which drained the pipe
    bool eof = ec ? true : drain(i, kReadBudget);
    if (ec) spdlog::debug("logs of {}: waiting on the {} pipe: {}", label, streams[i].tag, ec.message());
    if (eof) end_stream(i);
    bool wrote = batch_records > 0;
    flush();
    if (streams[0].eof && streams[1].eof) {
      finish();
    } else if (!eof) {
      wait(i);
    }
    if (wrote && on_line) on_line();  // last: it may destroy the owner (we hold a reference)
  }

  // Reads what the pipe holds (up to budget) and cuts it into records. True at end of file.
  bool drain(int i, size_t budget) {
    Stream& s = streams[i];
    int pipe_fd = s.sd.native_handle();
    size_t total = 0;
    bool stamped = false;
    while (total < budget) {
      ssize_t n = ::read(pipe_fd, buf, sizeof buf);
      if (n > 0) {
        if (!stamped) {
          stamp();
          stamped = true;
        }
        total += static_cast<size_t>(n);
        s.pending.append(buf, static_cast<size_t>(n));
        take_lines(s, false);
        continue;
      }
      if (n == 0) return true;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
      spdlog::debug("logs of {}: reading the {} pipe: {}", label, s.tag, std::strerror(errno));
      return true;
    }
    return false;
  }

  void end_stream(int i) {
    Stream& s = streams[i];
    if (!s.pending.empty()) {
      stamp();
      take_lines(s, true);
    }
    s.eof = true;
    boost::system::error_code ignored;
    s.sd.close(ignored);
  }

  void finish() {
    flush();
    close_file();
    finished = true;
  }

  // Records read now carry this time.
  void stamp() {
    last_time_us = std::max(last_time_us, now_us());
    format_time(last_time_us, header);
    header[kTimeLen] = ' ';
    header[kHeaderLen - 1] = ' ';
  }

  // Emits every whole line of s.pending (and, at eof, the rest), cutting lines at kMaxText.
  void take_lines(Stream& s, bool at_eof) {
    const std::string& p = s.pending;
    size_t pos = 0;
    while (pos < p.size()) {
      size_t avail = p.size() - pos;
      const char* start = p.data() + pos;
      auto* nl = static_cast<const char*>(std::memchr(start, '\n', std::min(avail, kMaxText + 1)));
      if (nl) {
        size_t len = static_cast<size_t>(nl - start);
        emit(s, {start, len});
        pos += len + 1;
      } else if (avail > kMaxText) {
        size_t cut = kMaxText;
        // Don't split a UTF-8 sequence: back up over at most 3 continuation bytes.
        while (cut > kMaxText - 3 && (static_cast<unsigned char>(start[cut]) & 0xC0) == 0x80) --cut;
        if ((static_cast<unsigned char>(start[cut]) & 0xC0) == 0x80) cut = kMaxText;  // not UTF-8
        emit(s, {start, cut});
        pos += cut;
      } else {
        break;
      }
    }
    if (at_eof && pos < p.size()) {
      emit(s, std::string_view(p).substr(pos));
      pos = p.size();
    }
    s.pending.erase(0, pos);
  }

  void emit(const Stream& s, std::string_view text) {
    size_t len = kHeaderLen + text.size() + 1;
    // Rotate before the record that would take the file past max_bytes, so files stay within it
    // (only a single record bigger than max_bytes exceeds it).
    if (limits.max_bytes > 0 && fd >= 0 && file_size + batch.size() > 0 &&
        file_size + batch.size() + len > limits.max_bytes) {
      flush();
      rotate();
    }
    if (echo) echo(text);
    std::memcpy(header + kTimeLen + 1, s.tag, 3);
    batch.append(header, kHeaderLen);
    batch.append(text);
    batch.push_back('\n');
    ++batch_records;
  }

  void flush() {
    if (batch.empty()) return;
    if (fd < 0) open_file();
    if (fd < 0) {
      dropped += batch_records;
    } else if (write_all(batch)) {
      if (failing) {
        spdlog::info("logs of {}: writing {} again ({} lines were lost)", label, path, dropped);
        failing = false;
        dropped = 0;
      }
    } else {
      dropped += batch_records;
    }
    batch.clear();
    batch_records = 0;
  }

  bool write_all(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::write(fd, data.data() + done, data.size() - done);
      if (n > 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      int err = n < 0 ? errno : ENOSPC;
      // Drop the torn record rather than leave half a line for the next one to be glued to.
      if (done > 0 && ::ftruncate(fd, static_cast<off_t>(file_size)) != 0) {
        // Could not: end the torn part so at most one record is malformed.
        if (::write(fd, "\n", 1) == 1) file_size += done + 1;
      }
      report(err, "writing");
      return false;
    }
    file_size += data.size();
    return true;
  }

  void report(int err, const char* doing) {
    if (failing) return;
    failing = true;
    spdlog::error("logs of {}: {} {}: {}; its lines are dropped until this works again", label, doing, path,
                  std::strerror(err));
  }

  void open_file() {
    auto now = std::chrono::steady_clock::now();
    if (now < next_open_attempt) return;
    next_open_attempt = now + std::chrono::seconds(1);
    std::error_code ec;
    std::filesystem::create_directories(service_dir, ec);
    // O_RDWR only to look at the end of an existing file; every write appends.
    int f = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (f < 0) {
      report(errno, "opening");
      return;
    }
    struct stat st {};
    if (::fstat(f, &st) != 0) {
      report(errno, "opening");
      ::close(f);
      return;
    }
    fd = f;
    file_size = static_cast<uint64_t>(st.st_size);
    if (file_size > 0) resume_existing();
  }

  // Appending to a file a previous agent wrote: end a line it left torn (it crashed mid-write)
  // and keep times after those of its last records.
  void resume_existing() {
    std::string tail(std::min<uint64_t>(file_size, 2 * (kHeaderLen + kMaxText + 1)), '\0');
    ssize_t n = ::pread(fd, tail.data(), tail.size(), static_cast<off_t>(file_size - tail.size()));
    if (n != static_cast<ssize_t>(tail.size())) return;
    // Unless the window starts the file, its first line may be the end of a record.
    size_t first = tail.size() < file_size ? tail.find('\n') + 1 : 0;
    if (tail.back() != '\n') write_all("\n");
    ParsedLine rec;
    for (size_t begin = first, nl; (nl = tail.find('\n', begin)) != std::string::npos; begin = nl + 1) {
      if (parse_record(std::string_view(tail).substr(begin, nl - begin), rec))
        last_time_us = std::max(last_time_us, rec.time_us);
    }
  }

  void rotate() {
    close_file();
    if (limits.keep <= 0) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) report(errno, "removing");
    } else {
      // Leftovers of a larger `keep` (an older configuration).
      for (int k = limits.keep + 1; ::unlink(rotated(path, k).c_str()) == 0; ++k) {
      }
      for (int k = limits.keep; k >= 2; --k) {
        if (::rename(rotated(path, k - 1).c_str(), rotated(path, k).c_str()) != 0 && errno != ENOENT)
          report(errno, "rotating");
      }
      if (::rename(path.c_str(), rotated(path, 1).c_str()) != 0 && errno != ENOENT) report(errno, "rotating");
    }
    next_open_attempt = {};
    open_file();
  }

  void close_file() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  // The owner is going away: keep what the pipes already hold, then let go of everything. The
  // pending waits complete later with operation_aborted and do nothing.
  void shutdown() {
    closed = true;
    for (int i = 0; i < 2; ++i) {
      if (streams[i].eof) continue;
      drain(i, kShutdownBudget);
      end_stream(i);
    }
    flush();
    close_file();
  }
};

InstanceLog::InstanceLog(EventLoop& loop, std::string dir, std::string service, std::string instance, int stdout_fd,
                         int stderr_fd, LogLimits limits, std::function<void()> on_line,
                         std::function<void(std::string_view)> echo) {
  require_component(service, "service");
  require_component(instance, "instance");
  impl_ = std::make_shared<Impl>(loop.io(), std::move(dir), std::move(service), std::move(instance), limits,
                                 std::move(on_line));
  impl_->echo = std::move(echo);
  impl_->start(stdout_fd, stderr_fd);
}

InstanceLog::~InstanceLog() {
  if (impl_) impl_->shutdown();
}

bool InstanceLog::finished() const { return impl_->finished; }

// ---- reader --------------------------------------------------------------------------------

namespace {

// A record's place in its instance: its time, and how many records of the instance carry that
// same time up to and including it. Ordered lexicographically.
struct Pos {
  int64_t time = std::numeric_limits<int64_t>::min();
  uint64_t n = 0;
  bool operator<(const Pos& o) const { return time != o.time ? time < o.time : n < o.n; }
  bool set() const { return time != std::numeric_limits<int64_t>::min(); }
};

bool plain_cursor_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.';
}

std::string format_cursor(const std::map<std::string, Pos>& positions) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (const auto& [name, pos] : positions) {
    if (!out.empty()) out.push_back(';');
    for (unsigned char c : name) {
      if (plain_cursor_char(c)) {
        out.push_back(static_cast<char>(c));
      } else {
        out.push_back('%');
        out.push_back(hex[c >> 4]);
        out.push_back(hex[c & 15]);
      }
    }
    out += "=" + std::to_string(pos.time) + ":" + std::to_string(pos.n);
  }
  return out;
}

[[noreturn]] void bad_cursor(std::string_view cursor) {
  throw std::invalid_argument("malformed log cursor \"" + std::string(cursor.substr(0, 200)) + "\"");
}

bool parse_uint(std::string_view s, uint64_t& v) {
  if (s.empty() || s.size() > 19) return false;
  v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

std::map<std::string, Pos> parse_cursor(std::string_view cursor) {
  std::map<std::string, Pos> out;
  size_t start = 0;
  while (start < cursor.size()) {
    size_t end = cursor.find(';', start);
    if (end == std::string_view::npos) end = cursor.size();
    std::string_view entry = cursor.substr(start, end - start);
    start = end + 1;
    size_t eq = entry.find('=');
    size_t colon = entry.find(':', eq == std::string_view::npos ? 0 : eq);
    if (eq == std::string_view::npos || eq == 0 || colon == std::string_view::npos) bad_cursor(cursor);
    std::string name;
    for (size_t i = 0; i < eq; ++i) {
      if (entry[i] == '%') {
        int hi = i + 2 < eq ? hex_value(entry[i + 1]) : -1;
        int lo = i + 2 < eq ? hex_value(entry[i + 2]) : -1;
        if (hi < 0 || lo < 0) bad_cursor(cursor);
        name.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
      } else if (plain_cursor_char(static_cast<unsigned char>(entry[i]))) {
        name.push_back(entry[i]);
      } else {
        bad_cursor(cursor);
      }
    }
    uint64_t time = 0, n = 0;
    if (!parse_uint(entry.substr(eq + 1, colon - eq - 1), time) || !parse_uint(entry.substr(colon + 1), n) ||
        time > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      bad_cursor(cursor);
    out[name] = Pos{static_cast<int64_t>(time), n};
  }
  return out;
}

// Lines of a file, read in large chunks. A last line without its newline is not returned (a
// write in progress, or a torn one); nor is a line longer than a chunk (no record is).
class LineReader {
 public:
  explicit LineReader(int fd) : fd_(fd), buf_(kReaderChunk, '\0') {}

  bool next(std::string_view& line) {
    for (;;) {
      auto* begin = buf_.data() + begin_;
      auto* nl = static_cast<const char*>(std::memchr(begin, '\n', end_ - begin_));
      if (nl) {
        size_t len = static_cast<size_t>(nl - begin);
        begin_ += len + 1;
        if (skipping_) {
          skipping_ = false;
          continue;
        }
        line = std::string_view(begin, len);
        return true;
      }
      if (eof_) return false;
      if (begin_ > 0) {
        std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      if (end_ == buf_.size()) {  // no newline in a whole chunk: corrupt, skip to the next one
        skipping_ = true;
        end_ = 0;
      }
      ssize_t n = ::read(fd_, buf_.data() + end_, buf_.size() - end_);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        eof_ = true;
        continue;
      }
      end_ += static_cast<size_t>(n);
    }
  }

 private:
  int fd_;
  std::string buf_;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
  bool skipping_ = false;
};

// The files of one instance, oldest first, opened so that they show one consistent state:
//   - newest first: a rotation meanwhile shifts files towards the names still to open, so none is
//     skipped (the same file seen twice is dropped by inode);
//   - past the highest number listed (the listing may predate rotations) until two names in a row
//     are missing (a rotation in progress leaves at most one gap);
//   - again when a rotation replaced <instance>.log before we were done.
std::vector<UniqueFd> open_instance(const std::string& base, int max_listed) {
  constexpr int kAttempts = 50;  // rotations are rare; giving up only costs exactness
  std::vector<UniqueFd> files;
  for (int attempt = 1;; ++attempt) {
    files.clear();
    std::vector<std::pair<dev_t, ino_t>> seen;
    std::pair<dev_t, ino_t> id{};
    auto add = [&](const std::string& path) {
      UniqueFd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      struct stat st {};
      if (!f.valid() || ::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
      id = {st.st_dev, st.st_ino};
      if (std::find(seen.begin(), seen.end(), id) == seen.end()) {
        seen.push_back(id);
        files.push_back(std::move(f));
      }
      return true;
    };
    bool has_current = add(base);
    auto current = id;
    for (int k = 1, misses = 0; k <= max_listed + 1 || misses < 2; ++k) misses = add(rotated(base, k)) ? 0 : misses + 1;
    struct stat st {};
    bool exists = ::stat(base.c_str(), &st) == 0;
    bool same = exists ? has_current && st.st_dev == current.first && st.st_ino == current.second : !has_current;
    if (same || attempt == kAttempts) break;
  }
  std::reverse(files.begin(), files.end());
  return files;
}

// The time of the last record of a file that no longer grows; false when its last line is not
// a record.
bool last_record_time(int fd, int64_t& time) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size <= 0) return false;
  size_t size = static_cast<size_t>(st.st_size);
  std::string tail(std::min(size, kHeaderLen + kMaxText + 2), '\0');
  if (::pread(fd, tail.data(), tail.size(), static_cast<off_t>(size - tail.size())) !=
      static_cast<ssize_t>(tail.size()))
    return false;
  size_t end = tail.rfind('\n');  // what follows a last newline is no record (a torn line)
  if (end == std::string::npos || end == 0) return false;
  size_t begin = tail.rfind('\n', end - 1);
  if (begin == std::string::npos) {
    if (tail.size() < size) return false;  // the line may start before the window
    begin = 0;
  } else {
    ++begin;
  }
  ParsedLine rec;
  if (!parse_record(std::string_view(tail).substr(begin, end - begin), rec)) return false;
  time = rec.time_us;
  return true;
}

struct Entry {
  int64_t key;  // the time, clamped to never go backwards within the instance
  LogRecord record;
};

}  // namespace

LogAnswer read_logs(const std::string& dir, const LogQuery& query) {
  require_component(query.service, "service");
  std::map<std::string, Pos> after = parse_cursor(query.after);
  std::string service_dir = dir + "/" + query.service;

  std::map<std::string, int> instances;  // name -> highest rotation listed
  {
    DIR* d = ::opendir(service_dir.c_str());
    if (!d) {
      if (errno == ENOENT) return {};
      throw std::runtime_error("cannot read " + service_dir + ": " + std::strerror(errno));
    }
    std::string instance;
    int rotation = 0;
    while (dirent* e = ::readdir(d)) {
      if (parse_log_name(e->d_name, instance, rotation) &&
          (query.instances.empty() || query.instances.count(instance))) {
        auto [it, inserted] = instances.emplace(instance, rotation);
        if (!inserted) it->second = std::max(it->second, rotation);
      }
    }
    ::closedir(d);
  }

  std::vector<std::deque<Entry>> per_instance;  // by instance name, each in its file order
  std::map<std::string, Pos> cursor;
  for (const auto& [instance, max_rotation] : instances) {
    Pos from;  // deliver records after this
    if (auto it = after.find(instance); it != after.end()) from = it->second;
    Pos pos;   // of the last record read
    std::deque<Entry>& kept = per_instance.emplace_back();
    std::vector<UniqueFd> files = open_instance(service_dir + "/" + instance + ".log", max_rotation);
    for (size_t i = 0; i < files.size(); ++i) {
      // A follower's cursor is usually in the newest file: skip older ones that end before it
      // (only complete files: the last one may still grow).
      int64_t last_time = 0;
      if (i + 1 < files.size() && from.set() && last_record_time(files[i].get(), last_time) &&
          last_time < from.time) {
        pos = {std::max(pos.time, last_time), 0};  // n is never needed below from.time
        continue;
      }
      LineReader lines(files[i].get());
      std::string_view line;
      ParsedLine rec;
      while (lines.next(line)) {
        if (!parse_record(line, rec)) continue;
        int64_t key = std::max(rec.time_us, pos.time);
        pos = key == pos.time ? Pos{key, pos.n + 1} : Pos{key, 1};
        if (key < query.since_us || !(from < pos)) continue;
        kept.push_back({key, LogRecord{rec.time_us, instance, std::string(rec.stream), std::string(rec.text)}});
        // The last `tail` of the merged answer are among the last `tail` of each instance.
        if (query.tail > 0 && kept.size() > query.tail) kept.pop_front();
      }
    }
    Pos last = std::max(from, pos);
    if (last.set()) cursor[instance] = last;
  }

  // Merge by time; ties go to the instance first by name, and within an instance file order is
  // kept. O(records × instances), moving each record once.
  size_t total = 0;
  for (const auto& q : per_instance) total += q.size();
  size_t skip = query.tail > 0 && total > query.tail ? total - query.tail : 0;
  LogAnswer answer;
  answer.records.reserve(total - skip);
  for (size_t i = 0; i < total; ++i) {
    std::deque<Entry>* next = nullptr;
    for (auto& q : per_instance)
      if (!q.empty() && (!next || q.front().key < next->front().key)) next = &q;
    if (i >= skip) answer.records.push_back(std::move(next->front().record));
    next->pop_front();
  }
  answer.cursor = format_cursor(cursor);
  return answer;
}

LogAnswer read_logs(const std::string& dir, const std::vector<LogQuery>& queries, size_t tail) {
  std::vector<LogAnswer> answers;
  std::map<std::string, Pos> cursor;
  size_t total = 0;
  for (const auto& q : queries) {
    LogQuery one = q;
    one.tail = tail;  // the last `tail` of the merge are among the last `tail` of each service
    answers.push_back(read_logs(dir, one));
    total += answers.back().records.size();
    for (auto& [name, pos] : parse_cursor(answers.back().cursor)) cursor[name] = pos;
  }
  const size_t skip = tail > 0 && total > tail ? total - tail : 0;
  LogAnswer answer;
  answer.records.reserve(total - skip);
  std::vector<size_t> at(answers.size(), 0);
  for (size_t i = 0; i < total; ++i) {
    size_t next = answers.size();
    for (size_t a = 0; a < answers.size(); ++a) {
      if (at[a] == answers[a].records.size()) continue;
      const LogRecord& r = answers[a].records[at[a]];
      if (next == answers.size()) {
        next = a;
        continue;
      }
      const LogRecord& best = answers[next].records[at[next]];
      if (r.time_us < best.time_us || (r.time_us == best.time_us && r.instance < best.instance)) next = a;
    }
    LogRecord& r = answers[next].records[at[next]++];
    if (i >= skip) answer.records.push_back(std::move(r));
  }
  answer.cursor = format_cursor(cursor);
  return answer;
}

void remove_instance_logs(const std::string& dir, const std::string& service, const std::string& instance) {
  require_component(service, "service");
  require_component(instance, "instance");
  std::string service_dir = dir + "/" + service;
  DIR* d = ::opendir(service_dir.c_str());
  if (!d) return;
  std::vector<std::string> doomed;
  std::string name;
  int rotation = 0;
  while (dirent* e = ::readdir(d)) {
    if (parse_log_name(e->d_name, name, rotation) && name == instance) doomed.push_back(e->d_name);
  }
  ::closedir(d);
  for (const auto& file : doomed) ::unlink((service_dir + "/" + file).c_str());
}

}  // namespace flotilla::supervisor
