#include "supervisor/log_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "common/event_loop.h"

namespace flotilla::supervisor {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/flotilla-logs-XXXXXX";
    char* p = ::mkdtemp(tmpl);
    if (!p) throw std::runtime_error("mkdtemp failed");
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string path;
};

// A pipe whose read end goes to an InstanceLog (which owns it from then on).
struct Pipe {
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    r = fds[0];
    w = fds[1];
    ::fcntl(r, F_SETFL, ::fcntl(r, F_GETFL) | O_NONBLOCK);
  }
  ~Pipe() { close_w(); }
  void close_w() {
    if (w >= 0) ::close(w);
    w = -1;
  }
  void put(std::string_view s) const {
    while (!s.empty()) {
      ssize_t n = ::write(w, s.data(), s.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw std::runtime_error("write to pipe failed");
      s.remove_prefix(static_cast<size_t>(n));
    }
  }
  // Bytes still in the pipe (valid while the InstanceLog holds the read end open).
  int unread() const {
    int n = 0;
    ::ioctl(r, FIONREAD, &n);
    return n;
  }
  int r = -1;
  int w = -1;
};

// Runs the loop until done() or the limit; returns done().
bool run_for(EventLoop& loop, const std::function<bool()>& done, Duration limit = 10s) {
  bool over = false;
  Timer timer(loop);
  timer.arm(limit, [&] { over = true; });
  loop.run_until([&] { return done() || over; });
  return done();
}

void settle(EventLoop& loop, Duration d) {
  bool over = false;
  Timer timer(loop);
  timer.arm(d, [&] { over = true; });
  loop.run_until([&] { return over; });
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& data, bool append = false) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | (append ? std::ios::app : std::ios::trunc));
  out << data;
}

size_t count_lines(const std::string& path) {
  auto s = slurp(path);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

// 2026-12-02T08:32:00Z in microseconds, and a record line `us` microseconds after it.
int64_t base_us() {
  std::tm tm{};
  tm.tm_year = 2026 - 1900;
  tm.tm_mon = 11;
  tm.tm_mday = 2;
  tm.tm_hour = 8;
  tm.tm_min = 32;
  return static_cast<int64_t>(::timegm(&tm)) * 1000000;
}
std::string rec(int us, const std::string& stream, const std::string& text) {
  char t[64];
  std::snprintf(t, sizeof t, "2026-12-02T08:32:%02d.%06dZ", us / 1000000, us % 1000000);
  return std::string(t) + " " + stream + " " + text + "\n";
}

std::vector<std::string> texts(const LogAnswer& a) {
  std::vector<std::string> out;
  for (const auto& r : a.records) out.push_back(r.text);
  return out;
}

LogAnswer query(const std::string& dir, const std::string& after = "", int64_t since = 0, size_t tail = 0) {
  LogQuery q;
  q.service = "svc";
  q.after = after;
  q.since_us = since;
  q.tail = tail;
  return read_logs(dir, q);
}

struct Instance {
  Instance(EventLoop& loop, const std::string& dir, const std::string& name, LogLimits limits = {}) {
    log = std::make_unique<InstanceLog>(loop, dir, "svc", name, out.r, err.r, limits, [this] { ++batches; });
  }
  void close() {
    out.close_w();
    err.close_w();
  }
  bool drained() const { return out.unread() == 0 && err.unread() == 0; }
  Pipe out, err;
  int batches = 0;
  std::unique_ptr<InstanceLog> log;
};

// ---- InstanceLog --------------------------------------------------------------------------

TEST(LogStoreWriter, StreamsAreTaggedAndInOrder) {
  TempDir dir;
  EventLoop loop;
  int64_t before = std::chrono::duration_cast<std::chrono::microseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  Instance in(loop, dir.path, "web-1");
  in.out.put("o1\n");
  ASSERT_TRUE(run_for(loop, [&] { return in.batches >= 1; }));
  in.err.put("e1\n");
  ASSERT_TRUE(run_for(loop, [&] { return in.batches >= 2; }));
  in.out.put("o2\n");
  ASSERT_TRUE(run_for(loop, [&] { return in.batches >= 3; }));
  EXPECT_FALSE(in.log->finished());
  in.close();
  ASSERT_TRUE(run_for(loop, [&] { return in.log->finished(); }));

  auto a = query(dir.path);
  ASSERT_EQ(a.records.size(), 3u);
  EXPECT_EQ(texts(a), (std::vector<std::string>{"o1", "e1", "o2"}));
  EXPECT_EQ(a.records[0].stream, "out");
  EXPECT_EQ(a.records[1].stream, "err");
  EXPECT_EQ(a.records[2].stream, "out");
  for (const auto& r : a.records) {
    EXPECT_EQ(r.instance, "web-1");
    EXPECT_GE(r.time_us, before);
    EXPECT_LT(r.time_us, before + 60'000'000);
  }
  EXPECT_LE(a.records[0].time_us, a.records[1].time_us);
  EXPECT_LE(a.records[1].time_us, a.records[2].time_us);

  std::istringstream file(slurp(dir.path + "/svc/web-1.log"));
  std::regex shape(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (out|err) [oe][12])");
  std::string line;
  int n = 0;
  while (std::getline(file, line)) {
    EXPECT_TRUE(std::regex_match(line, shape)) << line;
    ++n;
  }
  EXPECT_EQ(n, 3);
}

TEST(LogStoreWriter, LineSplitAcrossWritesIsOneRecord) {
  TempDir dir;
  EventLoop loop;
  Instance in(loop, dir.path, "a");
  in.out.put("hel");
  ASSERT_TRUE(run_for(loop, [&] { return in.drained(); }));
  settle(loop, 20ms);
  in.out.put("lo wor");
  ASSERT_TRUE(run_for(loop, [&] { return in.drained(); }));
  settle(loop, 20ms);
  EXPECT_EQ(slurp(dir.path + "/svc/a.log"), "");
  in.out.put("ld\nnext\n");
  in.close();
  ASSERT_TRUE(run_for(loop, [&] { return in.log->finished(); }));
  EXPECT_EQ(texts(query(dir.path)), (std::vector<std::string>{"hello world", "next"}));
}

TEST(LogStoreWriter, LongLinesAreCutAt16KiB) {
  TempDir dir;
  EventLoop loop;
  Instance in(loop, dir.path, "a");
  std::string forty(40 * 1024, 'a');
  std::string exact(16 * 1024, 'b');
  std::string over(16 * 1024 + 1, 'c');
  in.out.put(forty + "\n");
  ASSERT_TRUE(run_for(loop, [&] { return in.drained(); }));
  in.out.put(exact + "\n");
  ASSERT_TRUE(run_for(loop, [&] { return in.drained(); }));
  in.out.put(over + "\n");
  in.close();
  ASSERT_TRUE(run_for(loop, [&] { return in.log->finished(); }));

  auto a = query(dir.path);
  ASSERT_EQ(a.records.size(), 6u);
  EXPECT_EQ(a.records[0].text, std::string(16384, 'a'));
  EXPECT_EQ(a.records[1].text, std::string(16384, 'a'));
  EXPECT_EQ(a.records[2].text, std::string(8192, 'a'));
  EXPECT_EQ(a.records[3].text, exact);
  EXPECT_EQ(a.records[4].text, std::string(16384, 'c'));
  EXPECT_EQ(a.records[5].text, "c");
}

TEST(LogStoreWriter, CutsDoNotSplitUtf8Sequences) {
  TempDir dir;
  EventLoop loop;
  Instance in(loop, dir.path, "a");
  std::string line = "x";
  for (int i = 0; i < 10000; ++i) line += "\xC3\xA9";  // é
  in.out.put(line + "\n");
  in.close();
  ASSERT_TRUE(run_for(loop, [&] { return in.log->finished(); }));
  auto a = query(dir.path);
  ASSERT_EQ(a.records.size(), 2u);
  EXPECT_EQ(a.records[0].text.size(), 16383u);
  EXPECT_EQ(static_cast<unsigned char>(a.records[1].text[0]), 0xC3);
  EXPECT_EQ(a.records[0].text + a.records[1].text, line);
}

TEST(LogStoreWriter, PartialLastLinesAreFlushedAtEof) {
  TempDir dir;
  EventLoop loop;
  Instance in(loop, dir.path, "a");
  in.out.put("one\ntwo");
  in.err.put("oops");
  in.close();
  ASSERT_TRUE(run_for(loop, [&] { return in.log->finished(); }));
  auto a = query(dir.path);
  ASSERT_EQ(a.records.size(), 3u);
  std::map<std::string, std::string> by_text;
  for (const auto& r : a.records) by_text[r.text] = r.stream;
  EXPECT_EQ(by_text["one"], "out");
  EXPECT_EQ(by_text["two"], "out");
  EXPECT_EQ(by_text["oops"], "err");
  EXPECT_EQ(slurp(dir.path + "/svc/a.log").back(), '\n');
}

TEST(LogStoreWriter, RotationKeepsExactlyKeepFiles) {
  TempDir dir;
  EventLoop loop;
  // Each record: 32-byte header + 28-byte text + newline = 61 bytes: 16 fit in 1000.
  Instance in(loop, dir.path, "r", LogLimits{1000, 2});
  auto text = [](int i) {
    char b[32];
    std::snprintf(b, sizeof b, "line-%04d-padding-padding-xx", i);
    return std::string(b);
  };
  for (int i = 0; i < 200; ++i) {
    in.out.put(text(i) + "\n");
    if (i % 7 == 0) {
      ASSERT_TRUE(run_for(loop, [&] { return in.drained(); }));
    }
  }
  in.close();
  ASSERT_TRUE(run_for(loop, [&] { return in.log->finished(); }));

  std::string base = dir.path + "/svc/r.log";
  ASSERT_TRUE(fs::exists(base));
  ASSERT_TRUE(fs::exists(base + ".1"));
  ASSERT_TRUE(fs::exists(base + ".2"));
  EXPECT_FALSE(fs::exists(base + ".3"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path + "/svc"), fs::directory_iterator()), 3);
  for (auto p : {base, base + ".1", base + ".2"}) EXPECT_LE(fs::file_size(p), 1000u) << p;
  EXPECT_EQ(count_lines(base + ".1"), 16u);
  EXPECT_EQ(count_lines(base + ".2"), 16u);
  EXPECT_EQ(count_lines(base), 8u);  // 200 = 12 × 16 + 8

  auto a = query(dir.path);
  ASSERT_EQ(a.records.size(), 40u);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(a.records[i].text, text(160 + i));
}

TEST(LogStoreWriter, RotationWithKeepZeroKeepsOnlyTheCurrentFile) {
  TempDir dir;
  EventLoop loop;
  Instance in(loop, dir.path, "r", LogLimits{1000, 0});
  for (int i = 0; i < 100; ++i) in.out.put("line-" + std::to_string(1000 + i) + "-padding-padding-xx\n");
  in.close();
  ASSERT_TRUE(run_for(loop, [&] { return in.log->finished(); }));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path + "/svc"), fs::directory_iterator()), 1);
  auto a = query(dir.path);
  ASSERT_EQ(a.records.size(), 4u);  // 100 = 6 × 16 + 4
  EXPECT_EQ(a.records.back().text, "line-1099-padding-padding-xx");
}

TEST(LogStoreWriter, ChattyWriterIsFullyDrained) {
  std::signal(SIGPIPE, SIG_IGN);
  TempDir dir;
  EventLoop loop;
  Instance in(loop, dir.path, "chatty");
  const int lines = 2 * 1024 * 1024 / 100;
  std::atomic<bool> wrote_all{false};
  int w = std::exchange(in.out.w, -1);
  std::thread writer([&, w] {
    std::string line(99, 'z');
    line += '\n';
    std::string chunk;
    for (int i = 0; i < lines; ++i) {
      std::string l = std::to_string(i) + ":" + line.substr(std::to_string(i).size() + 1);
      chunk += l;
      if (chunk.size() >= 8192 || i + 1 == lines) {
        const char* p = chunk.data();
        size_t left = chunk.size();
        while (left > 0) {
          ssize_t n = ::write(w, p, left);
          if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            ::close(w);
            return;  // the reader went away: the test fails below
          }
          p += n;
          left -= static_cast<size_t>(n);
        }
        chunk.clear();
      }
    }
    wrote_all = true;
    ::close(w);
  });
  in.err.close_w();
  bool finished = run_for(loop, [&] { return in.log->finished(); }, 30s);
  in.log.reset();  // unblocks the writer if the test failed
  writer.join();
  ASSERT_TRUE(finished);
  EXPECT_TRUE(wrote_all);
  auto a = query(dir.path);
  ASSERT_EQ(a.records.size(), static_cast<size_t>(lines));
  for (int i = 0; i < lines; i += 997) EXPECT_EQ(a.records[i].text.substr(0, a.records[i].text.find(':')), std::to_string(i));
  EXPECT_EQ(a.records.back().text.size(), 99u);
}

TEST(LogStoreWriter, DiskErrorsStillDrainThePipes) {
  TempDir dir;
  EventLoop loop;
  spit(dir.path + "/not-a-dir", "x");  // <dir>/svc cannot be created under a file
  Instance in(loop, dir.path + "/not-a-dir", "a");
  std::string line(1000, 'q');
  std::atomic<bool> wrote_all{false};
  int w = std::exchange(in.out.w, -1);
  std::thread writer([&, w] {
    for (int i = 0; i < 1000; ++i)  // 1 MB: far more than a pipe holds
      if (::write(w, (line + "\n").data(), line.size() + 1) <= 0) break;
    wrote_all = true;
    ::close(w);
  });
  in.err.close_w();
  bool finished = run_for(loop, [&] { return in.log->finished(); }, 30s);
  in.log.reset();
  writer.join();
  EXPECT_TRUE(finished);
  EXPECT_TRUE(wrote_all);
}

TEST(LogStoreWriter, DestroyedBeforeEofKeepsWhatThePipesHeld) {
  std::signal(SIGPIPE, SIG_IGN);
  TempDir dir;
  EventLoop loop;
  auto in = std::make_unique<Instance>(loop, dir.path, "a");
  in->out.put("first\n");
  ASSERT_TRUE(run_for(loop, [&] { return in->batches >= 1; }));
  in->out.put("second\npart");
  in->err.put("err-part");
  Pipe out_w, err_w;  // keep the write ends open past the destruction
  std::swap(out_w.w, in->out.w);
  std::swap(err_w.w, in->err.w);
  in.reset();
  // The read ends are closed: writing now fails instead of blocking forever.
  EXPECT_EQ(::write(out_w.w, "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
  settle(loop, 20ms);  // the cancelled waits complete harmlessly

  auto a = query(dir.path);
  std::vector<std::string> got = texts(a);
  std::sort(got.begin() + 1, got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"first", "err-part", "part", "second"}));
}

TEST(LogStoreWriter, MayBeDestroyedFromItsOwnCallback) {
  TempDir dir;
  EventLoop loop;
  Pipe out, err;
  std::unique_ptr<InstanceLog> log;
  int calls = 0;
  log = std::make_unique<InstanceLog>(loop, dir.path, "svc", "a", out.r, err.r, LogLimits{}, [&] {
    ++calls;
    log.reset();
  });
  out.put("bye\n");
  ASSERT_TRUE(run_for(loop, [&] { return log == nullptr; }));
  settle(loop, 20ms);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(texts(query(dir.path)), (std::vector<std::string>{"bye"}));
}

TEST(LogStoreWriter, ResumesAnExistingFileAfterATornLine) {
  TempDir dir;
  EventLoop loop;
  // A previous agent wrote a record dated in 2100, then crashed in the middle of one.
  spit(dir.path + "/svc/a.log", "2100-01-01T00:00:00.000000Z out old\n2100-01-01T00:00:0");
  Instance in(loop, dir.path, "a");
  in.out.put("new\n");
  in.close();
  ASSERT_TRUE(run_for(loop, [&] { return in.log->finished(); }));
  auto a = query(dir.path);
  ASSERT_EQ(texts(a), (std::vector<std::string>{"old", "new"}));
  EXPECT_GE(a.records[1].time_us, a.records[0].time_us);  // times never go backwards
}

TEST(LogStoreWriter, RefusesPathNames) {
  EventLoop loop;
  Pipe out, err;
  EXPECT_THROW(InstanceLog(loop, "/tmp", "../etc", "a", -1, -1, {}, {}), std::invalid_argument);
  EXPECT_THROW(InstanceLog(loop, "/tmp", "svc", "a/b", -1, -1, {}, {}), std::invalid_argument);
}

// ---- read_logs ----------------------------------------------------------------------------

TEST(LogStoreReader, MergesInstancesByTime) {
  TempDir dir;
  spit(dir.path + "/svc/b.log", rec(2, "out", "b2") + rec(3, "err", "b3") + rec(4, "out", "b4"));
  spit(dir.path + "/svc/a.log", rec(1, "out", "a1") + rec(3, "out", "a3") + rec(5, "out", "a5"));
  spit(dir.path + "/svc/a.log.1", rec(0, "out", "a0"));
  spit(dir.path + "/svc/a.log.2", rec(0, "out", "a-older"));
  spit(dir.path + "/svc/notes.txt", "not a log\n");
  spit(dir.path + "/other/z.log", rec(0, "out", "other service"));
  auto a = query(dir.path);
  EXPECT_EQ(texts(a), (std::vector<std::string>{"a-older", "a0", "a1", "b2", "a3", "b3", "b4", "a5"}));
  EXPECT_EQ(a.records[5].stream, "err");
  EXPECT_EQ(a.records[5].instance, "b");
  EXPECT_EQ(a.records[5].time_us, base_us() + 3);
  EXPECT_EQ(a.records[0].instance, "a");
}

TEST(LogStoreReader, SinceAndTail) {
  TempDir dir;
  spit(dir.path + "/svc/a.log", rec(1, "out", "a1") + rec(3, "out", "a3") + rec(5, "out", "a5"));
  spit(dir.path + "/svc/b.log", rec(2, "out", "b2") + rec(4, "out", "b4") + rec(6, "out", "b6"));
  int64_t b = base_us();
  EXPECT_EQ(texts(query(dir.path, "", b + 3)), (std::vector<std::string>{"a3", "b4", "a5", "b6"}));
  EXPECT_EQ(texts(query(dir.path, "", b + 7)), std::vector<std::string>{});
  EXPECT_EQ(texts(query(dir.path, "", 0, 2)), (std::vector<std::string>{"a5", "b6"}));
  EXPECT_EQ(texts(query(dir.path, "", 0, 3)), (std::vector<std::string>{"b4", "a5", "b6"}));
  EXPECT_EQ(texts(query(dir.path, "", 0, 100)).size(), 6u);
  EXPECT_EQ(texts(query(dir.path, "", b + 4, 1)), (std::vector<std::string>{"b6"}));
  // A single busy instance fills the tail alone.
  spit(dir.path + "/svc/c.log", rec(7, "out", "c7") + rec(8, "out", "c8") + rec(9, "out", "c9"));
  EXPECT_EQ(texts(query(dir.path, "", 0, 3)), (std::vector<std::string>{"c7", "c8", "c9"}));
}

TEST(LogStoreReader, FollowCursorGivesExactlyTheNewRecords) {
  TempDir dir;
  std::string svc = dir.path + "/svc/";
  int64_t b = base_us();
  spit(svc + "a.log", rec(1, "out", "a1") + rec(2, "out", "a2") + rec(2, "err", "a2b"));
  // b's last line is being written: not yet a record.
  spit(svc + "b.log", rec(2, "out", "b2") + rec(2, "out", "b2-partial").substr(0, 40));
  auto first = query(dir.path);
  EXPECT_EQ(texts(first), (std::vector<std::string>{"a1", "a2", "a2b", "b2"}));
  EXPECT_EQ(first.cursor, "a=" + std::to_string(b + 2) + ":2;b=" + std::to_string(b + 2) + ":1");

  // Nothing new: nothing, and the same cursor.
  auto idle = query(dir.path, first.cursor);
  EXPECT_TRUE(idle.records.empty());
  EXPECT_EQ(idle.cursor, first.cursor);

  // More records in the same microsecond as the last ones, a rotation, a new instance whose
  // records are older than the cursor's times, and b's line completed.
  spit(svc + "a.log", rec(2, "out", "a2c"), true);
  fs::rename(svc + "a.log", svc + "a.log.1");
  spit(svc + "a.log", rec(2, "out", "a2d") + rec(3, "out", "a3"));
  spit(svc + "b.log", rec(2, "out", "b2-partial").substr(40) + rec(2, "out", "b2b") + rec(3, "out", "b3"), true);
  spit(svc + "c.log", rec(1, "out", "c1"));

  auto next = query(dir.path, first.cursor);
  EXPECT_EQ(texts(next), (std::vector<std::string>{"c1", "a2c", "a2d", "b2-partial", "b2b", "a3", "b3"}));
  auto again = query(dir.path, next.cursor);
  EXPECT_TRUE(again.records.empty());
  EXPECT_EQ(again.cursor, next.cursor);

  // tail applies after the cursor; the cursor still covers everything read.
  auto tailed = query(dir.path, first.cursor, 0, 2);
  EXPECT_EQ(texts(tailed), (std::vector<std::string>{"a3", "b3"}));
  EXPECT_EQ(tailed.cursor, next.cursor);

  // Another rotation that drops the oldest file does not replay anything.
  fs::rename(svc + "a.log", svc + "a.log.2");  // (what keep=1 would leave after two rotations)
  fs::remove(svc + "a.log.1");
  spit(svc + "a.log", rec(4, "out", "a4"));
  EXPECT_EQ(texts(query(dir.path, next.cursor)), (std::vector<std::string>{"a4"}));

  // An instance removed for good leaves the cursor.
  remove_instance_logs(dir.path, "svc", "c");
  auto without_c = query(dir.path, next.cursor);
  EXPECT_EQ(without_c.cursor.find("c="), std::string::npos);
}

TEST(LogStoreReader, SeveralServicesMergeWithOneCursor) {
  TempDir dir;
  int64_t b = base_us();
  spit(dir.path + "/web/web-1.log", rec(1, "out", "w1") + rec(3, "out", "w3") + rec(5, "out", "w5"));
  spit(dir.path + "/api/api-1.log", rec(2, "out", "p2") + rec(3, "out", "p3") + rec(6, "out", "p6"));
  spit(dir.path + "/db/db-1.log", rec(0, "out", "d0"));
  auto several = [&](const std::string& after, size_t tail, std::set<std::string> api_instances = {}) {
    LogQuery web, api;
    web.service = "web";
    api.service = "api";
    web.after = api.after = after;
    api.instances = std::move(api_instances);
    return read_logs(dir.path, std::vector<LogQuery>{web, api}, tail);
  };
  auto all = several("", 0);
  // Time order across services; a tie goes to the instance first by name (api-1 before web-1).
  EXPECT_EQ(texts(all), (std::vector<std::string>{"w1", "p2", "p3", "w3", "w5", "p6"}));
  EXPECT_EQ(all.cursor, "api-1=" + std::to_string(b + 6) + ":1;web-1=" + std::to_string(b + 5) + ":1");
  EXPECT_EQ(texts(several("", 3)), (std::vector<std::string>{"w3", "w5", "p6"}));
  // One cursor for both: only what came after it, from either service.
  spit(dir.path + "/web/web-1.log", rec(7, "out", "w7"), true);
  spit(dir.path + "/api/api-1.log", rec(7, "out", "p7"), true);
  auto next = several(all.cursor, 0);
  EXPECT_EQ(texts(next), (std::vector<std::string>{"p7", "w7"}));
  EXPECT_TRUE(several(next.cursor, 0).records.empty());
  // Each service keeps its own instance filter.
  EXPECT_EQ(texts(several("", 0, {"api-2"})), (std::vector<std::string>{"w1", "w3", "w5", "w7"}));
  EXPECT_TRUE(read_logs(dir.path, std::vector<LogQuery>{}, 0).records.empty());
}

TEST(LogStoreReader, FollowAcrossRotatedFilesWithTiesAtTheBoundary) {
  TempDir dir;
  std::string svc = dir.path + "/svc/";
  int64_t b = base_us();
  spit(svc + "a.log.3", rec(1, "out", "r3"));
  spit(svc + "a.log.2", rec(2, "out", "r2") + rec(5, "out", "r2-5"));
  spit(svc + "a.log.1", rec(5, "out", "r1-5") + rec(5, "out", "r1-5b"));
  spit(svc + "a.log", rec(5, "out", "c-5") + rec(6, "out", "c-6"));
  auto all = query(dir.path);
  EXPECT_EQ(texts(all), (std::vector<std::string>{"r3", "r2", "r2-5", "r1-5", "r1-5b", "c-5", "c-6"}));
  EXPECT_EQ(all.cursor, "a=" + std::to_string(b + 6) + ":1");
  auto at = [&](int us, int n) { return "a=" + std::to_string(b + us) + ":" + std::to_string(n); };
  EXPECT_EQ(texts(query(dir.path, at(2, 1))), (std::vector<std::string>{"r2-5", "r1-5", "r1-5b", "c-5", "c-6"}));
  EXPECT_EQ(texts(query(dir.path, at(5, 1))), (std::vector<std::string>{"r1-5", "r1-5b", "c-5", "c-6"}));
  EXPECT_EQ(texts(query(dir.path, at(5, 3))), (std::vector<std::string>{"c-5", "c-6"}));
  EXPECT_EQ(texts(query(dir.path, at(5, 4))), (std::vector<std::string>{"c-6"}));
  EXPECT_EQ(texts(query(dir.path, at(6, 1))), std::vector<std::string>{});
  EXPECT_EQ(query(dir.path, at(6, 1)).cursor, at(6, 1));
  // A cursor ahead of everything (clock stepped back, files replaced) stays where it is.
  EXPECT_EQ(query(dir.path, at(9, 1)).cursor, at(9, 1));
  // Corrupt or torn ends of rotated files do not break the skipping.
  spit(svc + "a.log.2", "junk\n", true);
  spit(svc + "a.log.1", "2026-12-02T08:3", true);
  EXPECT_EQ(texts(query(dir.path, at(5, 1))), (std::vector<std::string>{"r1-5", "r1-5b", "c-5", "c-6"}));
  EXPECT_EQ(texts(query(dir.path, at(5, 3))), (std::vector<std::string>{"c-5", "c-6"}));
}

TEST(LogStoreReader, CursorEscapesInstanceNames) {
  TempDir dir;
  std::string odd = "we;ird=na:me%";
  spit(dir.path + "/svc/" + odd + ".log", rec(1, "out", "x"));
  auto a = query(dir.path);
  ASSERT_EQ(a.records.size(), 1u);
  EXPECT_EQ(a.records[0].instance, odd);
  EXPECT_EQ(a.cursor.find(';'), std::string::npos);
  spit(dir.path + "/svc/" + odd + ".log", rec(1, "out", "y"), true);
  EXPECT_EQ(texts(query(dir.path, a.cursor)), (std::vector<std::string>{"y"}));
}

TEST(LogStoreReader, RefusesMalformedCursorsAndNames) {
  TempDir dir;
  spit(dir.path + "/svc/a.log", rec(1, "out", "x"));
  for (const char* bad : {"a", "a=1", "=1:2", "a=x:1", "a=1:y", "a=1:2;;b=1:1", "a b=1:1", "a=-1:1", "a%zz=1:1"})
    EXPECT_THROW(query(dir.path, bad), std::invalid_argument) << bad;
  EXPECT_NO_THROW(query(dir.path, "a=1:2;"));
  LogQuery q;
  for (const char* name : {"", ".", "..", "../svc", "a/b"}) {
    q.service = name;
    EXPECT_THROW(read_logs(dir.path, q), std::invalid_argument) << name;
  }
}

TEST(LogStoreReader, SkipsCorruptLines) {
  TempDir dir;
  std::string data = rec(1, "out", "one");
  data += "garbage\n\n";
  data += "2026-13-02T08:32:27.000000Z out bad month\n";
  data += "2026-02-30T08:32:27.000000Z out bad day\n";
  data += "2026-12-02T25:32:27.000000Z out bad hour\n";
  data += "2026-12-02T08:32:27.000000Z xxx bad stream\n";
  data += "2026-12-02T08:32:27.000000Zout no space\n";
  data += "2026-12-02T08:32:27.00000xZ out bad digit\n";
  data += "2026-12-02T08:32:27.000000Z outnospace\n";
  data += "2026-12-02T08:32:27.000000Z ou\n";
  data += std::string(300 * 1024, 'x') + "\n";       // longer than any record
  data += std::string(100 * 1024, 'y') + rec(2, "out", "glued to junk");
  data += rec(2, "out", "two");
  data += "2026-12-02T08:32:00.000003Z err\n";  // an empty text written without the space
  data += rec(4, "out", "");
  data += rec(5, "err", std::string("bin\0\xff", 5));
  data += "2026-12-02T08:32:00.000006Z out torn";  // no newline
  spit(dir.path + "/svc/a.log", data);
  auto a = query(dir.path);
  EXPECT_EQ(texts(a), (std::vector<std::string>{"one", "two", "", "", std::string("bin\0\xff", 5)}));
  EXPECT_EQ(a.records[2].stream, "err");
}

TEST(LogStoreReader, MissingServiceIsEmpty) {
  TempDir dir;
  auto a = query(dir.path);
  EXPECT_TRUE(a.records.empty());
  EXPECT_EQ(a.cursor, "");
  auto b = read_logs(dir.path + "/nowhere", LogQuery{"svc", 0, 0, ""});
  EXPECT_TRUE(b.records.empty());
}

TEST(LogStoreReader, RemoveInstanceLogs) {
  TempDir dir;
  std::string svc = dir.path + "/svc/";
  for (auto f : {"a.log", "a.log.1", "a.log.2", "a.log.7", "ab.log", "a.logx", "b.log", "a.log.x"}) spit(svc + f, "");
  remove_instance_logs(dir.path, "svc", "a");
  std::vector<std::string> left;
  for (auto& e : fs::directory_iterator(svc)) left.push_back(e.path().filename());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"a.log.x", "a.logx", "ab.log", "b.log"}));
  remove_instance_logs(dir.path, "svc", "gone");
  remove_instance_logs(dir.path, "nosvc", "a");
  EXPECT_THROW(remove_instance_logs(dir.path, "..", "a"), std::invalid_argument);
}

// A follower polling from another thread while two instances write and rotate on the loop gets
// every record exactly once, in each instance's order.
TEST(LogStoreFollow, ConcurrentFollowerSeesEveryRecordOnce) {
  TempDir dir;
  EventLoop loop;
  LogLimits limits{4096, 100};  // many rotations, none deleted
  Instance a(loop, dir.path, "a", limits), b(loop, dir.path, "b", limits);

  std::atomic<bool> stop{false};
  std::vector<LogRecord> seen;
  std::string cursor;
  int polls = 0;
  std::string error;
  std::thread follower([&] {
    try {
      for (bool last = false; !last;) {
        last = stop.load();
        auto ans = query(dir.path, cursor);
        for (auto& r : ans.records) seen.push_back(std::move(r));
        cursor = ans.cursor;
        ++polls;
      }
    } catch (const std::exception& e) {
      error = e.what();
    }
  });

  std::map<std::string, std::vector<std::string>> written;  // instance/stream -> texts
  for (int round = 0; round < 1000; ++round) {
    for (Instance* in : {&a, &b}) {
      std::string name = in == &a ? "a" : "b";
      std::string out, err;
      for (int i = 0; i < 5; ++i) {
        std::string t = name + "-out-" + std::to_string(round) + "-" + std::to_string(i);
        out += t + "\n";
        written[name + "/out"].push_back(t);
      }
      std::string t = name + "-err-" + std::to_string(round);
      err += t + "\n";
      written[name + "/err"].push_back(t);
      in->out.put(out);
      in->err.put(err);
    }
    ASSERT_TRUE(run_for(loop, [&] { return a.drained() && b.drained(); }));
  }
  a.close();
  b.close();
  ASSERT_TRUE(run_for(loop, [&] { return a.log->finished() && b.log->finished(); }));
  stop = true;
  follower.join();
  ASSERT_EQ(error, "");
  EXPECT_GT(polls, 1);

  std::map<std::string, std::vector<std::string>> got;
  std::map<std::string, std::vector<std::string>> got_by_instance;
  for (const auto& r : seen) {
    got[r.instance + "/" + r.stream].push_back(r.text);
    got_by_instance[r.instance].push_back(r.text);
  }
  EXPECT_EQ(got, written);
  // Each instance's records came in file order.
  auto all = query(dir.path);
  std::map<std::string, std::vector<std::string>> file_order;
  for (const auto& r : all.records) file_order[r.instance].push_back(r.text);
  EXPECT_EQ(got_by_instance, file_order);
  EXPECT_GT(std::distance(fs::directory_iterator(dir.path + "/svc"), fs::directory_iterator()), 10);
}

}  // namespace
}  // namespace flotilla::supervisor
