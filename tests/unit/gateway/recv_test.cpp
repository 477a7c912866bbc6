// async_recv: a read that skips the speculative recv() after a short read must never miss data,
// whenever it arrives (before the next read is queued, after, or while the reactor ran with no
// read queued), and must report end of stream, errors and cancellation as async_read_some does.
// async_accept4 and adopt_accepted: the worker's own accept, and what it tells Asio about the
// accepted socket.
#include "gateway/recv.h"

#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace flotilla::gateway {
namespace {

using boost::system::error_code;
using namespace std::chrono_literals;

// Runs the io_context until done() or 2 s passed; done()'s last answer.
template <typename Done>
bool run_until(asio::io_context& io, Done done) {
  auto deadline = std::chrono::steady_clock::now() + 2s;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(20ms);
  }
  return done();
}

struct Result {
  error_code ec;
  size_t n = 0;
};

class RecvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Acceptor acceptor(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    peer_.connect(acceptor.local_endpoint());
    acceptor.accept(socket_);
  }

  // Starts a read into buf_ (size `size`); the result lands in result_.
  void start(size_t size) {
    result_.reset();
    async_recv(reactor_of(io_), socket_, asio::buffer(buf_, size),
               [this](error_code ec, size_t n) { result_ = Result{ec, n}; });
  }
  // The same with async_recv_to_eof.
  void start_to_eof(size_t size) {
    result_.reset();
    async_recv_to_eof(reactor_of(io_), socket_, asio::buffer(buf_, size),
                      [this](error_code ec, size_t n) { result_ = Result{ec, n}; });
  }
  // Runs the io_context until the read completed or 2 s passed.
  bool finish() {
    return run_until(io_, [this] { return result_.has_value(); });
  }
  std::string got() const { return std::string(buf_, result_ ? result_->n : 0); }
  void send(const std::string& s) { asio::write(peer_, asio::buffer(s)); }
  // Lets the reactor harvest whatever readiness is pending, with no read queued.
  void spin_reactor() {
    std::this_thread::sleep_for(20ms);
    io_.restart();
    io_.poll();
  }

  asio::io_context io_;
  Socket socket_{io_};
  tcp::socket peer_{io_};
  char buf_[64];
  std::optional<Result> result_;
};

TEST_F(RecvTest, ShortReadThenDataArrivingWhileTheNextReadWaits) {
  send("abc");
  start(16);
  ASSERT_TRUE(finish());
  EXPECT_FALSE(result_->ec);
  EXPECT_EQ(got(), "abc");
  start(16);  // drained: queued without a recv()
  spin_reactor();
  EXPECT_FALSE(result_.has_value());
  send("de");
  ASSERT_TRUE(finish());
  EXPECT_EQ(got(), "de");
}

// The bytes and the FIN arrive as one readiness event and one short read takes the bytes: no
// event announces the FIN. A read to the end of the stream must still see it (a body delimited by
// the close, a tunnel); async_recv would wait for the next event.
TEST_F(RecvTest, AReadToEofSeesAFinThatCameWithTheLastBytes) {
  send("abc");
  start(16);
  ASSERT_TRUE(finish());
  start(16);  // drained: waits for epoll
  spin_reactor();
  send("xyz");
  peer_.shutdown(tcp::socket::shutdown_send);
  std::this_thread::sleep_for(20ms);  // bytes and FIN both there before the reactor looks
  ASSERT_TRUE(finish());
  EXPECT_EQ(got(), "xyz");
  start_to_eof(16);
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::eof);
}

TEST_F(RecvTest, AReadToEofAfterAShortReadStillWaitsForLaterBytes) {
  send("abc");
  start_to_eof(16);
  ASSERT_TRUE(finish());
  EXPECT_EQ(got(), "abc");
  start_to_eof(16);  // tries recv() (EAGAIN), then waits for epoll
  spin_reactor();
  EXPECT_FALSE(result_.has_value());
  send("de");
  ASSERT_TRUE(finish());
  EXPECT_EQ(got(), "de");
  peer_.shutdown(tcp::socket::shutdown_send);
  start_to_eof(16);
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::eof);
}

TEST_F(RecvTest, DataThatArrivedBeforeTheNextReadIsNotLost) {
  send("abc");
  start(16);
  ASSERT_TRUE(finish());
  // The bytes arrive and the reactor sees their event while no read is queued: the next read
  // must still find them (the event re-enables the speculative recv()).
  send("xyz");
  spin_reactor();
  spin_reactor();
  start(16);
  ASSERT_TRUE(finish());
  EXPECT_FALSE(result_->ec);
  EXPECT_EQ(got(), "xyz");
}

TEST_F(RecvTest, DataThatArrivedBeforeTheReactorRanIsNotLost) {
  send("abc");
  start(16);
  ASSERT_TRUE(finish());
  send("uvw");
  std::this_thread::sleep_for(20ms);  // arrived; the reactor has not run since
  start(16);
  ASSERT_TRUE(finish());
  EXPECT_EQ(got(), "uvw");
}

TEST_F(RecvTest, AFullBufferReadsTheRestAtOnce) {
  send(std::string(24, 'a') + std::string(8, 'b'));
  std::this_thread::sleep_for(20ms);
  start(24);
  ASSERT_TRUE(finish());
  EXPECT_EQ(got(), std::string(24, 'a'));
  start(24);
  ASSERT_TRUE(finish());
  EXPECT_EQ(got(), std::string(8, 'b'));
}

TEST_F(RecvTest, EndOfStreamAfterAShortRead) {
  send("abc");
  start(16);
  ASSERT_TRUE(finish());
  start(16);
  spin_reactor();
  peer_.close();
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::eof);
  EXPECT_EQ(result_->n, 0u);
}

TEST_F(RecvTest, EndOfStreamThatArrivedWithNoReadQueued) {
  send("abc");
  start(16);
  ASSERT_TRUE(finish());
  peer_.close();
  spin_reactor();
  start(16);
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::eof);
}

TEST_F(RecvTest, CancelAndCloseAbortAWaitingRead) {
  start(16);
  spin_reactor();
  ASSERT_FALSE(result_.has_value());
  error_code ignored;
  socket_.cancel(ignored);
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::operation_aborted);

  start(16);
  spin_reactor();
  socket_.close(ignored);
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::operation_aborted);
}

TEST_F(RecvTest, AResetIsAnError) {
  send("abc");
  start(16);
  ASSERT_TRUE(finish());
  start(16);
  spin_reactor();
  peer_.set_option(asio::socket_base::linger(true, 0));  // close() sends RST
  peer_.close();
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::connection_reset);
}

TEST_F(RecvTest, AnEmptyBufferCompletesAtOnce) {
  start(0);
  ASSERT_TRUE(finish());
  EXPECT_FALSE(result_->ec);
  EXPECT_EQ(result_->n, 0u);
}

TEST_F(RecvTest, ManyRoundTripsInALoop) {
  // The proxy's pattern: a small message, a short read, the next read queued before the next
  // message. 2000 rounds, each must complete.
  for (int i = 0; i < 2000; ++i) {
    std::string message = "m";
    message.push_back(static_cast<char>('0' + i % 10));
    start(16);
    send(message);
    ASSERT_TRUE(finish()) << "round " << i;
    ASSERT_EQ(got(), message) << "round " << i;
  }
}

// ---- async_recv_lent ----

// A lender that counts what it lends, as the connection does with the worker's relay buffers.
class CountingLender : public ReadLender {
 public:
  asio::mutable_buffer lend() override {
    ++lent;
    out = true;
    return asio::buffer(buf, size);
  }
  void take_back() override {
    ++taken_back;
    out = false;
  }
  char buf[64];
  size_t size = sizeof buf;
  int lent = 0, taken_back = 0;
  bool out = false;  // lent and not taken back
};

class LentRecvTest : public RecvTest {
 protected:
  void start_lent() {
    result_.reset();
    async_recv_lent(reactor_of(io_), socket_, lender_, [this](error_code ec, size_t n) { result_ = Result{ec, n}; });
  }
  std::string lent_got() const { return std::string(lender_.buf, result_ ? result_->n : 0); }
  CountingLender lender_;
};

TEST_F(LentRecvTest, AWaitingReadHoldsNoBufferUntilBytesArrive) {
  send("abc");
  start(16);
  ASSERT_TRUE(finish());
  start_lent();  // drained: waits for epoll without lending
  spin_reactor();
  EXPECT_FALSE(result_.has_value());
  EXPECT_EQ(lender_.lent, 0);
  send("GET / HTTP/1.1\r\n");
  ASSERT_TRUE(finish());
  EXPECT_FALSE(result_->ec);
  EXPECT_EQ(lent_got(), "GET / HTTP/1.1\r\n");
  EXPECT_EQ(lender_.lent, 1);
  EXPECT_EQ(lender_.taken_back, 0);
}

TEST_F(LentRecvTest, ASpeculativeTryThatFindsNothingGivesTheBufferBack) {
  // A socket Asio accepted itself tries recv() first: EAGAIN, so the buffer goes back while the
  // read waits, and is lent again when the bytes come.
  ASSERT_TRUE(reads_speculatively(socket_));
  start_lent();
  spin_reactor();
  EXPECT_FALSE(result_.has_value());
  EXPECT_EQ(lender_.lent, 1);
  EXPECT_EQ(lender_.taken_back, 1);
  EXPECT_FALSE(lender_.out);
  send("xyz");
  ASSERT_TRUE(finish());
  EXPECT_EQ(lent_got(), "xyz");
  EXPECT_EQ(lender_.lent, 2);
  EXPECT_TRUE(lender_.out);
}

TEST_F(LentRecvTest, BytesAlreadyThereAreReadAtOnce) {
  send("uvw");
  std::this_thread::sleep_for(20ms);
  start_lent();
  ASSERT_TRUE(finish());
  EXPECT_EQ(lent_got(), "uvw");
  EXPECT_EQ(lender_.lent, 1);
  EXPECT_EQ(lender_.taken_back, 0);
}

TEST_F(LentRecvTest, EndOfStreamAndCancelLeaveNothingLentButTheEndingRead) {
  start_lent();
  spin_reactor();
  error_code ignored;
  socket_.cancel(ignored);
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::operation_aborted);
  EXPECT_FALSE(lender_.out);
  start_lent();
  spin_reactor();
  peer_.close();
  ASSERT_TRUE(finish());
  EXPECT_EQ(result_->ec, asio::error::eof);
  EXPECT_EQ(result_->n, 0u);
}

// recv() into no room would return 0, which reads as the end of the stream: an error instead.
TEST_F(LentRecvTest, ALenderWithNoRoomIsAnErrorNotAnEnd) {
  lender_.size = 0;
  send("abc");
  std::this_thread::sleep_for(20ms);
  start_lent();
  ASSERT_TRUE(finish());
#ifdef FLOTILLA_DRAIN_AWARE_RECV
  EXPECT_EQ(result_->ec, asio::error::no_buffer_space);
#else
  EXPECT_FALSE(result_->ec);  // Asio's empty read completes at once with nothing
#endif
  EXPECT_EQ(result_->n, 0u);
}

// ---- async_accept4 and adopt_accepted ----

class AcceptTest : public ::testing::Test {
 protected:
  void SetUp() override { acceptor_.non_blocking(true); }
  tcp::endpoint endpoint() const { return acceptor_.local_endpoint(); }
  void start() {
    accepted_.reset();
    async_accept4(reactor_of(io_), acceptor_, [this](error_code ec, Accepted a) { accepted_.emplace(ec, std::move(a)); });
  }
  bool finish() {
    return run_until(io_, [this] { return accepted_.has_value(); });
  }
  int take_fd() { return accepted_->second.fd.release(); }

  asio::io_context io_{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE};
  Acceptor acceptor_{io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::optional<std::pair<error_code, Accepted>> accepted_;
};

TEST_F(AcceptTest, GivesANonBlockingCloseOnExecDescriptorAndThePeersAddress) {
  tcp::socket client(io_);
  client.connect(endpoint());
  start();
  ASSERT_TRUE(finish());
  ASSERT_FALSE(accepted_->first) << accepted_->first.message();
  const Accepted& a = accepted_->second;
  ASSERT_TRUE(a.fd.valid());
  EXPECT_TRUE(::fcntl(a.fd.get(), F_GETFL) & O_NONBLOCK);
  EXPECT_TRUE(::fcntl(a.fd.get(), F_GETFD) & FD_CLOEXEC);
  EXPECT_EQ(a.peer, client.local_endpoint());
}

TEST_F(AcceptTest, WaitsForAConnectionThatComesLater) {
  start();
  io_.restart();
  io_.run_for(30ms);
  EXPECT_FALSE(accepted_.has_value());  // nothing queued: the operation waits
  tcp::socket client(io_);
  client.connect(endpoint());
  ASSERT_TRUE(finish());
  ASSERT_FALSE(accepted_->first);
  EXPECT_EQ(accepted_->second.peer, client.local_endpoint());
}

TEST_F(AcceptTest, QueuedConnectionsAreEachAcceptedOnce) {
  std::vector<std::unique_ptr<tcp::socket>> clients;
  std::set<uint16_t> ports;
  for (int i = 0; i < 20; ++i) {
    clients.push_back(std::make_unique<tcp::socket>(io_));
    clients.back()->connect(endpoint());
    ports.insert(clients.back()->local_endpoint().port());
  }
  std::set<uint16_t> got;
  for (int i = 0; i < 20; ++i) {
    start();
    ASSERT_TRUE(finish()) << i;
    ASSERT_FALSE(accepted_->first);
    got.insert(accepted_->second.peer.port());
    accepted_->second.fd.reset();
  }
  EXPECT_EQ(got, ports);
  start();
  io_.restart();
  io_.run_for(30ms);
  EXPECT_FALSE(accepted_.has_value());  // the queue is empty
}

TEST_F(AcceptTest, ClosingTheAcceptorAbortsAWaitingAccept) {
  start();
  io_.restart();
  io_.run_for(20ms);
  error_code ignored;
  acceptor_.close(ignored);
  ASSERT_TRUE(finish());
  EXPECT_EQ(accepted_->first, asio::error::operation_aborted);
  EXPECT_FALSE(accepted_->second.fd.valid());
}

TEST_F(AcceptTest, ADescriptorNeverDeliveredIsClosed) {
  tcp::socket client(io_);
  client.connect(endpoint());
  {
    // Accepted at once (speculatively), its completion queued, and the io_context destroyed
    // before it runs: the descriptor must not leak (the client then sees the connection close).
    asio::io_context io;
    Acceptor acceptor(io);
    acceptor.assign(tcp::v4(), ::dup(acceptor_.native_handle()));
    acceptor.non_blocking(true);
    bool ran = false;
    async_accept4(reactor_of(io), acceptor, [&](error_code, Accepted) { ran = true; });
    EXPECT_FALSE(ran);
  }
  timeval two_seconds{2, 0};  // a leaked descriptor would leave the read waiting: fail instead
  ASSERT_EQ(::setsockopt(client.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &two_seconds, sizeof two_seconds), 0);
  char byte;
  ssize_t n = ::recv(client.native_handle(), &byte, 1, 0);  // Asio's read would poll on past the timeout
  EXPECT_EQ(n, 0) << (n < 0 ? std::strerror(errno) : "data");
}

TEST_F(AcceptTest, AnAdoptedSocketReadsWhatIsAlreadyThereAndWhatComesLater) {
  tcp::socket client(io_);
  client.connect(endpoint());
  asio::write(client, asio::buffer(std::string("early")));
  start();
  ASSERT_TRUE(finish());
  std::this_thread::sleep_for(10ms);  // the request is there before the socket enters the reactor
  Socket socket(io_);
  socket.assign(tcp::v4(), take_fd());
  EXPECT_TRUE(reads_speculatively(socket));  // what assign() alone leaves
  adopt_accepted(socket);
  EXPECT_FALSE(reads_speculatively(socket));  // the first read waits for epoll's event
  EXPECT_FALSE(socket.non_blocking());         // Asio's own flag (the user's) is untouched

  char buf[16];
  std::optional<std::pair<error_code, size_t>> r;
  auto read = [&] {
    r.reset();
    async_recv(reactor_of(io_), socket, asio::buffer(buf), [&](error_code ec, size_t n) { r.emplace(ec, n); });
    return run_until(io_, [&] { return r.has_value(); });
  };
  ASSERT_TRUE(read());  // epoll_ctl ADD raised the event for the bytes already queued
  ASSERT_FALSE(r->first);
  EXPECT_EQ(std::string(buf, r->second), "early");

  r.reset();
  async_recv(reactor_of(io_), socket, asio::buffer(buf), [&](error_code ec, size_t n) { r.emplace(ec, n); });
  io_.restart();
  io_.run_for(20ms);
  EXPECT_FALSE(r.has_value());
  asio::write(client, asio::buffer(std::string("late")));
  ASSERT_TRUE(run_until(io_, [&] { return r.has_value(); }));
  EXPECT_EQ(std::string(buf, r->second), "late");

  // And writes work on it without Asio setting it non-blocking first.
  asio::write(socket, asio::buffer(std::string("back")));
  char reply[4];
  asio::read(client, asio::buffer(reply));
  EXPECT_EQ(std::string(reply, 4), "back");
}

TEST_F(AcceptTest, ClosingAnAdoptedSocketLeavesNoRegistrationBehind) {
  // close() skips EPOLL_CTL_DEL for an adopted socket: the kernel drops a closed descriptor
  // from the epoll set itself. The next connection usually gets the same descriptor number;
  // registering it again must work (EEXIST if anything was left behind), and so must reading.
  for (int i = 0; i < 50; ++i) {
    tcp::socket client(io_);
    client.connect(endpoint());
    asio::write(client, asio::buffer(std::string("x")));
    start();
    ASSERT_TRUE(finish()) << i;
    Socket socket(io_);
    error_code ec;
    socket.assign(tcp::v4(), take_fd(), ec);
    ASSERT_FALSE(ec) << "round " << i << ": " << ec.message();
    adopt_accepted(socket);
    char buf[4];
    std::optional<size_t> n;
    async_recv(reactor_of(io_), socket, asio::buffer(buf), [&](error_code e, size_t k) { n = e ? 0 : k; });
    run_until(io_, [&] { return n.has_value(); });
    ASSERT_EQ(n, std::optional<size_t>(1)) << "round " << i;
    socket.close(ec);
    ASSERT_FALSE(ec);
  }
}

}  // namespace
}  // namespace flotilla::gateway
