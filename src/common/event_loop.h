// The event loop a thread runs (the control thread, later each gateway worker) and timers on it.
// Asio stays out of this header: code that only needs timers and post() does not pay for it.
#pragma once

#include <functional>
#include <memory>

#include "common/duration.h"

namespace boost::asio {
class io_context;
}

namespace flotilla {

class EventLoop {
 public:
  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  boost::asio::io_context& io() { return *io_; }
  // Thread-safe: runs fn on the loop's thread.
  void post(std::function<void()> fn);
  // Runs handlers on the calling thread until stop().
  void run();
  // Thread-safe.
  void stop();
  // Runs handlers on the calling thread until done() is true (start-up work before run()).
  void run_until(const std::function<bool()>& done);

 private:
  std::unique_ptr<boost::asio::io_context> io_;
  struct Guard;
  std::unique_ptr<Guard> guard_;
};

// A one-shot timer on a loop. arm() replaces any pending expiry; destroying the Timer cancels it,
// and a cancelled callback never runs.
class Timer {
 public:
  explicit Timer(EventLoop& loop);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void arm(Duration after, std::function<void()> fn);
  void cancel();
  bool armed() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace flotilla
