#include "common/event_loop.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

namespace flotilla {

namespace asio = boost::asio;

struct EventLoop::Guard {
  explicit Guard(asio::io_context& io) : guard(io.get_executor()) {}
  asio::executor_work_guard<asio::io_context::executor_type> guard;
};

EventLoop::EventLoop() : io_(std::make_unique<asio::io_context>(1)), guard_(std::make_unique<Guard>(*io_)) {}
EventLoop::~EventLoop() = default;

void EventLoop::post(std::function<void()> fn) { asio::post(*io_, std::move(fn)); }
void EventLoop::run() { io_->run(); }
void EventLoop::stop() { io_->stop(); }
void EventLoop::run_until(const std::function<bool()>& done) {
  while (!done() && !io_->stopped()) io_->run_one();
}

struct Timer::Impl {
  explicit Impl(asio::io_context& io) : timer(io) {}
  asio::steady_timer timer;
  uint64_t generation = 0;
  bool armed = false;
};

Timer::Timer(EventLoop& loop) : impl_(std::make_shared<Impl>(loop.io())) {}
Timer::~Timer() { cancel(); }

void Timer::arm(Duration after, std::function<void()> fn) {
  auto gen = ++impl_->generation;
  impl_->armed = true;
  impl_->timer.expires_after(after);
  impl_->timer.async_wait([impl = impl_, gen, fn = std::move(fn)](const boost::system::error_code& ec) {
    if (ec || impl->generation != gen) return;
    impl->armed = false;
    fn();
  });
}

void Timer::cancel() {
  ++impl_->generation;
  impl_->armed = false;
  impl_->timer.cancel();
}

bool Timer::armed() const { return impl_->armed; }

}  // namespace flotilla
