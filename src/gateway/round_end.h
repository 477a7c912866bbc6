// Run a function once the io_context has run the handlers already queued for this round of
// events, and before its reactor looks for new ones.
//
// Why: Worker::queue_flush sends the upstream requests read in a round together, after the
// round. With asio::post the flush lands behind the scheduler's reactor task, so every round
// that queued a request cost an extra epoll_wait(timeout 0) that almost always found nothing
// (0.88 epoll_wait per proxied request at 8 connections, nginx 0.61). Placed in front of the
// reactor task, the flush runs at the same moment without that look.
//
// How: with Boost 1.74 and the epoll reactor the operation is linked into the scheduler's queue
// just before its reactor task (the scheduler keeps both private; they are reached through the
// explicit-instantiation rule that lets a template argument name a private member). Anything
// else falls back to asio::post. Only for an io_context run by one thread with
// BOOST_ASIO_CONCURRENCY_HINT_UNSAFE, and only from that thread (the queue is not locked).
#pragma once

#include <utility>  // Boost 1.74 awaitable.hpp uses std::exchange without including it
#include <boost/asio/detail/scheduler_operation.hpp>
#include <boost/asio/io_context.hpp>

#include <functional>

namespace flotilla::gateway {

class RoundEnd {
 public:
  // `fn` runs on the io_context's thread each time schedule() was called since its last run.
  RoundEnd(boost::asio::io_context& io, std::function<void()> fn);
  // The io_context must be destroyed (or have run the operation) first: declare the RoundEnd
  // before the io_context it serves.
  ~RoundEnd() = default;
  RoundEnd(const RoundEnd&) = delete;
  RoundEnd& operator=(const RoundEnd&) = delete;

  // Asks for one run of the function at the end of this round; more calls before it runs are
  // no-ops. Call only from the io_context's thread.
  void schedule();
  bool scheduled() const { return scheduled_; }
  // Whether this build links in front of the reactor (false: the asio::post fallback).
  static bool before_reactor();

 private:
  struct Op : boost::asio::detail::scheduler_operation {
    explicit Op(RoundEnd* owner);
    static void complete_op(void* owner, boost::asio::detail::scheduler_operation* base,
                            const boost::system::error_code&, std::size_t);
    RoundEnd* round_end;
  };

  boost::asio::io_context& io_;
  std::function<void()> fn_;
  Op op_;
  bool scheduled_ = false;
};

}  // namespace flotilla::gateway
