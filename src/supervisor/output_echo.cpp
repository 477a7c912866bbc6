#include "supervisor/output_echo.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "common/thread_name.h"

namespace flotilla::supervisor {

OutputEcho::OutputEcho(int fd, bool colour) : fd_(fd), colour_(colour), thread_([this] {
      set_thread_name("output-echo");
      run();
    }) {}

OutputEcho::~OutputEcho() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    stopping_.store(true);
  }
  cv_.notify_one();
  thread_.join();
}

uint64_t OutputEcho::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

std::string OutputEcho::prefix(std::string_view instance) {
  // docker compose's: cyan, yellow, green, magenta, blue, then their bright forms.
  static const char* const palette[] = {"36", "33", "32", "35", "34", "1;36", "1;33", "1;32", "1;35", "1;34"};
  width_ = std::max(width_, instance.size());
  std::string p(instance);
  p.append(width_ - instance.size(), ' ');
  p += " | ";
  if (!colour_) return p;
  auto it = colours_.find(instance);
  if (it == colours_.end())
    it = colours_.emplace(std::string(instance), palette[colours_.size() % (sizeof palette / sizeof *palette)]).first;
  return "\033[" + it->second + "m" + p + "\033[0m";
}

std::string OutputEcho::note_for(uint64_t dropped) {
  return "(flotilla: " + std::to_string(dropped) +
         " lines of the services' output not shown here: the terminal fell behind; flotilla logs has them)\n";
}

void OutputEcho::line(std::string_view instance, std::string_view text) {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    if (waiting_bytes_ + text.size() > kMaxWaiting) {
      ++dropped_;
      ++dropped_unsaid_;
      return;
    }
    if (dropped_unsaid_ > 0) {  // where the gap is: before the first line after it
      std::string note = note_for(dropped_unsaid_);
      waiting_bytes_ += note.size();
      waiting_.push_back(std::move(note));
      dropped_unsaid_ = 0;
    }
    std::string l = prefix(instance);
    l.append(text);
    l.push_back('\n');
    waiting_bytes_ += l.size();
    waiting_.push_back(std::move(l));
  }
  cv_.notify_one();
}

// Small writes, each once poll() says there is room: a stalled terminal holds this thread, never
// the agent, and once the agent is stopping it waits at most a second more for it.
void OutputEcho::write_out(const std::string& out) {
  size_t done = 0;
  int stalled = 0;
  while (done < out.size()) {
    pollfd p{fd_, POLLOUT, 0};
    int r = ::poll(&p, 1, 100);
    if (r == 0) {
      if (stopping_.load() && ++stalled >= 10) return;
      continue;
    }
    if (r < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL)) return;  // closed: the lines are in the log files
    ssize_t n = ::write(fd_, out.data() + done, std::min<size_t>(out.size() - done, 4096));
    if (n > 0) done += static_cast<size_t>(n);
    else if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    else return;
  }
}

void OutputEcho::run() {
  // A closed pipe (`flotilla up | head`) makes write() fail with EPIPE here instead of sending
  // SIGPIPE, which would end the agent.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !waiting_.empty(); });
    if (waiting_.empty() && stop_) {
      if (dropped_unsaid_ == 0) return;
      waiting_.push_back(note_for(dropped_unsaid_));  // lines dropped at the very end
      dropped_unsaid_ = 0;
    }
    std::string out;
    while (!waiting_.empty()) {
      out += waiting_.front();
      waiting_.pop_front();
    }
    waiting_bytes_ = 0;
    lock.unlock();
    write_out(out);
    lock.lock();
  }
}

}  // namespace flotilla::supervisor
