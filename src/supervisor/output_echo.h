// The services' output on the terminal of a foreground `flotilla up`, as `docker compose up`
// prints it: each line of each instance, prefixed with the instance ("web-3f9a1c | text"; the
// prefix coloured on a terminal). Lines are handed over on the loop and written by a thread of
// its own, so a terminal that does not keep up (or `flotilla up | less`, paused) never blocks the
// agent: past 1 MiB waiting, lines are dropped and a note says how many.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

namespace flotilla::supervisor {

class OutputEcho {
 public:
  // fd: where to write (stdout); colour: ANSI colours for the prefixes.
  OutputEcho(int fd, bool colour);
  // Writes what is still waiting, then stops.
  ~OutputEcho();
  OutputEcho(const OutputEcho&) = delete;
  OutputEcho& operator=(const OutputEcho&) = delete;

  // One line of an instance's output (without its newline). Any thread; never blocks on the fd.
  void line(std::string_view instance, std::string_view text);
  uint64_t dropped() const;

  static constexpr size_t kMaxWaiting = 1 << 20;

 private:
  void run();
  void write_out(const std::string& out);
  static std::string note_for(uint64_t dropped);
  std::string prefix(std::string_view instance);

  const int fd_;
  const bool colour_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::string> waiting_;
  size_t waiting_bytes_ = 0;
  uint64_t dropped_ = 0;         // in all
  uint64_t dropped_unsaid_ = 0;  // not yet reported on the output
  bool stop_ = false;
  std::atomic<bool> stopping_{false};
  size_t width_ = 0;  // the longest instance name seen: prefixes line up
  std::map<std::string, std::string, std::less<>> colours_;
  std::thread thread_;
};

}  // namespace flotilla::supervisor
