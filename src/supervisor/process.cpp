// The agent's side of process.h: spawning shims, signalling them, reaping, reading /proc.
// The shim's side is shim.cpp.
#include "supervisor/process.h"
#include "supervisor/proc_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/event_loop.h"
#include "common/unique_fd.h"
#include "supervisor/cgroup.h"

namespace flotilla::supervisor {

bool read_small_file(const std::string& path, std::string& out) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  out.clear();
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return true;
}

std::vector<pid_t> parse_pids(const std::string& text) {
  std::vector<pid_t> pids;
  const char* p = text.c_str();
  char* end = nullptr;
  for (;;) {
    long v = std::strtol(p, &end, 10);
    if (end == p) break;
    if (v > 0) pids.push_back(static_cast<pid_t>(v));
    p = end;
  }
  return pids;
}

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kReportDeadline{10'000};  // fork + exec of the shim, fork + exec of the service

struct Pipe {
  UniqueFd r, w;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  Pipe p;
  p.r = UniqueFd(fds[0]);
  p.w = UniqueFd(fds[1]);
  return p;
}

// A NULL-terminated char* array over strings that outlive it.
class CStrings {
 public:
  explicit CStrings(const std::vector<std::string>& strings) {
    ptrs_.reserve(strings.size() + 1);
    for (const auto& s : strings) ptrs_.push_back(const_cast<char*>(s.c_str()));
    ptrs_.push_back(nullptr);
  }
  char* const* get() const { return ptrs_.data(); }

 private:
  std::vector<char*> ptrs_;
};

// Everything the forked child needs, prepared before fork(): between fork() and exec() in a
// multi-threaded process only async-signal-safe calls are allowed (no malloc, no strerror).
struct ChildPlan {
  const char* shim = nullptr;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  const char* cgroup_procs = nullptr;  // nullptr: stay in the agent's cgroup
  const char* cgroup_what = nullptr;
  const char* exec_what = nullptr;
  int devnull = -1, out_w = -1, err_w = -1, status_w = -1;
};

void write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<size_t>(w);
  }
}

// "errno <n> <what>\n" on the status pipe; the agent turns it into "<what>: <strerror(n)>".
[[noreturn]] void child_fail(int report_fd, int err, const char* what) {
  char buf[32] = "errno ";
  size_t len = 6;
  char digits[12];
  int nd = 0;
  unsigned v = static_cast<unsigned>(err);
  do {
    digits[nd++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0 && nd < 11);
  while (nd > 0) buf[len++] = digits[--nd];
  buf[len++] = ' ';
  write_all(report_fd, buf, len);
  write_all(report_fd, what, std::strlen(what));
  write_all(report_fd, "\n", 1);
  ::_exit(127);
}

[[noreturn]] void exec_shim(const ChildPlan& p) {
  int report = p.status_w;
  // Handlers are reset by exec anyway, but ignored signals (SIGPIPE in many servers) would be
  // inherited by the service. The mask stays full (the parent blocked everything around fork):
  // the shim starts with every signal blocked, so a signal sent before it is ready is queued
  // for its sigwaitinfo loop instead of killing it.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int s = 1; s < NSIG; ++s) {
    if (s == SIGKILL || s == SIGSTOP) continue;
    if (::sigaction(s, &dfl, nullptr) != 0) {
      // glibc refuses the two real-time signals it keeps for itself (32, 33), but an ignored one
      // is inherited all the same (seen when the agent's parent ignored them): the kernel's call
      // resets it. Its sigaction struct: handler, flags, restorer, mask (8 bytes).
      struct {
        void* handler;
        unsigned long flags;
        void* restorer;
        unsigned long mask;
      } k{reinterpret_cast<void*>(SIG_DFL), 0, nullptr, 0};
      ::syscall(SYS_rt_sigaction, s, &k, nullptr, sizeof k.mask);
    }
  }
  // Its own process group: a Ctrl-C on the terminal of `flotilla up` reaches the agent, which
  // stops instances in order, instead of every service at once.
  if (::setpgid(0, 0) < 0) child_fail(report, errno, "setpgid");
  // First above 10, then onto 0..3: a source fd can never be clobbered by an earlier dup2.
  const int sources[4] = {p.devnull, p.out_w, p.err_w, p.status_w};
  int high[4];
  for (int i = 0; i < 4; ++i) {
    high[i] = ::fcntl(sources[i], F_DUPFD_CLOEXEC, 10);
    if (high[i] < 0) child_fail(report, errno, "dup");
  }
  report = high[3];
  for (int i = 0; i < 4; ++i) {
    if (::dup2(high[i], i) < 0) child_fail(report, errno, "dup2");
  }
  report = 3;
  // Nothing else leaks into the instance, even fds some library opened without O_CLOEXEC.
  if (::close_range(4, ~0U, 0) < 0) {
    struct rlimit rl {};
    int max = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 65536 ? static_cast<int>(rl.rlim_cur) : 65536;
    for (int fd = 4; fd < max; ++fd) ::close(fd);
  }
  if (p.cgroup_procs != nullptr) {
    // Joining before exec makes the placement race-free: the shim and everything it forks
    // start inside the cgroup. "0" means the writing process.
    int fd = ::open(p.cgroup_procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0) child_fail(report, errno, p.cgroup_what);
    if (::write(fd, "0\n", 2) != 2) child_fail(report, errno, p.cgroup_what);
    ::close(fd);
  }
  ::execve(p.shim, p.argv, p.envp);
  child_fail(report, errno, p.exec_what);
}

// Reads the shim's one-line report. False when nothing complete arrived before the deadline.
bool read_report(int fd, std::string& out, milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  char buf[512];
  while (out.find('\n') == std::string::npos && out.size() < 4096) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd pfd{fd, POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return false;
    if (r < 0) return true;
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return true;  // EOF: the report (if any) is complete
    out.append(buf, static_cast<size_t>(n));
  }
  return true;
}

// Reaps pid, waiting at most `limit` before SIGKILLing it. Returns the wait status, or -1 when
// someone else (a Reaper on another thread) reaped it first.
int reap_within(pid_t pid, milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  auto nap = std::chrono::microseconds(200);
  bool killed = false;
  for (;;) {
    const bool late = Clock::now() >= deadline;
    if (late && !killed) {
      ::kill(pid, SIGKILL);
      killed = true;
    }
    int st = 0;
    pid_t r = ::waitpid(pid, &st, late ? 0 : WNOHANG);
    if (r == pid) return st;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(20'000));
  }
}

std::string failure_message(const std::string& report, int wait_status, const LaunchSpec& spec) {
  std::string line = report.substr(0, report.find('\n'));
  if (line.rfind("error ", 0) == 0) return line.substr(6);
  if (line.rfind("errno ", 0) == 0) {
    char* end = nullptr;
    long err = std::strtol(line.c_str() + 6, &end, 10);
    std::string what = *end == ' ' ? std::string(end + 1) : line;
    return what + ": " + std::strerror(static_cast<int>(err));
  }
  std::string how = wait_status == -1 ? "it was reaped elsewhere" : decode_wait_status(wait_status).describe();
  return "cannot run " + spec.argv[0] + ": the shim " + spec.shim_binary + " ended without reporting (" + how + ")";
}

struct ProcStat {
  pid_t ppid = 0;
  char state = 0;
  unsigned long long utime = 0, stime = 0;
  long long cutime = 0, cstime = 0;
  unsigned long long starttime = 0;  // clock ticks after boot
};

bool read_stat(pid_t pid, ProcStat& st) {
  std::string text;
  if (!read_small_file("/proc/" + std::to_string(pid) + "/stat", text)) return false;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so parse after the last ')'.
  auto close = text.rfind(')');
  if (close == std::string::npos) return false;
  int n = std::sscanf(text.c_str() + close + 1,
                      " %c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld %*d %*d %*d %*d %llu", &st.state,
                      &st.ppid, &st.utime, &st.stime, &st.cutime, &st.cstime, &st.starttime);
  return n == 7;
}

bool have_children_files() {
  static const bool yes = ::access("/proc/thread-self/children", R_OK) == 0;
  return yes;
}

template <typename Fn>
void for_each_numeric_entry(const std::string& dir, Fn fn) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long v = std::strtol(e->d_name, &end, 10);
    if (v > 0 && *end == '\0') fn(static_cast<pid_t>(v));
  }
  ::closedir(d);
}

std::vector<pid_t> children_from_files(pid_t pid) {
  std::vector<pid_t> out;
  std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  std::string text;
  for_each_numeric_entry(task_dir, [&](pid_t tid) {
    if (read_small_file(task_dir + "/" + std::to_string(tid) + "/children", text)) {
      for (pid_t c : parse_pids(text)) out.push_back(c);
    }
  });
  return out;
}

}  // namespace

Spawned spawn(const LaunchSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) throw std::runtime_error("nothing to run: the command is empty");
  std::vector<std::string> args{spec.shim_binary, "__shim", std::to_string(::getpid()), spec.working_dir, "--"};
  args.insert(args.end(), spec.argv.begin(), spec.argv.end());
  CStrings argv(args);
  CStrings envp(spec.env);
  const std::string cgroup_procs = spec.cgroup.empty() ? "" : spec.cgroup + "/cgroup.procs";
  const std::string cgroup_what = "cannot join cgroup " + spec.cgroup;
  const std::string exec_what = "cannot run the shim " + spec.shim_binary;

  Pipe out = make_pipe();
  Pipe err = make_pipe();
  Pipe status = make_pipe();
  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (devnull.get() < 0) throw std::runtime_error(std::string("/dev/null: ") + std::strerror(errno));
  for (int fd : {out.r.get(), err.r.get()}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);

  ChildPlan plan;
  plan.shim = spec.shim_binary.c_str();
  plan.argv = argv.get();
  plan.envp = envp.get();
  plan.cgroup_procs = spec.cgroup.empty() ? nullptr : cgroup_procs.c_str();
  plan.cgroup_what = cgroup_what.c_str();
  plan.exec_what = exec_what.c_str();
  plan.devnull = devnull.get();
  plan.out_w = out.w.get();
  plan.err_w = err.w.get();
  plan.status_w = status.w.get();

  // No signal handler of the agent may run in the child between fork and exec (Asio's would
  // write to the agent's own wake-up pipe), so everything is blocked around fork().
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t shim = ::fork();
  if (shim == 0) exec_shim(plan);
  int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (shim < 0) throw std::runtime_error("cannot run " + spec.argv[0] + ": fork: " + std::strerror(fork_errno));
  out.w.reset();
  err.w.reset();
  status.w.reset();
  devnull.reset();

  std::string report;
  if (!read_report(status.r.get(), report, kReportDeadline)) {
    ::kill(shim, SIGKILL);  // the service, if it got that far, follows by its PDEATHSIG
    reap_within(shim, milliseconds(0));
    throw std::runtime_error("cannot run " + spec.argv[0] + ": it did not start within " +
                             std::to_string(kReportDeadline.count() / 1000) + " s");
  }
  if (report.rfind("ok ", 0) == 0) {
    long pid = std::strtol(report.c_str() + 3, nullptr, 10);
    if (pid > 0) {
      Spawned s;
      s.shim = shim;
      s.pid = static_cast<pid_t>(pid);
      s.stdout_fd = out.r.release();
      s.stderr_fd = err.r.release();
      return s;
    }
  }
  // A failed shim exits right after its report; anything else gets 2 s, then SIGKILL.
  int st = reap_within(shim, milliseconds(2000));
  throw std::runtime_error(failure_message(report, st, spec));
}

void signal_instance(pid_t shim, int sig) {
  if (shim <= 0 || sig <= 0) return;
  if (sig == SIGKILL) return kill_instance(shim);
  ::kill(shim, sig);
}

void kill_instance(pid_t shim, const std::string& cgroup) {
  if (shim > 0) ::kill(shim, shim_kill_signal());
  // Belt and braces: cgroup.kill takes the shim and its whole tree at once, even if the shim is
  // stopped or wedged. Orphans then go to the agent (a subreaper), whose Reaper reaps them.
  if (!cgroup.empty()) cgroup_kill(cgroup);
}

std::string ExitStatus::describe() const {
  if (signaled) return "killed by " + signal_name(signal);
  return "exited with code " + std::to_string(code);
}

ExitStatus decode_wait_status(int status) {
  ExitStatus e;
  if (WIFSIGNALED(status)) {
    e.signaled = true;
    e.signal = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    e.code = WEXITSTATUS(status);
  }
  return e;
}

// ---------------------------------------------------------------------------------------------
// Reaper

struct Reaper::Impl {
  Impl(EventLoop& loop, OnExit fn) : io(loop.io()), signals(loop.io(), SIGCHLD), on_exit(std::move(fn)) {}

  boost::asio::io_context& io;
  boost::asio::signal_set signals;
  OnExit on_exit;
  int previous_subreaper = 0;
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  void arm() {
    signals.async_wait([this, alive = alive](const boost::system::error_code& ec, int) {
      if (ec || !*alive) return;
      reap();
      if (*alive) arm();
    });
  }

  void reap() {
    for (;;) {
      int st = 0;
      pid_t pid = ::waitpid(-1, &st, WNOHANG);
      if (pid < 0 && errno == EINTR) continue;
      if (pid <= 0) return;  // 0: children left, none exited; -1/ECHILD: no children
      auto guard = alive;
      on_exit(pid, decode_wait_status(st));
      if (!*guard) return;  // on_exit destroyed the Reaper
    }
  }
};

Reaper::Reaper(EventLoop& loop, OnExit on_exit) : impl_(std::make_unique<Impl>(loop, std::move(on_exit))) {
  ::prctl(PR_GET_CHILD_SUBREAPER, &impl_->previous_subreaper);
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  // Asio 1.74 installs its handler without SA_RESTART, so every SIGCHLD would make a blocking
  // call on whichever thread takes it (a log write, an fsync on the store thread) fail with
  // EINTR. Same handler, flags added; SA_NOCLDSTOP because stopped children are no news.
  struct sigaction sa {};
  if (::sigaction(SIGCHLD, nullptr, &sa) == 0) {
    sa.sa_flags |= SA_RESTART | SA_NOCLDSTOP;
    ::sigaction(SIGCHLD, &sa, nullptr);
  }
  impl_->arm();
  // Children that ended before we listened sent their SIGCHLD to nobody.
  boost::asio::post(impl_->io, [impl = impl_.get(), alive = impl_->alive] {
    if (*alive) impl->reap();
  });
}

Reaper::~Reaper() {
  *impl_->alive = false;
  boost::system::error_code ec;
  impl_->signals.cancel(ec);
  ::prctl(PR_SET_CHILD_SUBREAPER, impl_->previous_subreaper);
}

// ---------------------------------------------------------------------------------------------
// /proc

std::vector<pid_t> descendants_of(pid_t root) {
  std::vector<pid_t> out;
  std::unordered_set<pid_t> seen{root};
  if (have_children_files()) {
    std::vector<pid_t> queue{root};
    for (size_t i = 0; i < queue.size(); ++i) {
      for (pid_t c : children_from_files(queue[i])) {
        if (!seen.insert(c).second) continue;
        out.push_back(c);
        queue.push_back(c);
      }
    }
    return out;
  }
  std::unordered_multimap<pid_t, pid_t> children;
  ProcStat st;
  for_each_numeric_entry("/proc", [&](pid_t pid) {
    if (read_stat(pid, st)) children.emplace(st.ppid, pid);
  });
  std::vector<pid_t> queue{root};
  for (size_t i = 0; i < queue.size(); ++i) {
    auto [b, e] = children.equal_range(queue[i]);
    for (auto it = b; it != e; ++it) {
      if (!seen.insert(it->second).second) continue;
      out.push_back(it->second);
      queue.push_back(it->second);
    }
  }
  return out;
}

Usage sample_usage(pid_t root) {
  static const long ticks = ::sysconf(_SC_CLK_TCK);
  static const long page = ::sysconf(_SC_PAGESIZE);
  Usage u;
  if (root <= 0) return u;
  std::vector<pid_t> tree{root};
  for (pid_t p : descendants_of(root)) tree.push_back(p);
  ProcStat st;
  std::string statm;
  long long ticks_total = 0;
  for (pid_t p : tree) {
    if (!read_stat(p, st)) continue;  // gone meanwhile
    ticks_total += static_cast<long long>(st.utime + st.stime) + st.cutime + st.cstime;
    if (st.state == 'Z') continue;
    ++u.processes;
    if (read_small_file("/proc/" + std::to_string(p) + "/statm", statm)) {
      unsigned long long size = 0, resident = 0;
      if (std::sscanf(statm.c_str(), "%llu %llu", &size, &resident) == 2) u.rss_bytes += resident * page;
    }
  }
  u.cpu_seconds = static_cast<double>(ticks_total) / static_cast<double>(ticks > 0 ? ticks : 100);
  return u;
}

uint64_t process_start_ticks(pid_t pid) {
  ProcStat st;
  return pid > 0 && read_stat(pid, st) ? st.starttime : 0;
}

bool is_shim(pid_t pid, uint64_t start_ticks) {
  if (pid <= 0 || start_ticks == 0 || process_start_ticks(pid) != start_ticks) return false;
  std::string argv;
  if (!read_small_file("/proc/" + std::to_string(pid) + "/cmdline", argv)) return false;
  auto first = argv.find('\0');
  return first != std::string::npos && argv.compare(first + 1, 7, std::string("__shim") + '\0') == 0;
}

std::vector<Usage> sample_usage(const std::vector<pid_t>& roots) {
  // Nothing supervised (an agent that only registers and routes): no pass over /proc, which
  // reads every process on the host once a second.
  if (roots.empty()) return {};
  static const long ticks = ::sysconf(_SC_CLK_TCK);
  static const long page = ::sysconf(_SC_PAGESIZE);
  struct Proc {
    ProcStat stat;
    std::vector<pid_t> children;
  };
  std::unordered_map<pid_t, Proc> procs;
  for_each_numeric_entry("/proc", [&](pid_t pid) {
    ProcStat st;
    if (read_stat(pid, st)) procs[pid].stat = st;
  });
  for (auto& [pid, p] : procs)
    if (auto it = procs.find(p.stat.ppid); it != procs.end()) it->second.children.push_back(pid);
  std::vector<Usage> out(roots.size());
  std::string statm;
  for (size_t r = 0; r < roots.size(); ++r) {
    if (roots[r] <= 0 || !procs.count(roots[r])) continue;
    long long ticks_total = 0;
    std::vector<pid_t> queue{roots[r]};
    std::unordered_set<pid_t> seen{roots[r]};
    for (size_t i = 0; i < queue.size(); ++i) {
      const Proc& p = procs[queue[i]];
      ticks_total += static_cast<long long>(p.stat.utime + p.stat.stime) + p.stat.cutime + p.stat.cstime;
      if (p.stat.state != 'Z') {
        ++out[r].processes;
        if (read_small_file("/proc/" + std::to_string(queue[i]) + "/statm", statm)) {
          unsigned long long size = 0, resident = 0;
          if (std::sscanf(statm.c_str(), "%llu %llu", &size, &resident) == 2) out[r].rss_bytes += resident * page;
        }
      }
      for (pid_t c : p.children)
        if (seen.insert(c).second) queue.push_back(c);
    }
    out[r].cpu_seconds = static_cast<double>(ticks_total) / static_cast<double>(ticks > 0 ? ticks : 100);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Signal names

namespace {
struct SignalName {
  int number;
  const char* name;  // without "SIG"
};
constexpr SignalName kSignals[] = {
    {SIGHUP, "HUP"},     {SIGINT, "INT"},       {SIGQUIT, "QUIT"},   {SIGILL, "ILL"},     {SIGTRAP, "TRAP"},
    {SIGABRT, "ABRT"},   {SIGBUS, "BUS"},       {SIGFPE, "FPE"},     {SIGKILL, "KILL"},   {SIGUSR1, "USR1"},
    {SIGSEGV, "SEGV"},   {SIGUSR2, "USR2"},     {SIGPIPE, "PIPE"},   {SIGALRM, "ALRM"},   {SIGTERM, "TERM"},
    {SIGSTKFLT, "STKFLT"}, {SIGCHLD, "CHLD"},   {SIGCONT, "CONT"},   {SIGSTOP, "STOP"},   {SIGTSTP, "TSTP"},
    {SIGTTIN, "TTIN"},   {SIGTTOU, "TTOU"},     {SIGURG, "URG"},     {SIGXCPU, "XCPU"},   {SIGXFSZ, "XFSZ"},
    {SIGVTALRM, "VTALRM"}, {SIGPROF, "PROF"},   {SIGWINCH, "WINCH"}, {SIGIO, "IO"},       {SIGPWR, "PWR"},
    {SIGSYS, "SYS"},
};

int parse_int(const std::string& s) {
  if (s.empty() || s.size() > 4) return -1;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}
}  // namespace

int signal_number(const std::string& name) {
  std::string s;
  for (char c : name) s += static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
  if (int v = parse_int(s); v >= 0) return v > 0 && v < NSIG ? v : 0;
  if (s.rfind("SIG", 0) == 0) s.erase(0, 3);
  for (const auto& e : kSignals) {
    if (s == e.name) return e.number;
  }
  if (s == "IOT") return SIGABRT;
  if (s == "CLD") return SIGCHLD;
  if (s.rfind("RTMIN", 0) == 0 || s.rfind("RTMAX", 0) == 0) {
    int offset = 0;
    if (s.size() > 5) {
      if (s[5] != (s[3] == 'I' ? '+' : '-')) return 0;
      offset = parse_int(s.substr(6));
      if (offset < 0) return 0;
    }
    int v = s[3] == 'I' ? SIGRTMIN + offset : SIGRTMAX - offset;
    return v >= SIGRTMIN && v <= SIGRTMAX ? v : 0;
  }
  return 0;
}

std::string signal_name(int sig) {
  for (const auto& e : kSignals) {
    if (e.number == sig) return std::string("SIG") + e.name;
  }
  if (sig >= SIGRTMIN && sig <= SIGRTMAX) {
    return sig == SIGRTMIN ? "SIGRTMIN" : "SIGRTMIN+" + std::to_string(sig - SIGRTMIN);
  }
  return "signal " + std::to_string(sig);
}

}  // namespace flotilla::supervisor
