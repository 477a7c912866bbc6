#include "supervisor/cgroup.h"
#include "supervisor/proc_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cctype>
#include <cmath>
#include <csignal>
#include <cstring>
#include <stdexcept>

namespace flotilla::supervisor {

namespace {

constexpr long kCgroup2Magic = 0x63677270;  // CGROUP2_SUPER_MAGIC
constexpr const char* kControllers[] = {"memory", "cpu"};

// cgroupfs reports a refused value on write(), not on open(). Returns 0 or the errno.
int write_file(const std::string& path, const std::string& value) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ssize_t n;
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  int err = n == static_cast<ssize_t>(value.size()) ? 0 : (n < 0 ? errno : EIO);
  ::close(fd);
  return err;
}

void must_write(const std::string& path, const std::string& value) {
  if (int err = write_file(path, value)) {
    throw std::runtime_error("cgroup: writing \"" + value + "\" to " + path + ": " + std::strerror(err));
  }
}

void make_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) {
    throw std::runtime_error("cgroup: mkdir " + dir + ": " + std::strerror(errno));
  }
}

bool is_dir(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool has_word(const std::string& text, const std::string& word) {
  size_t pos = 0;
  while ((pos = text.find(word, pos)) != std::string::npos) {
    bool start = pos == 0 || std::isspace(static_cast<unsigned char>(text[pos - 1]));
    size_t end = pos + word.size();
    bool stop = end == text.size() || std::isspace(static_cast<unsigned char>(text[end]));
    if (start && stop) return true;
    pos = end;
  }
  return false;
}

// <base>: the cgroup the agent was started in. An agent restarted from inside the leaf it made
// earlier (same process tree, e.g. an exec) finds itself in <base>/agent already.
std::string base_dir(const std::string& mount, std::string& why_not) {
  std::string text;
  if (!read_small_file("/proc/self/cgroup", text)) {
    why_not = std::string("/proc/self/cgroup: ") + std::strerror(errno);
    return {};
  }
  std::string own = cgroup_v2_path(text);
  if (own.empty()) {
    why_not = "/proc/self/cgroup has no cgroup v2 entry";
    return {};
  }
  std::string base = own == "/" ? mount : mount + own;
  const std::string leaf = "/agent";
  if (base.size() > leaf.size() && base.compare(base.size() - leaf.size(), leaf.size(), leaf) == 0) {
    std::string parent = base.substr(0, base.size() - leaf.size());
    if (is_dir(parent + "/flotilla")) base = parent;
  }
  return base;
}

}  // namespace

std::string cgroup_v2_path(const std::string& text) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    if (text.compare(pos, 3, "0::") == 0) return text.substr(pos + 3, end - pos - 3);
    pos = end + 1;
  }
  return {};
}

std::string cpu_max_value(double cpus) {
  constexpr long long kPeriod = 100'000;  // µs, the kernel's default
  if (!(cpus > 0)) return "max";
  long long quota = std::llround(cpus * kPeriod);
  if (quota < 1000) quota = 1000;  // the kernel's minimum quota
  return std::to_string(quota) + " " + std::to_string(kPeriod);
}

bool cgroup_v2_available(std::string& why_not) {
  struct statfs fs {};
  if (::statfs("/sys/fs/cgroup", &fs) < 0) {
    why_not = std::string("/sys/fs/cgroup: ") + std::strerror(errno);
    return false;
  }
  if (static_cast<long>(fs.f_type) != kCgroup2Magic) {
    why_not = "/sys/fs/cgroup is not a cgroup v2 mount (cgroup v1 or a hybrid set-up)";
    return false;
  }
  std::string base = base_dir("/sys/fs/cgroup", why_not);
  if (base.empty()) return false;
  for (const char* file : {"", "/cgroup.procs", "/cgroup.subtree_control"}) {
    if (::access((base + file).c_str(), W_OK) != 0) {
      why_not = base + file + " is not writable by the agent (with systemd: Delegate=yes on its unit)";
      return false;
    }
  }
  return true;
}

CgroupTree CgroupTree::set_up(const std::string& mount) {
  std::string why_not;
  std::string base = base_dir(mount, why_not);
  if (base.empty()) throw std::runtime_error("cgroup: " + why_not);
  make_dir(base + "/agent");
  must_write(base + "/agent/cgroup.procs", std::to_string(::getpid()));  // all threads move along

  CgroupTree tree;
  tree.path_ = base + "/flotilla";
  make_dir(tree.path_);
  std::string offered;
  read_small_file(base + "/cgroup.controllers", offered);
  for (const char* c : kControllers) {
    if (!has_word(offered, c)) continue;
    // Fails (EBUSY) while <base> still holds processes other than ours, e.g. the shell of an
    // interactive session: instances then get cgroups (and cgroup.kill) but no limits.
    std::string enable = std::string("+") + c;
    if (write_file(base + "/cgroup.subtree_control", enable) != 0) continue;
    if (write_file(tree.path_ + "/cgroup.subtree_control", enable) != 0) continue;
    (std::strcmp(c, "memory") == 0 ? tree.has_memory_ : tree.has_cpu_) = true;
  }
  return tree;
}

std::string CgroupTree::create(const std::string& name, const CgroupLimits& limits) const {
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos) {
    throw std::runtime_error("cgroup: bad instance name \"" + name + "\"");
  }
  if (limits.memory_max_bytes > 0 && !has_memory_) {
    throw std::runtime_error("a memory limit needs the cgroup v2 memory controller, which " + path_ + " does not have");
  }
  if (limits.cpus > 0 && !has_cpu_) {
    throw std::runtime_error("a cpus limit needs the cgroup v2 cpu controller, which " + path_ + " does not have");
  }
  std::string dir = path_ + "/" + name;
  cgroup_create(dir, limits);
  return dir;
}

void cgroup_create(const std::string& dir, const CgroupLimits& limits) {
  if (::mkdir(dir.c_str(), 0755) < 0) {
    if (errno != EEXIST) throw std::runtime_error("cgroup: mkdir " + dir + ": " + std::strerror(errno));
    if (!cgroup_pids(dir).empty()) cgroup_kill(dir);  // a leftover still running: start clean
  }
  // An unset limit writes "max", so a reused cgroup loses an old one; without the controller the
  // file does not exist, which is fine when no limit is asked for.
  if (limits.memory_max_bytes > 0) must_write(dir + "/memory.max", std::to_string(limits.memory_max_bytes));
  else write_file(dir + "/memory.max", "max");
  if (limits.cpus > 0) must_write(dir + "/cpu.max", cpu_max_value(limits.cpus));
  else write_file(dir + "/cpu.max", "max");
}

void cgroup_kill(const std::string& dir) {
  if (write_file(dir + "/cgroup.kill", "1") == 0) return;
  // Before Linux 5.14. A process SIGKILLed cannot fork any more, so a few rounds catch children
  // forked while we were reading cgroup.procs.
  for (int round = 0; round < 3; ++round) {
    auto pids = cgroup_pids(dir);
    if (pids.empty()) return;
    for (pid_t p : pids) ::kill(p, SIGKILL);
  }
}

bool cgroup_remove(const std::string& dir) { return ::rmdir(dir.c_str()) == 0 || errno == ENOENT; }

std::vector<pid_t> cgroup_pids(const std::string& dir) {
  std::string text;
  if (!read_small_file(dir + "/cgroup.procs", text)) return {};
  return parse_pids(text);
}

}  // namespace flotilla::supervisor
