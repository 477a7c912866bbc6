#include "gateway/round_end.h"

#include <boost/asio/post.hpp>
#include <boost/version.hpp>

#include <memory>

#if BOOST_VERSION / 100 == 1074 && defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IOCP) && \
    !defined(FLOTILLA_PLAIN_ROUND_END)
#define FLOTILLA_ROUND_END_IN_QUEUE 1
#include <boost/asio/detail/op_queue.hpp>
#include <boost/asio/detail/scheduler.hpp>

#include "gateway/private_member.h"
#endif

namespace flotilla::gateway {

namespace ad = boost::asio::detail;

#ifdef FLOTILLA_ROUND_END_IN_QUEUE
// Boost 1.74's scheduler keeps its handler queue and its reactor task marker private.
namespace private_access {
struct SchedulerQueue {
  friend auto member(SchedulerQueue);
};
struct SchedulerTask {
  friend auto member(SchedulerTask);
};
template struct Expose<SchedulerQueue, &ad::scheduler::op_queue_>;
template struct Expose<SchedulerTask, &ad::scheduler::task_operation_>;
}  // namespace private_access
#endif

RoundEnd::Op::Op(RoundEnd* owner) : ad::scheduler_operation(&Op::complete_op), round_end(owner) {}

void RoundEnd::Op::complete_op(void* owner, ad::scheduler_operation* base, const boost::system::error_code&,
                               std::size_t) {
  auto* self = static_cast<Op*>(base)->round_end;
  self->scheduled_ = false;
  // A null owner means the io_context is being destroyed with the operation still queued: the
  // operation is a member, nothing to free, and the function must not run.
  if (owner) self->fn_();
}

RoundEnd::RoundEnd(boost::asio::io_context& io, std::function<void()> fn) : io_(io), fn_(std::move(fn)), op_(this) {}

bool RoundEnd::before_reactor() {
#ifdef FLOTILLA_ROUND_END_IN_QUEUE
  return true;
#else
  return false;
#endif
}

void RoundEnd::schedule() {
  if (scheduled_) return;
  scheduled_ = true;
#ifdef FLOTILLA_ROUND_END_IN_QUEUE
  auto& scheduler = boost::asio::use_service<ad::scheduler>(io_);
  auto& queue = scheduler.*member(private_access::SchedulerQueue{});
  ad::scheduler_operation* task = &(scheduler.*member(private_access::SchedulerTask{}));
  // Relink the queue as [everything but the reactor task] + this operation + the task. The
  // queue is this round's handlers (a few, one per ready event) and whatever was posted; the
  // task is absent only while the reactor runs, which is never while a handler runs on this
  // single thread, or before the first socket or timer exists.
  ad::op_queue<ad::scheduler_operation> rest;
  bool had_task = false;
  while (!queue.empty()) {
    ad::scheduler_operation* o = queue.front();
    queue.pop();
    if (o == task)
      had_task = true;
    else
      rest.push(o);
  }
  queue.push(rest);
  scheduler.work_started();  // as post() does; the scheduler counts it finished after the run
  queue.push(&op_);
  if (had_task) queue.push(task);
#else
  // The guard clears scheduled_ when the io_context destroys the handler without running it.
  struct Clear {
    void operator()(RoundEnd* r) const { r->scheduled_ = false; }
  };
  boost::asio::post(io_, [guard = std::unique_ptr<RoundEnd, Clear>(this)]() mutable {
    RoundEnd* self = guard.release();
    Op::complete_op(self, &self->op_, {}, 0);
  });
#endif
}

}  // namespace flotilla::gateway
