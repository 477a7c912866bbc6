#include "supervisor/output_echo.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

namespace flotilla::supervisor {
namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    if (r >= 0) ::close(r);
    if (w >= 0) ::close(w);
  }
  std::string read_all() {  // after the writer is gone
    ::close(w);
    w = -1;
    std::string out;
    char buf[65536];
    for (ssize_t n; (n = ::read(r, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
    return out;
  }
};

TEST(OutputEcho, PrefixesLinesWithTheirInstancePaddedToTheLongest) {
  Pipe p;
  {
    OutputEcho echo(p.w, false);
    echo.line("web-1", "hello");
    echo.line("worker-22", "busy");
    echo.line("web-1", "again");
  }
  // The first line is written before the longer name is seen; later ones line up with it.
  EXPECT_EQ(p.read_all(), "web-1 | hello\nworker-22 | busy\nweb-1     | again\n");
}

TEST(OutputEcho, ColoursEachInstanceOnATerminal) {
  Pipe p;
  {
    OutputEcho echo(p.w, true);
    echo.line("a", "x");
    echo.line("b", "y");
  }
  EXPECT_EQ(p.read_all(), "\033[36ma | \033[0mx\n\033[33mb | \033[0my\n");
}

TEST(OutputEcho, AStalledOutputDropsLinesAndNeverBlocks) {
  Pipe p;  // nobody reads it: it fills (64 KiB), then every write would block
  const std::string text(1000, 'x');
  uint64_t dropped = 0;
  {
    OutputEcho echo(p.w, false);
    for (int i = 0; i < 5000; ++i) echo.line("web-1", text);  // 5 MB: far past what may wait
    dropped = echo.dropped();
  }  // the destructor gives up on the stalled output (about a second): a hang fails by timeout
  // Kept: 1 MiB waiting, plus at most 1 MiB the writer took before it stalled, plus the pipe's
  // 64 KiB; about 2 150 lines of 1 KB. The rest is dropped.
  EXPECT_GT(dropped, 2500u);
}

TEST(OutputEcho, TheNoteAboutDroppedLinesStandsWhereTheyAreMissing) {
  // Numbered lines against a stalled reader: wherever lines are dropped (the writer may take a
  // batch in the middle, so there can be several gaps), a note saying how many stands in their
  // place, and the counts add up.
  Pipe p;
  const int total = 2000;
  uint64_t dropped = 0;
  std::string out;
  {
    OutputEcho echo(p.w, false);
    for (int i = 0; i < total; ++i) echo.line("web-1", std::to_string(i) + " " + std::string(1000, 'x'));
    dropped = echo.dropped();
    ASSERT_GT(dropped, 0u);
    // Read until every kept line is out: then the output has caught up.
    const uint64_t kept = total - dropped;
    auto numbered = [&] {
      uint64_t n = 0;
      for (size_t at = 0; (at = out.find("web-1 | ", at)) != std::string::npos; at += 8) ++n;
      return n;
    };
    char buf[65536];
    while (numbered() < kept) {
      ssize_t n = ::read(p.r, buf, sizeof buf);
      ASSERT_GT(n, 0);
      out.append(buf, static_cast<size_t>(n));
    }
    echo.line("web-1", "after the gap");
  }
  out += p.read_all();
  ASSERT_FALSE(out.empty());
  ASSERT_EQ(out.back(), '\n');
  int next = 0;  // the number the next line should carry, counting dropped lines as seen
  uint64_t noted = 0;
  bool note_before = false;
  size_t at = 0;
  for (size_t nl; (nl = out.find('\n', at)) != std::string::npos; at = nl + 1) {
    const std::string l = out.substr(at, nl - at);
    const std::string note_start = "(flotilla: ";
    if (l.rfind(note_start, 0) == 0) {
      const size_t space = l.find(' ', note_start.size());
      ASSERT_NE(space, std::string::npos) << l;
      const int n = std::stoi(l.substr(note_start.size(), space - note_start.size()));
      EXPECT_EQ(l.substr(space), " lines of the services' output not shown here: the terminal fell behind; "
                                 "flotilla logs has them)")
          << l;
      EXPECT_GT(n, 0);
      EXPECT_FALSE(note_before) << "two notes in a row";
      next += n;
      noted += static_cast<uint64_t>(n);
      note_before = true;
      continue;
    }
    ASSERT_EQ(l.rfind("web-1 | ", 0), 0u) << l;
    const std::string text = l.substr(8);
    if (text == "after the gap") {
      EXPECT_EQ(next, total) << "the note about the last gap stands before the next line";
      EXPECT_EQ(nl + 1, out.size()) << "the last line";
      break;
    }
    EXPECT_EQ(std::stoi(text.substr(0, text.find(' '))), next) << "a missing line without a note";
    ++next;
    note_before = false;
  }
  EXPECT_EQ(noted, dropped);
}

TEST(OutputEcho, AClosedOutputIsNotFatal) {
  Pipe p;
  ::close(p.r);  // writes now fail with EPIPE: SIGPIPE must not end the process
  p.r = -1;
  {
    OutputEcho echo(p.w, false);
    echo.line("web-1", "nobody reads this");
  }
  SUCCEED();
}

}  // namespace
}  // namespace flotilla::supervisor
