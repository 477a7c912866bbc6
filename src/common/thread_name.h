// Names the calling thread, as `top -H`, `ps -L`, `perf` and gdb show it (/proc/PID/task/TID/comm):
// the gateway's workers are gw-worker-0, gw-worker-1, …, the registry's writer is sqlite-store,
// and so on (docs/operations.md, "Threads"). Linux keeps 15 bytes; longer names are cut there.
#pragma once

#include <string_view>

namespace flotilla {

void set_thread_name(std::string_view name);

}  // namespace flotilla
