// async_recv: a read that skips the speculative recv() after a short read must never miss data,
// whenever it arrives (before the next read is queued, after, or while the reactor ran with no
// read queued), and must report end of stream, errors and cancellation as async_read_some does.
#include "gateway/recv.h"

#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <chrono>
#include <optional>
#include <string>
#include <thread>

namespace flotilla::gateway {
namespace {

using boost::system::error_code;
using namespace std::chrono_literals;

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
  // Runs the io_context until the read completed or 2 s passed.
  bool finish() {
    auto deadline = std::chrono::steady_clock::now() + 2s;
    while (!result_ && std::chrono::steady_clock::now() < deadline) {
      io_.restart();
      io_.run_for(20ms);
    }
    return result_.has_value();
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

}  // namespace
}  // namespace flotilla::gateway
