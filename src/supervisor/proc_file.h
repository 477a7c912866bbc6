// Whole-file reads of the small files /proc and cgroupfs expose (read(2) until EOF: their sizes
// are unknown to stat, and EINTR is retried). Internal to src/supervisor.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace flotilla::supervisor {

// False when the file cannot be opened (the process or cgroup is gone).
bool read_small_file(const std::string& path, std::string& out);
// The pids in a whitespace-separated list (/proc/PID/task/TID/children, cgroup.procs).
std::vector<pid_t> parse_pids(const std::string& text);

}  // namespace flotilla::supervisor
