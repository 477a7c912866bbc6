// Running one instance's process tree. Every instance is started under a small shim (this same
// binary, re-executed as `flotilla __shim`) that:
//   - is a child subreaper, so whatever the service forks — even a daemon that calls setsid() —
//     stays its descendant;
//   - has PR_SET_PDEATHSIG (with the parent-race check), so when the agent dies, even by kill -9,
//     the shim kills the whole tree at once;
//   - forwards the stop signal to the service's main process, and when that process exits, kills
//     every process the service left behind (as a container runtime does when PID 1 exits), then
//     exits with the main process's status (re-raising its signal when it was killed by one).
// Where cgroup v2 is writable, the shim and its tree also get their own cgroup (memory/cpus limits,
// cgroup.kill); see cgroup.h.
//
// What the caller must know:
//   - Call spawn() on the Reaper's loop thread and record Spawned::shim before returning to the
//     loop: a service that exits at once is then reported by the Reaper only after you know its pid.
//   - PR_SET_PDEATHSIG fires when the *thread* that forked the shim ends, not the process: spawn()
//     must run on a thread that lives as long as the agent (the control thread), never on a
//     short-lived worker thread, or the instance is killed when that thread exits.
//   - The instance's environment is also the shim's environment (the shim passes it on unchanged),
//     so LD_PRELOAD and the like in `env` apply to the shim too.
//   - The child gets exactly fds 0 (/dev/null), 1 and 2 (the pipes); every other fd is closed.
//     The pipes reach EOF once the whole tree has exited.
// Asio stays out of this header.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace flotilla {
class EventLoop;
}

namespace flotilla::supervisor {

struct LaunchSpec {
  std::vector<std::string> argv;  // argv[0] looked up in PATH (of `env`) when it has no '/'
  std::string working_dir;        // must exist (relative: to the agent's); empty: the agent's
  std::vector<std::string> env;   // the whole environment, "KEY=VALUE"
  std::string cgroup;             // a cgroup v2 directory to run in (cgroup.h); empty: none
  // The flotilla binary to re-execute as `flotilla __shim`. The agent runs the binary it is;
  // tests (which run inside unit_tests) pass the path of the flotilla binary.
  std::string shim_binary = "/proc/self/exe";
};

struct Spawned {
  pid_t shim = -1;  // the process the agent waits for and signals
  pid_t pid = -1;   // the service's main process (what `ps` shows)
  int stdout_fd = -1;  // read ends of the instance's stdout and stderr pipes (non-blocking, CLOEXEC)
  int stderr_fd = -1;  // the caller owns them
};

// Starts argv under the shim and returns once the service's exec succeeded. Throws
// std::runtime_error with a message a user can act on when the program cannot be started
// ("cannot run python3: No such file or directory", "working_dir ./x: No such file or
// directory"), after the failed attempt was reaped. Blocks for the two fork+execs only (bounded
// by a 10 s deadline, after which the attempt is killed).
Spawned spawn(const LaunchSpec& spec);

// Forwards `sig` (the service's stop_signal) to the main process through the shim. SIGKILL
// means kill_instance(): the shim itself must not be killed before it cleaned up.
void signal_instance(pid_t shim, int sig);
// Kills the whole tree at once: the shim SIGKILLs the service's process group and every
// descendant left, then dies of SIGKILL itself. With the instance's cgroup, cgroup.kill too.
void kill_instance(pid_t shim, const std::string& cgroup = {});

struct ExitStatus {
  int code = 0;     // exit code when !signaled
  int signal = 0;   // the signal that ended it
  bool signaled = false;
  std::string describe() const;  // "exited with code 1", "killed by SIGKILL"
};
ExitStatus decode_wait_status(int status);

// Makes this process a child subreaper and reaps every child that exits (SIGCHLD on the loop).
// on_exit runs on the loop's thread for each reaped pid (shims, and any orphan re-parented to the
// agent, which the supervisor ignores). The destructor restores the earlier subreaper setting.
class Reaper {
 public:
  using OnExit = std::function<void(pid_t pid, ExitStatus status)>;
  Reaper(EventLoop& loop, OnExit on_exit);
  ~Reaper();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// CPU time and memory of a process and all its descendants, from /proc. Pass the shim to count
// everything the instance runs (orphans are the shim's children); that includes the shim's own
// RSS (~7 MB, nearly all of it the binary's pages, shared with the agent: ~1 MB private).
// Spawned::pid gives the main process's subtree only.
struct Usage {
  // user + system, summed over the tree, including children that were already reaped inside it
  // (cutime/cstime), so it (nearly always) only grows and its rate is the tree's CPU use.
  double cpu_seconds = 0;
  uint64_t rss_bytes = 0;     // resident memory, summed over the tree
  int processes = 0;          // live (non-zombie) processes
};
Usage sample_usage(pid_t root);
// The same for many roots with one pass over /proc (the supervisor samples every instance each
// second; one scan per root would cost instances × processes reads). Result i belongs to roots[i].
std::vector<Usage> sample_usage(const std::vector<pid_t>& roots);

// Every descendant of root (not root itself), zombies included, from /proc: the children files
// when the kernel has them (CONFIG_PROC_CHILDREN), else one scan of /proc/*/stat.
std::vector<pid_t> descendants_of(pid_t root);

// The start time of a process (clock ticks after boot; 0: no such process): with the pid, it names
// one process for good, so a recorded shim is never confused with a later process of the same pid.
uint64_t process_start_ticks(pid_t pid);
// Whether pid is a shim (`flotilla __shim`) started at start_ticks: what a new agent kills after a
// previous one died.
bool is_shim(pid_t pid, uint64_t start_ticks);

// Signal names: "SIGTERM"/"TERM"/"sigterm"/"15" -> 15; 0 when unknown. And back ("SIGTERM";
// "SIGRTMIN+3"; "signal 99" for what has no name).
int signal_number(const std::string& name);
std::string signal_name(int sig);

// Entry of `flotilla __shim <agent pid> <working dir> -- argv...` (main() calls it before parsing
// the command line). Reports "ok <pid>" or "error <message>" on fd 3, then supervises.
int run_shim(int argc, char** argv);
// The signal that tells a shim to kill its tree: SIGRTMIN+1 (also the shim's PDEATHSIG).
int shim_kill_signal();

}  // namespace flotilla::supervisor
