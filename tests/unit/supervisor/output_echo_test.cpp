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
  Pipe p;
  const std::string text(1000, 'x');
  uint64_t dropped = 0;
  {
    OutputEcho echo(p.w, false);
    for (int i = 0; i < 2000; ++i) echo.line("web-1", text);  // 2 MB against a stalled reader
    dropped = echo.dropped();
    ASSERT_GT(dropped, 0u);
    // Read every line that was kept: then the output has caught up.
    const uint64_t kept = 2000 - dropped;
    uint64_t lines = 0;
    char buf[65536];
    while (lines < kept) {
      ssize_t n = ::read(p.r, buf, sizeof buf);
      ASSERT_GT(n, 0);
      for (ssize_t i = 0; i < n; ++i) lines += buf[i] == '\n';
    }
    echo.line("web-1", "after the gap");
  }
  EXPECT_EQ(p.read_all(), "(flotilla: " + std::to_string(dropped) +
                              " lines of the services' output not shown here: the terminal fell behind; flotilla "
                              "logs has them)\nweb-1 | after the gap\n");
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
