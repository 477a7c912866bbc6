// Instance cgroups, cgroup v2 only (v1 and hybrid set-ups are reported as unavailable; spawn()
// works without them). Layout under the cgroup the agent was started in (<base>):
//   <base>/agent            the agent itself, moved there: a cgroup that hands controllers to its
//                           children may hold no processes ("no internal processes" rule)
//   <base>/flotilla/<name>  one per instance: the shim and its whole tree, memory.max / cpu.max
// With systemd, give the agent's unit Delegate=yes so <base> is writable by it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace flotilla::supervisor {

// True when /sys/fs/cgroup is a cgroup2 mount and the agent's own cgroup is writable; otherwise
// why_not says what is missing. Looks only: changes nothing.
bool cgroup_v2_available(std::string& why_not);

struct CgroupLimits {
  uint64_t memory_max_bytes = 0;  // 0: no limit
  double cpus = 0;                // 0: no limit; 0.5 = half a CPU
};

// cpu.max for a number of CPUs: a quota per 100 ms period ("50000 100000" for 0.5; "max" for 0).
std::string cpu_max_value(double cpus);
// The v2 path in /proc/<pid>/cgroup text ("0::/a/b" -> "/a/b"); empty when there is none.
std::string cgroup_v2_path(const std::string& proc_cgroup_text);

// <base>/flotilla, set up once when the agent starts.
class CgroupTree {
 public:
  // Moves this process into <base>/agent and enables the cpu and memory controllers (those <base>
  // offers) for the instance cgroups. Throws std::runtime_error naming the step that failed.
  static CgroupTree set_up(const std::string& mount = "/sys/fs/cgroup");

  const std::string& path() const { return path_; }
  bool has_memory() const { return has_memory_; }
  bool has_cpu() const { return has_cpu_; }

  // Creates <path>/<name> with the limits (a leftover of an earlier run is emptied and reused)
  // and returns its directory, for LaunchSpec::cgroup. Throws std::runtime_error, also when a
  // limit is asked for whose controller is not available.
  std::string create(const std::string& name, const CgroupLimits& limits) const;

 private:
  std::string path_;
  bool has_memory_ = false;
  bool has_cpu_ = false;
};

// Creates dir (mkdir; an existing one is emptied with cgroup_kill) and writes the limits that are
// set. Throws std::runtime_error.
void cgroup_create(const std::string& dir, const CgroupLimits& limits);
// Kills every process in dir at once with cgroup.kill (Linux >= 5.14); older kernels: SIGKILL to
// each pid of cgroup.procs, a few rounds.
void cgroup_kill(const std::string& dir);
// Removes an instance cgroup once the tree in it has been reaped. False (errno EBUSY) while
// processes remain.
bool cgroup_remove(const std::string& dir);
// The processes in dir (cgroup.procs).
std::vector<pid_t> cgroup_pids(const std::string& dir);

}  // namespace flotilla::supervisor
