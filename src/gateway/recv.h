// A socket read that remembers when it drained the socket, so the next read waits for the
// reactor's readiness event instead of first trying recv() and getting EAGAIN.
//
// Why: Asio's async_read_some always tries a speculative recv() before waiting. A proxy almost
// never has data waiting when it reads (it just sent the request upstream, or the response
// downstream), so two of every request's six syscalls were recv() = EAGAIN. nginx avoids them
// with its `ready` flag: a read that returned less than it asked for clears it, the next epoll
// event sets it. Asio's epoll reactor has the same flag per descriptor (try_speculative_), but
// its recv operation clears it only on end of stream. This operation clears it on a short read.
//
// Why it is safe with the edge-triggered reactor: the flag is cleared inside the operation's
// perform(), on the reactor's own thread, right after a recv() that took everything queued at
// that moment. Any byte (or FIN, or error) that arrives later wakes the epoll item, and the
// event sets the flag again before, or while, the next read is queued: no readiness is lost.
// The reactor is per worker and single-threaded (BOOST_ASIO_CONCURRENCY_HINT_UNSAFE), so no
// epoll_wait can run between the recv() and the flag update.
//
// Only for the first read of a message (a request head on a kept-alive connection, the answer
// to a request just sent): a FIN that arrives together with the last bytes raises no epoll event
// of its own, so after a short read that took those bytes the next read would wait for an event
// that never comes (until the idle timeout). nginx learns of such a FIN from EPOLLRDHUP, which
// Asio does not register. Every read inside a message (the rest of a head, a body in either
// direction, a tunnel) uses async_recv_to_eof, which keeps Asio's behaviour: after a short read it
// still tries recv() first, and sees the end of the stream — a body cut short is seen at once,
// and a body delimited by the close ends. What the first-read shortcut costs: a client that
// half-closes (shutdown(SHUT_WR)) right after its request is answered, and its connection is then
// closed by the idle timeout rather than at once.
//
// The operation mirrors Boost 1.74's reactive_socket_recv_op (allocation through the handler,
// handler work tracking, cancellation and close through the reactor's queues). With another
// Boost version or a reactor other than epoll it falls back to async_read_some.
#pragma once

#include <utility>  // Boost 1.74 awaitable.hpp uses std::exchange without including it
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/version.hpp>
#include <fcntl.h>

#include "common/unique_fd.h"
#include "gateway/worker.h"

#if BOOST_VERSION / 100 == 1074 && defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IOCP) && \
    !defined(FLOTILLA_PLAIN_RECV)
#define FLOTILLA_DRAIN_AWARE_RECV 1
#include <unistd.h>

#include <boost/asio/detail/bind_handler.hpp>
#include <boost/asio/detail/epoll_reactor.hpp>
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_cont_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/memory.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>
#include <boost/asio/error.hpp>
#include <sys/socket.h>

#include <cerrno>
#endif

namespace flotilla::gateway {

// Lends a read its buffer only once there is something to read (async_recv_lent): a connection
// waiting for its next request then holds no read buffer at all, and the one it gets can be a
// large pooled one (a 5 KiB head in one recv, no allocation). Called on the socket's reactor
// thread while the read is pending.
class ReadLender {
 public:
  // Room to read into; empty only when none can be had (the read then ends with
  // no_buffer_space).
  virtual asio::mutable_buffer lend() = 0;
  // The read found nothing after all (EAGAIN; it waits for the next readiness event): what
  // lend() handed out may go back.
  virtual void take_back() = 0;

 protected:
  ~ReadLender() = default;
};

// What async_accept4 hands over: the new descriptor (non-blocking, close-on-exec; invalid on
// error) and the peer's address. Whoever holds it owns the descriptor: dropping it closes it.
struct Accepted {
  UniqueFd fd;
  tcp::endpoint peer;
};

#ifdef FLOTILLA_DRAIN_AWARE_RECV
namespace recv_detail {
namespace ad = asio::detail;

// The socket's reactor registration (basic_socket keeps it protected; a pointer to member named
// through a derived class is the standard way to reach it).
struct SocketAccess : Socket {
  static auto& impl(Socket& s) { return (s.*(&SocketAccess::impl_)).get_implementation(); }
};

// The tail of every operation's do_complete, as Asio's own: free the operation (its memory may be
// reused by the handler), then make the upcall unless the io_context is being destroyed.
template <typename Ptr, typename Work, typename Binder>
void complete_op(void* owner, Ptr& p, Work& w, Binder& handler) {
  p.h = std::addressof(handler.handler_);
  p.reset();
  if (owner) {
    ad::fenced_block b(ad::fenced_block::half);
    w.complete(handler, handler.handler_);
  }
}

class RecvOpBase : public ad::reactor_op {
 public:
  RecvOpBase(int fd, void* data, size_t size, bool to_eof, ReadLender* lender, func_type complete)
      : reactor_op(boost::system::error_code(), &RecvOpBase::do_perform, complete),
        fd_(fd),
        data_(data),
        size_(size),
        to_eof_(to_eof),
        lender_(lender) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<RecvOpBase*>(base);
    if (o->lender_) {
      asio::mutable_buffer b = o->lender_->lend();
      o->data_ = b.data();
      o->size_ = b.size();
      if (o->size_ == 0) {  // recv() into nothing would return 0, read as the end of the stream
        o->ec_ = asio::error::no_buffer_space;
        return done;
      }
    }
    for (;;) {
      ssize_t n = ::recv(o->fd_, o->data_, o->size_, 0);
      if (n > 0) {
        o->bytes_transferred_ = static_cast<size_t>(n);
        // Less than asked: the socket is drained; wait for the next readiness event (but a FIN
        // that came with these bytes would raise none: see async_recv_to_eof).
        return static_cast<size_t>(n) < o->size_ && !o->to_eof_ ? done_and_exhausted : done;
      }
      if (n == 0) {
        o->ec_ = asio::error::eof;
        return done_and_exhausted;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (o->lender_) o->lender_->take_back();
        return not_done;
      }
      o->ec_ = boost::system::error_code(errno, boost::system::system_category());
      return done;
    }
  }

 private:
  int fd_;
  void* data_;
  size_t size_;
  bool to_eof_;
  ReadLender* lender_;  // when set, data_ and size_ come from it at each attempt
};

template <typename Handler>
class RecvOp : public RecvOpBase {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(RecvOp);

  RecvOp(int fd, void* data, size_t size, bool to_eof, ReadLender* lender, Handler& handler, const Executor& io_ex)
      : RecvOpBase(fd, data, size, to_eof, lender, &RecvOp::do_complete),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  // As reactive_socket_recv_op::do_complete: free the operation before the upcall.
  static void do_complete(void* owner, ad::operation* base, const boost::system::error_code&, std::size_t) {
    auto* o = static_cast<RecvOp*>(base);
    ptr p = {std::addressof(o->handler_), o, o};
    ad::handler_work<Handler, Executor> w(std::move(o->work_));
    ad::binder2<Handler, boost::system::error_code, std::size_t> handler(o->handler_, o->ec_, o->bytes_transferred_);
    complete_op(owner, p, w, handler);
  }

 private:
  Handler handler_;
  ad::handler_work<Handler, Executor> work_;
};

// The acceptor's reactor registration (basic_socket_acceptor keeps it private: recv.cpp).
ad::epoll_reactor::per_descriptor_data& acceptor_reactor_data(Acceptor& acceptor);
// Makes the socket's next read try recv() before it waits for epoll, whatever an earlier short
// read concluded (recv.cpp).
void mark_readable(Socket& socket);

class AcceptOpBase : public ad::reactor_op {
 public:
  AcceptOpBase(int fd, func_type complete)
      : reactor_op(boost::system::error_code(), &AcceptOpBase::do_perform, complete), fd_(fd) {}
  static status do_perform(reactor_op* base) {
    auto* o = static_cast<AcceptOpBase*>(base);
    for (;;) {
      socklen_t len = static_cast<socklen_t>(o->accepted_.peer.capacity());
      int fd = ::accept4(o->fd_, o->accepted_.peer.data(), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd >= 0) {
        o->accepted_.fd.reset(fd);  // closed with the operation if no handler ever takes it
        o->accepted_.peer.resize(len);
        return done;
      }
      switch (errno) {
        case EINTR:
        case ECONNABORTED:  // the client gave up while queued: take the next one
        case EPROTO:
          continue;
        // Not EPERM: a security module refuses before the connection leaves the queue, so a
        // retry here would spin; the handler's back-off takes it.
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
          return not_done;
        default:
          o->ec_ = boost::system::error_code(errno, boost::system::system_category());
          return done;
      }
    }
  }

 protected:
  int fd_;
  Accepted accepted_;
};

template <typename Handler>
class AcceptOp : public AcceptOpBase {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(AcceptOp);

  AcceptOp(int fd, Handler& handler, const Executor& io_ex)
      : AcceptOpBase(fd, &AcceptOp::do_complete), handler_(std::move(handler)), work_(handler_, io_ex) {}

  static void do_complete(void* owner, ad::operation* base, const boost::system::error_code&, std::size_t) {
    auto* o = static_cast<AcceptOp*>(base);
    ptr p = {std::addressof(o->handler_), o, o};
    ad::handler_work<Handler, Executor> w(std::move(o->work_));
    // Moved out: from here the handler owns the descriptor, and closes it whether or not it runs.
    ad::move_binder2<Handler, boost::system::error_code, Accepted> handler(0, std::move(o->handler_), o->ec_,
                                                                        std::move(o->accepted_));
    complete_op(owner, p, w, handler);
  }

 private:
  Handler handler_;
  ad::handler_work<Handler, Executor> work_;
};

struct InitiateAccept {
  template <typename Handler>
  void operator()(Handler&& handler, ad::epoll_reactor* reactor, Acceptor* acceptor) const {
    using Op = AcceptOp<std::decay_t<Handler>>;
    bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
    typename Op::ptr p = {std::addressof(handler), Op::ptr::allocate(handler), nullptr};
    p.p = new (p.v) Op(acceptor->native_handle(), handler, acceptor->get_executor());
    // Speculative: accept4() at once (usually EAGAIN after the last connection), then wait for
    // the listener's event, with no EPOLL_CTL_MOD (Asio's async_wait re-arms with one each time).
    reactor->start_op(ad::reactor::read_op, acceptor->native_handle(), acceptor_reactor_data(*acceptor), p.p,
                      is_continuation, true);
    p.v = p.p = nullptr;
  }
};

struct InitiateRecv {
  template <typename Handler>
  void operator()(Handler&& handler, ad::epoll_reactor* reactor, Socket* socket, asio::mutable_buffer buffer,
                  bool to_eof, ReadLender* lender) const {
    using Op = RecvOp<std::decay_t<Handler>>;
    auto& impl = SocketAccess::impl(*socket);
    bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
    typename Op::ptr p = {std::addressof(handler), Op::ptr::allocate(handler), nullptr};
    p.p = new (p.v) Op(impl.socket_, buffer.data(), buffer.size(), to_eof, lender, handler, socket->get_executor());
    // A read to the end of the stream tries recv() first even after an earlier short read on this
    // socket (a tunnel's first read, after the 101's head took the service's bytes and its FIN).
    if (to_eof) mark_readable(*socket);
    if (buffer.size() == 0 && !lender) {
      reactor->post_immediate_completion(p.p, is_continuation);  // as Asio: an empty read completes at once
    } else if ((impl.state_ & ad::socket_ops::non_blocking) ||
               ad::socket_ops::set_internal_non_blocking(impl.socket_, impl.state_, true, p.p->ec_)) {
      reactor->start_op(ad::reactor::read_op, impl.socket_, impl.reactor_data_, p.p, is_continuation, true);
    } else {
      reactor->post_immediate_completion(p.p, is_continuation);  // carries set_internal_non_blocking's error
    }
    p.v = p.p = nullptr;
  }
};
}  // namespace recv_detail

using RecvReactor = asio::detail::epoll_reactor;

// acceptor.async_accept(peer, token), with accept4(): the new descriptor comes non-blocking and
// close-on-exec with the peer's address, and is not yet in any reactor (a worker that hands it to
// another one never registers it). Completion: void(error_code, Accepted). The acceptor must be
// non-blocking (acceptor.non_blocking(true)); its reactor must be `reactor`.
template <typename Token>
auto async_accept4(RecvReactor& reactor, Acceptor& acceptor, Token&& token) {
  return asio::async_initiate<Token, void(boost::system::error_code, Accepted)>(recv_detail::InitiateAccept{}, token,
                                                                                &reactor, &acceptor);
}

// A socket the worker accepted itself with accept4(SOCK_NONBLOCK | SOCK_CLOEXEC) and assigned:
// tells Asio what it cannot know, saving three syscalls per connection.
//  - It is non-blocking already: no FIONBIO ioctl before the first operation.
//  - It is not a duplicate of another descriptor (assign() must assume it may be): closing it
//    takes it out of the epoll set, so close() needs no EPOLL_CTL_DEL first.
//  - Nothing is known to be readable yet: the first read waits for the epoll event (which
//    epoll_ctl ADD already raised if the request is there) instead of trying recv() on a
//    connection whose request has not arrived (nginx's `ready` flag starts clear, too).
// Call right after assign(), on the socket's reactor thread, before any operation on it.
void adopt_accepted(Socket& socket);
// Whether the next read on the socket will try recv() before waiting for epoll: false only after
// a read that took everything queued, with no readiness event since (Worker::take_idle, tests).
bool reads_speculatively(Socket& socket);

// The io_context's reactor: look it up once per connection, not per read (use_service locks).
inline RecvReactor& reactor_of(asio::io_context& io) { return asio::use_service<RecvReactor>(io); }

// socket.async_read_some(buffer, token), minus the speculative recv() after a short read.
// `reactor`: reactor_of(the socket's io_context).
template <typename Token>
auto async_recv(RecvReactor& reactor, Socket& socket, asio::mutable_buffer buffer, Token&& token) {
  return asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
      recv_detail::InitiateRecv{}, token, &reactor, &socket, buffer, false, nullptr);
}
// async_recv into whatever `lender` lends when the socket has bytes (or an end) to read; the
// bytes read are at the start of the room lend() returned last.
template <typename Token>
auto async_recv_lent(RecvReactor& reactor, Socket& socket, ReadLender& lender, Token&& token) {
  return asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
      recv_detail::InitiateRecv{}, token, &reactor, &socket, asio::mutable_buffer(), false, &lender);
}
// The same for a stream whose end matters (a body delimited by the close, a tunnel): a short read
// does not stop the next read from trying recv() first, so a FIN that came with the last bytes is
// seen at once (it raises no epoll event of its own).
template <typename Token>
auto async_recv_to_eof(RecvReactor& reactor, Socket& socket, asio::mutable_buffer buffer, Token&& token) {
  return asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
      recv_detail::InitiateRecv{}, token, &reactor, &socket, buffer, true, nullptr);
}
#else
struct RecvReactor {};
inline RecvReactor& reactor_of(asio::io_context&) {
  static RecvReactor r;
  return r;
}
template <typename Token>
auto async_recv(RecvReactor&, Socket& socket, asio::mutable_buffer buffer, Token&& token) {
  return socket.async_read_some(buffer, std::forward<Token>(token));
}
template <typename Token>
auto async_recv_to_eof(RecvReactor&, Socket& socket, asio::mutable_buffer buffer, Token&& token) {
  return socket.async_read_some(buffer, std::forward<Token>(token));
}
// Without the reactor's operation the buffer is lent before the wait: a waiting read holds it
// (such builds give up ADR 0009's idle-memory savings, not correctness).
template <typename Token>
auto async_recv_lent(RecvReactor&, Socket& socket, ReadLender& lender, Token&& token) {
  return socket.async_read_some(lender.lend(), std::forward<Token>(token));
}
// Asio's accept, then the descriptor taken out of the reactor again (an epoll_ctl pair).
template <typename Token>
auto async_accept4(RecvReactor&, Acceptor& acceptor, Token&& token) {
  struct State {
    Socket socket;
    tcp::endpoint peer;
  };
  return asio::async_initiate<Token, void(boost::system::error_code, Accepted)>(
      [&acceptor](auto handler) {
        auto state = std::make_shared<State>(State{Socket(acceptor.get_executor()), {}});
        acceptor.async_accept(state->socket, state->peer,
                              [state, handler = std::move(handler)](const boost::system::error_code& ec) mutable {
                                Accepted a;
                                boost::system::error_code ignored;
                                if (!ec) {
                                  // As accept4(SOCK_NONBLOCK | SOCK_CLOEXEC) would have made it.
                                  a = Accepted{UniqueFd(state->socket.release(ignored)), state->peer};
                                  ::fcntl(a.fd.get(), F_SETFL, ::fcntl(a.fd.get(), F_GETFL) | O_NONBLOCK);
                                  ::fcntl(a.fd.get(), F_SETFD, FD_CLOEXEC);
                                }
                                std::move(handler)(ec, std::move(a));
                              });
      },
      token);
}
inline void adopt_accepted(Socket&) {}  // Asio sets the socket non-blocking again (one ioctl)
inline bool reads_speculatively(Socket&) { return true; }
#endif

}  // namespace flotilla::gateway
