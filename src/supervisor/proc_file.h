// Whole-file reads of the small files /proc and cgroupfs expose (read(2) until EOF: their sizes
// are unknown to stat, and EINTR is retried). Internal to src/supervisor.
#pragma once

#include <string>

namespace flotilla::supervisor {

// False when the file cannot be opened (the process or cgroup is gone).
bool read_small_file(const std::string& path, std::string& out);

}  // namespace flotilla::supervisor
