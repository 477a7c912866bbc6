// `flotilla __shim <agent pid> <working dir> -- argv...`: the process between the agent and one
// instance (process.h says why). Single-threaded; every signal stays blocked and is taken
// synchronously with sigwaitinfo, so there are no handlers and no races with them.
//
// Protocol with spawn(): fd 3 is the status pipe. The shim writes exactly one line, "ok <pid>\n"
// once the service's exec succeeded or "error <message>\n", then closes it.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

#include "supervisor/process.h"

namespace flotilla::supervisor {

int shim_kill_signal() { return SIGRTMIN + 1; }

namespace {

constexpr int kStatusFd = 3;

// Forwarded to the service's main process. Not forwarded: SIGCHLD (ours), the kill signal,
// SIGKILL/SIGSTOP (cannot be caught), SIGPIPE and the synchronous faults (they concern the shim).
constexpr int kForwarded[] = {SIGHUP,  SIGINT,  SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, SIGTERM,
                              SIGCONT, SIGTSTP, SIGTTIN, SIGTTOU, SIGWINCH, SIGPWR};

void write_all(int fd, const std::string& s) {
  const char* p = s.data();
  size_t n = s.size();
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // the agent is gone: its PDEATHSIG will tell us
    p += w;
    n -= static_cast<size_t>(w);
  }
}

void report(const std::string& line) {
  write_all(kStatusFd, line + "\n");
  ::close(kStatusFd);
}

[[noreturn]] void die_by(int sig) {
  if (sig == SIGKILL) ::kill(::getpid(), SIGKILL);
  // Re-raise with the default action so the agent's waitpid sees WIFSIGNALED with this signal.
  // No core file of the shim: the service's own core (if any) was already written.
  struct rlimit no_core {};
  ::setrlimit(RLIMIT_CORE, &no_core);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::kill(::getpid(), sig);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, sig);
  ::sigprocmask(SIG_UNBLOCK, &one, nullptr);
  ::_exit(128 + sig);  // a signal whose default action is not to terminate
}

[[noreturn]] void exit_like(int status) {
  if (WIFSIGNALED(status)) die_by(WTERMSIG(status));
  ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 1);
}

// SIGKILLs every descendant and reaps the shim's children until it has none. As a subreaper the
// shim inherits every orphan of the tree, so "no children" means "no descendants". A process
// forked after a scan is caught by the next one: the loop ends only when nothing is left.
void kill_descendants() {
  const pid_t self = ::getpid();
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  for (;;) {
    for (pid_t p : descendants_of(self)) ::kill(p, SIGKILL);
    for (;;) {
      int st = 0;
      pid_t r = ::waitpid(-1, &st, WNOHANG);
      if (r > 0 || (r < 0 && errno == EINTR)) continue;
      if (r < 0) return;  // ECHILD: nothing left
      break;              // children left that are still dying (or were forked after the scan)
    }
    timespec tick{0, 10'000'000};
    ::sigtimedwait(&chld, nullptr, &tick);
  }
}

// The main process exited (it is a zombie, not yet reaped: its pid still holds its process group
// id, so the group kill cannot hit a stranger). Kill what it left behind, then end like it.
[[noreturn]] void main_exited(pid_t child) {
  ::kill(-child, SIGKILL);
  int st = 0;
  while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
  }
  kill_descendants();
  exit_like(st);
}

// Reaps exited children one at a time, peeking first (WNOWAIT) so the main process is never
// reaped before its group is killed.
void reap(pid_t child) {
  for (;;) {
    siginfo_t si{};
    if (::waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (si.si_pid == 0) return;
    if (si.si_pid == child) main_exited(child);
    int st = 0;
    ::waitpid(si.si_pid, &st, 0);  // an orphan the service left: nobody needs its status
  }
}

enum class Step : int { kChdir = 1, kExec = 2 };
struct ChildFailure {
  Step step;
  int err;
};

[[noreturn]] void child_fail(int fd, Step step) {
  ChildFailure f{step, errno};
  ssize_t ignored = ::write(fd, &f, sizeof f);  // < PIPE_BUF: atomic
  (void)ignored;
  ::_exit(127);
}

}  // namespace

int run_shim(int argc, char** argv) {
  // Everything blocked first: the kill signal's default action would end the shim without
  // cleaning up. (spawn() already hands the shim a full mask; this covers running it by hand.)
  sigset_t all;
  sigfillset(&all);
  ::sigprocmask(SIG_BLOCK, &all, nullptr);

  if (argc < 6 || std::strcmp(argv[4], "--") != 0) {
    report("error usage: flotilla __shim <agent pid> <working dir> -- program [args...]");
    return 2;
  }
  const pid_t agent = static_cast<pid_t>(std::atol(argv[2]));
  const std::string working_dir = argv[3];
  char** command = argv + 5;
  const int kill_sig = shim_kill_signal();

  // When the agent dies, even by kill -9, the kernel sends us kill_sig. The parent-race check:
  // if it died before the prctl, we were already re-parented and no signal will come.
  ::prctl(PR_SET_PDEATHSIG, kill_sig);
  if (::getppid() != agent) {
    report("error the agent exited while starting the instance");
    return 1;
  }
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);

  int errpipe[2];
  if (::pipe2(errpipe, O_CLOEXEC) < 0) {
    report(std::string("error pipe: ") + std::strerror(errno));
    return 127;
  }
  const pid_t self = ::getpid();
  const pid_t child = ::fork();
  if (child == 0) {
    // Its own process group, so that the shim can kill it and everything it starts at once.
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != self) ::_exit(127);
    ::close(errpipe[0]);
    ::close(kStatusFd);
    if (!working_dir.empty() && ::chdir(working_dir.c_str()) < 0) child_fail(errpipe[1], Step::kChdir);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // PATH comes from our environment, which is the instance's.
    ::execvp(command[0], command);
    child_fail(errpipe[1], Step::kExec);
  }
  if (child < 0) {
    report(std::string("error cannot run ") + command[0] + ": fork: " + std::strerror(errno));
    return 127;
  }
  ::setpgid(child, child);  // also here, so the group exists whichever of us runs first
  ::close(errpipe[1]);

  ChildFailure failure{};
  ssize_t n;
  do {
    n = ::read(errpipe[0], &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  ::close(errpipe[0]);
  if (n == static_cast<ssize_t>(sizeof failure)) {
    int st = 0;
    while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
    std::string why = std::strerror(failure.err);
    if (failure.step == Step::kChdir) report("error working_dir " + working_dir + ": " + why);
    else report(std::string("error cannot run ") + command[0] + ": " + why);
    return 127;
  }
  // EOF: the exec succeeded (the pipe was close-on-exec).
  report("ok " + std::to_string(child));

  sigset_t waitset;
  sigemptyset(&waitset);
  sigaddset(&waitset, SIGCHLD);
  sigaddset(&waitset, kill_sig);
  for (int s : kForwarded) sigaddset(&waitset, s);
  for (;;) {
    siginfo_t info{};
    int sig = ::sigwaitinfo(&waitset, &info);
    if (sig < 0) continue;  // EINTR
    if (sig == SIGCHLD) {
      reap(child);  // returns unless the main process exited
    } else if (sig == kill_sig) {
      ::kill(-child, SIGKILL);  // not reaped yet, so the group id is still the service's
      kill_descendants();
      die_by(SIGKILL);
    } else {
      ::kill(child, sig);
    }
  }
}

}  // namespace flotilla::supervisor
