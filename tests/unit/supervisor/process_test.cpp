// Real processes under the real shim (the flotilla binary, FLOTILLA_BIN_PATH). Every wait is
// bounded, and the fixture kills and reaps whatever a test leaves behind, even when it fails:
// the test process is a child subreaper meanwhile, so orphans come back to it.
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/event_loop.h"
#include "supervisor/cgroup.h"
#include "supervisor/process.h"

namespace flotilla::supervisor {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

LaunchSpec command(std::vector<std::string> argv, std::vector<std::string> env = {"PATH=/usr/bin:/bin"}) {
  LaunchSpec spec;
  spec.argv = std::move(argv);
  spec.working_dir = "/";
  spec.env = std::move(env);
  spec.shim_binary = FLOTILLA_BIN_PATH;
  return spec;
}

LaunchSpec shell(const std::string& script) { return command({"sh", "-c", script}); }

struct Read {
  std::string text;
  bool eof = false;
};

// Reads a non-blocking fd until `needle` shows up (empty: until EOF), EOF or the deadline.
Read read_until(int fd, const std::string& needle, milliseconds limit = 5000ms) {
  Read r;
  const auto deadline = Clock::now() + limit;
  while (needle.empty() || r.text.find(needle) == std::string::npos) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left));
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      r.text.append(buf, static_cast<size_t>(n));
    } else if (n == 0) {
      r.eof = true;
      break;
    } else if (errno != EAGAIN && errno != EINTR) {
      break;
    }
  }
  return r;
}

// The wait status of pid once it exited, polling up to `limit`.
std::optional<int> wait_exit(pid_t pid, milliseconds limit = 5000ms) {
  const auto deadline = Clock::now() + limit;
  for (;;) {
    int st = 0;
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0 && errno != EINTR) return std::nullopt;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(2ms);
  }
}

// Running and not a zombie.
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z';
}

bool gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// "key 123" in text -> 123; -1 when absent.
pid_t field(const std::string& text, const std::string& key) {
  auto pos = text.find(key + " ");
  if (pos == std::string::npos) return -1;
  return static_cast<pid_t>(std::atol(text.c_str() + pos + key.size() + 1));
}

// Reports "bg <pid>" (a background child in the service's group) and "daemon <pid>" (setsid'd,
// its parent gone: an orphan in its own session), then `rest`.
std::string tree_script(const std::string& rest) {
  return "sleep 300 & echo bg $!\n"
         "( setsid sleep 300 & echo daemon $! )\n" +
         rest;
}

class ProcessTest : public ::testing::Test {
 protected:
  void SetUp() override { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }

  void TearDown() override {
    for (auto& s : spawned_) {
      if (s.shim > 0) kill_instance(s.shim);
      if (s.stdout_fd >= 0) ::close(s.stdout_fd);
      if (s.stderr_fd >= 0) ::close(s.stderr_fd);
    }
    // Whatever is left below us (shims, orphans re-parented to us): SIGKILL and reap, bounded.
    const auto deadline = Clock::now() + 5s;
    for (;;) {
      while (::waitpid(-1, nullptr, WNOHANG) > 0) {
      }
      auto left = descendants_of(::getpid());
      if (left.empty() || Clock::now() >= deadline) {
        EXPECT_TRUE(left.empty()) << left.size() << " processes could not be reaped";
        break;
      }
      for (pid_t p : left) ::kill(p, SIGKILL);
      std::this_thread::sleep_for(5ms);
    }
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
  }

  // The fixture cleans up what start() returned; wait() marks a shim reaped so that cleanup never
  // signals a recycled pid.
  Spawned& start(const LaunchSpec& spec) { return spawned_.emplace_back(spawn(spec)); }

  std::optional<ExitStatus> wait(Spawned& s, milliseconds limit = 5000ms) {
    auto st = wait_exit(s.shim, limit);
    if (!st) return std::nullopt;
    s.shim = -1;
    return decode_wait_status(*st);
  }

  std::deque<Spawned> spawned_;
};

TEST_F(ProcessTest, OutputReachesThePipesAndTheShimExitsZero) {
  auto& s = start(shell("echo hi; echo err >&2"));
  EXPECT_GT(s.pid, 0);
  EXPECT_NE(s.pid, s.shim);
  EXPECT_EQ(::fcntl(s.stdout_fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
  EXPECT_EQ(::fcntl(s.stdout_fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  auto out = read_until(s.stdout_fd, "");
  auto err = read_until(s.stderr_fd, "");
  EXPECT_EQ(out.text, "hi\n");
  EXPECT_TRUE(out.eof);
  EXPECT_EQ(err.text, "err\n");
  EXPECT_TRUE(err.eof);
  auto st = wait(s);
  ASSERT_TRUE(st);
  EXPECT_FALSE(st->signaled);
  EXPECT_EQ(st->code, 0);
}

TEST_F(ProcessTest, ExitCodeIsPropagated) {
  auto& s = start(shell("exit 3"));
  auto st = wait(s);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->describe(), "exited with code 3");
}

TEST_F(ProcessTest, DeathBySignalIsPropagated) {
  auto& killed = start(shell("kill -9 $$"));
  auto& termed = start(shell("kill -TERM $$"));
  auto st = wait(killed);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->describe(), "killed by SIGKILL");
  st = wait(termed);
  ASSERT_TRUE(st);
  EXPECT_TRUE(st->signaled);
  EXPECT_EQ(st->signal, SIGTERM);
}

TEST_F(ProcessTest, UnknownProgramThrowsAndLeavesNoZombie) {
  try {
    spawn(command({"flotilla-no-such-program"}));
    ADD_FAILURE() << "spawn did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "cannot run flotilla-no-such-program: No such file or directory");
  }
  EXPECT_TRUE(descendants_of(::getpid()).empty());
}

TEST_F(ProcessTest, BadWorkingDirThrowsNamingIt) {
  auto spec = shell("echo never");
  spec.working_dir = "/nonexistent/flotilla-dir";
  try {
    spawn(spec);
    ADD_FAILURE() << "spawn did not throw";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "working_dir /nonexistent/flotilla-dir: No such file or directory");
  }
  EXPECT_TRUE(descendants_of(::getpid()).empty());
}

TEST_F(ProcessTest, MissingShimOrCgroupThrowsCleanly) {
  auto spec = shell("echo never");
  spec.shim_binary = "/nonexistent/flotilla";
  EXPECT_THROW(
      {
        try {
          spawn(spec);
        } catch (const std::runtime_error& e) {
          EXPECT_EQ(std::string(e.what()), "cannot run the shim /nonexistent/flotilla: No such file or directory");
          throw;
        }
      },
      std::runtime_error);
  spec = shell("echo never");
  spec.cgroup = "/nonexistent/cgroup";
  EXPECT_THROW(
      {
        try {
          spawn(spec);
        } catch (const std::runtime_error& e) {
          EXPECT_EQ(std::string(e.what()), "cannot join cgroup /nonexistent/cgroup: No such file or directory");
          throw;
        }
      },
      std::runtime_error);
  EXPECT_THROW(spawn(command({})), std::runtime_error);
  EXPECT_TRUE(descendants_of(::getpid()).empty());
}

TEST_F(ProcessTest, WorkingDirAndStdinAreSet) {
  auto spec = shell("pwd; cat; echo end");
  spec.working_dir = "/usr";
  auto& s = start(spec);
  auto out = read_until(s.stdout_fd, "");
  EXPECT_EQ(out.text, "/usr\nend\n");  // stdin is /dev/null: cat ends at once
  auto st = wait(s);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->code, 0);
}

TEST_F(ProcessTest, EnvironmentIsExactlyTheSpecs) {
  ::setenv("FLOTILLA_TEST_LEAK", "from-the-test", 1);
  auto& s = start(command({"env"}, {"PORT=1234", "PATH=/usr/bin:/bin"}));
  auto out = read_until(s.stdout_fd, "");
  ::unsetenv("FLOTILLA_TEST_LEAK");
  std::vector<std::string> lines;
  std::istringstream in(out.text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines, (std::vector<std::string>{"PATH=/usr/bin:/bin", "PORT=1234"}));
  ASSERT_TRUE(wait(s));
}

// Nothing of the agent's process state leaks into the service: ignored signals (servers ignore
// SIGPIPE), the signal mask, fds opened without O_CLOEXEC.
TEST_F(ProcessTest, TheServiceStartsClean) {
  struct sigaction ignore {}, old_pipe {};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &old_pipe);
  sigset_t usr1, old_mask;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask);
  int leaked = ::open("/dev/null", O_RDONLY);  // no O_CLOEXEC
  auto& s = start(shell("grep -E '^Sig(Blk|Ign)' /proc/self/status; ls /proc/self/fd | tr '\\n' ' '"));
  ::close(leaked);
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);
  auto out = read_until(s.stdout_fd, "");
  EXPECT_EQ(out.text, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n0 1 2 3 ");  // 3: ls's own
  ASSERT_TRUE(wait(s));
}

TEST_F(ProcessTest, ProgramIsLookedUpInTheInstancesPath) {
  char tmpl[] = "/tmp/flotilla-path-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  std::string program = dir + "/flotilla-hello";
  {
    std::ofstream f(program);
    f << "#!/bin/sh\necho hello from $0\n";
  }
  ::chmod(program.c_str(), 0755);
  auto& s = start(command({"flotilla-hello"}, {"PATH=" + dir + ":/usr/bin:/bin"}));
  auto out = read_until(s.stdout_fd, "");
  EXPECT_EQ(out.text, "hello from " + program + "\n");
  ASSERT_TRUE(wait(s));
  std::filesystem::remove_all(dir);
}

TEST_F(ProcessTest, SignalInstanceReachesTheService) {
  auto& s = start(shell("trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.05; done"));
  ASSERT_NE(read_until(s.stdout_fd, "ready\n").text.find("ready"), std::string::npos);
  signal_instance(s.shim, SIGTERM);
  auto out = read_until(s.stdout_fd, "");
  EXPECT_EQ(out.text, "got TERM\n");
  auto st = wait(s);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->describe(), "exited with code 0");
}

TEST_F(ProcessTest, LeftoversDieWithTheMainProcess) {
  auto& s = start(shell(tree_script("exit 0")));
  auto out = read_until(s.stdout_fd, "");  // EOF only once every holder of the pipe is dead
  EXPECT_TRUE(out.eof);
  pid_t bg = field(out.text, "bg");
  pid_t daemon = field(out.text, "daemon");
  ASSERT_GT(bg, 0) << out.text;
  ASSERT_GT(daemon, 0) << out.text;
  auto st = wait(s);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->describe(), "exited with code 0");
  // The shim reaped them before it exited.
  EXPECT_TRUE(gone(bg));
  EXPECT_TRUE(gone(daemon));
}

TEST_F(ProcessTest, KillInstanceKillsTheTree) {
  auto& s = start(shell(tree_script("echo ready; wait")));
  auto out = read_until(s.stdout_fd, "ready\n");
  pid_t bg = field(out.text, "bg");
  pid_t daemon = field(out.text, "daemon");
  ASSERT_GT(bg, 0) << out.text;
  ASSERT_GT(daemon, 0) << out.text;
  EXPECT_TRUE(alive(bg));
  EXPECT_TRUE(alive(daemon));
  auto tree = descendants_of(s.shim);
  for (pid_t p : {s.pid, bg, daemon}) EXPECT_NE(std::find(tree.begin(), tree.end(), p), tree.end()) << p;

  kill_instance(s.shim);
  auto st = wait(s);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->describe(), "killed by SIGKILL");
  EXPECT_TRUE(read_until(s.stdout_fd, "").eof);
  EXPECT_TRUE(gone(s.pid));
  EXPECT_TRUE(gone(bg));
  EXPECT_TRUE(gone(daemon));
}

TEST_F(ProcessTest, SigkillAsStopSignalStillCleansUp) {
  auto& s = start(shell(tree_script("echo ready; wait")));
  auto out = read_until(s.stdout_fd, "ready\n");
  pid_t bg = field(out.text, "bg");
  ASSERT_GT(bg, 0) << out.text;
  signal_instance(s.shim, SIGKILL);
  auto st = wait(s);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->describe(), "killed by SIGKILL");
  EXPECT_TRUE(gone(bg));
}

// The agent killed with -9: an intermediate process plays the agent, spawns, and _exit()s without
// any cleanup. The shim's PDEATHSIG must take the whole tree down.
TEST_F(ProcessTest, TheTreeDiesWithTheAgent) {
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  pid_t agent = ::fork();
  ASSERT_GE(agent, 0);
  if (agent == 0) {
    ::close(report[0]);
    try {
      Spawned s = spawn(shell(tree_script("echo main $$; echo ready; wait")));
      auto out = read_until(s.stdout_fd, "ready\n");
      std::string text = "shim " + std::to_string(s.shim) + "\n" + out.text;
      ssize_t ignored = ::write(report[1], text.data(), text.size());
      (void)ignored;
    } catch (...) {
    }
    ::_exit(0);
  }
  ::close(report[1]);
  int flags = ::fcntl(report[0], F_GETFL);
  ::fcntl(report[0], F_SETFL, flags | O_NONBLOCK);
  auto out = read_until(report[0], "");
  ::close(report[0]);
  auto agent_status = wait_exit(agent);
  ASSERT_TRUE(agent_status);
  pid_t shim = field(out.text, "shim");
  pid_t main_pid = field(out.text, "main");
  pid_t bg = field(out.text, "bg");
  pid_t daemon = field(out.text, "daemon");
  ASSERT_GT(shim, 0) << out.text;
  ASSERT_GT(main_pid, 0) << out.text;
  ASSERT_GT(bg, 0) << out.text;
  ASSERT_GT(daemon, 0) << out.text;

  // The orphaned shim comes back to us (we are a subreaper): it must die of SIGKILL on its own.
  auto st = wait_exit(shim);
  ASSERT_TRUE(st) << "the shim outlived its agent";
  EXPECT_EQ(decode_wait_status(*st).describe(), "killed by SIGKILL");
  for (pid_t p : {main_pid, bg, daemon}) EXPECT_TRUE(gone(p)) << p;
}

TEST_F(ProcessTest, SampleUsageSeesTheTree) {
  auto& s = start(shell("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo busy-done; exec sleep 300"));
  ASSERT_NE(read_until(s.stdout_fd, "busy-done\n").text.find("busy-done"), std::string::npos);
  Usage main = sample_usage(s.pid);
  EXPECT_EQ(main.processes, 1);
  EXPECT_GT(main.rss_bytes, 0u);
  EXPECT_GT(main.cpu_seconds, 0.0);
  Usage all = sample_usage(s.shim);
  EXPECT_EQ(all.processes, 2);
  EXPECT_GT(all.rss_bytes, main.rss_bytes);
  EXPECT_GE(all.cpu_seconds, main.cpu_seconds);
  EXPECT_EQ(sample_usage(-1).processes, 0);
  // The batch form: one entry per root, in order; none for none.
  auto both = sample_usage(std::vector<pid_t>{s.shim, -1, s.pid});
  ASSERT_EQ(both.size(), 3u);
  EXPECT_EQ(both[0].processes, 2);
  EXPECT_EQ(both[1].processes, 0);
  EXPECT_EQ(both[2].processes, 1);
  EXPECT_TRUE(sample_usage(std::vector<pid_t>{}).empty());
}

TEST_F(ProcessTest, ReaperReportsExitsOnTheLoop) {
  EventLoop loop;
  std::map<pid_t, ExitStatus> exits;
  Reaper reaper(loop, [&](pid_t pid, ExitStatus st) { exits[pid] = st; });
  struct sigaction sa {};
  ::sigaction(SIGCHLD, nullptr, &sa);
  EXPECT_TRUE(sa.sa_flags & SA_RESTART);

  auto& a = start(shell("exit 7"));
  auto& b = start(shell("kill -TERM $$"));
  pid_t shim_a = a.shim, shim_b = b.shim;
  bool timed_out = false;
  Timer timer(loop);
  timer.arm(std::chrono::seconds(5), [&] { timed_out = true; });
  loop.run_until([&] { return timed_out || (exits.count(shim_a) && exits.count(shim_b)); });
  ASSERT_FALSE(timed_out);
  a.shim = b.shim = -1;  // reaped
  EXPECT_EQ(exits[shim_a].describe(), "exited with code 7");
  EXPECT_EQ(exits[shim_b].describe(), "killed by SIGTERM");
}

TEST(ProcessSignalNames, BothWays) {
  EXPECT_EQ(signal_number("SIGTERM"), SIGTERM);
  EXPECT_EQ(signal_number("TERM"), SIGTERM);
  EXPECT_EQ(signal_number("sigterm"), SIGTERM);
  EXPECT_EQ(signal_number("15"), SIGTERM);
  EXPECT_EQ(signal_number("SIGKILL"), SIGKILL);
  EXPECT_EQ(signal_number("HUP"), SIGHUP);
  EXPECT_EQ(signal_number("SIGWINCH"), SIGWINCH);
  EXPECT_EQ(signal_number("SIGRTMIN+2"), SIGRTMIN + 2);
  EXPECT_EQ(signal_number("bogus"), 0);
  EXPECT_EQ(signal_number("0"), 0);
  EXPECT_EQ(signal_number("999"), 0);
  EXPECT_EQ(signal_number(""), 0);
  for (int sig : {SIGHUP, SIGINT, SIGQUIT, SIGKILL, SIGUSR1, SIGUSR2, SIGTERM, SIGWINCH, SIGCONT, SIGSTOP}) {
    EXPECT_EQ(signal_number(signal_name(sig)), sig) << signal_name(sig);
  }
  EXPECT_EQ(signal_name(SIGKILL), "SIGKILL");
  EXPECT_EQ(signal_name(SIGRTMIN + 1), "SIGRTMIN+1");
  EXPECT_EQ(ExitStatus{.code = 1}.describe(), "exited with code 1");
  EXPECT_EQ((ExitStatus{.signal = SIGKILL, .signaled = true}).describe(), "killed by SIGKILL");
}

// ---------------------------------------------------------------------------------------------

TEST(CgroupTest, Values) {
  EXPECT_EQ(cpu_max_value(0.5), "50000 100000");
  EXPECT_EQ(cpu_max_value(2), "200000 100000");
  EXPECT_EQ(cpu_max_value(0.001), "1000 100000");
  EXPECT_EQ(cpu_max_value(0), "max");
  EXPECT_EQ(cgroup_v2_path("12:memory:/x\n0::/system.slice/flotilla.service\n"), "/system.slice/flotilla.service");
  EXPECT_EQ(cgroup_v2_path("0::/\n"), "/");
  EXPECT_EQ(cgroup_v2_path("4:memory:/x\n"), "");
}

TEST(CgroupTest, AvailabilityIsDecidedWithAReason) {
  std::string why_not;
  bool available = cgroup_v2_available(why_not);
  if (!available) {
    EXPECT_FALSE(why_not.empty());
  }
}

// A cgroup2 hierarchy that is mounted somewhere (the unified one of a hybrid set-up counts), for
// the parts that need no controllers: joining, cgroup.kill, removal.
std::string writable_cgroup2_dir() {
  std::ifstream in("/proc/self/mountinfo");
  std::string mount;
  for (std::string line; std::getline(in, line);) {
    auto dash = line.find(" - cgroup2 ");
    if (dash == std::string::npos) continue;
    std::istringstream fields(line);
    std::string id, parent, dev, root, point;
    fields >> id >> parent >> dev >> root >> point;
    mount = point;
    break;
  }
  if (mount.empty()) return {};
  std::ifstream self("/proc/self/cgroup");
  std::string text((std::istreambuf_iterator<char>(self)), std::istreambuf_iterator<char>());
  std::string own = cgroup_v2_path(text);
  if (own.empty()) return {};
  std::string dir = (own == "/" ? mount : mount + own) + "/flotilla-test-" + std::to_string(::getpid());
  try {
    cgroup_create(dir, {});
  } catch (const std::exception&) {
    return {};
  }
  return dir;
}

class CgroupInstanceTest : public ProcessTest {};

TEST_F(CgroupInstanceTest, CgroupInstanceRunsAndIsKilledInItsCgroup) {
  std::string dir = writable_cgroup2_dir();
  if (dir.empty()) {
    GTEST_SKIP() << "no writable cgroup v2 hierarchy here";
  }
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      cgroup_kill(dir);
      const auto deadline = Clock::now() + 5s;
      while (!cgroup_remove(dir) && Clock::now() < deadline) {
        while (::waitpid(-1, nullptr, WNOHANG) > 0) {
        }
        std::this_thread::sleep_for(5ms);
      }
    }
  } cleanup{dir};

  auto spec = shell("sleep 300 & echo ready; wait");
  spec.cgroup = dir;
  auto& s = start(spec);
  ASSERT_NE(read_until(s.stdout_fd, "ready\n").text.find("ready"), std::string::npos);
  auto pids = cgroup_pids(dir);
  EXPECT_EQ(pids.size(), 3u);  // shim, sh, sleep
  for (pid_t p : {s.shim, s.pid}) EXPECT_NE(std::find(pids.begin(), pids.end(), p), pids.end()) << p;

  kill_instance(s.shim, dir);
  auto st = wait(s);
  ASSERT_TRUE(st);
  EXPECT_EQ(st->describe(), "killed by SIGKILL");
  const auto deadline = Clock::now() + 5s;
  while (!cgroup_pids(dir).empty() && Clock::now() < deadline) {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    std::this_thread::sleep_for(5ms);
  }
  EXPECT_TRUE(cgroup_pids(dir).empty());
}

}  // namespace
}  // namespace flotilla::supervisor
