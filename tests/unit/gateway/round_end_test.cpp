// RoundEnd: a function run once per round, after the handlers already queued and before the
// reactor looks for new events (with Boost 1.74's epoll scheduler; asio::post elsewhere).
#include "gateway/round_end.h"

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "gateway/worker.h"

namespace flotilla::gateway {
namespace {

using boost::system::error_code;

TEST(RoundEndTest, RunsOnceAfterTheHandlersAlreadyQueuedHowOftenItIsScheduled) {
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  std::vector<std::string> order;
  RoundEnd end(io, [&] { order.push_back("end"); });
  asio::post(io, [&] {
    order.push_back("a");
    end.schedule();
    end.schedule();
    EXPECT_TRUE(end.scheduled());
  });
  asio::post(io, [&] {
    order.push_back("b");
    end.schedule();
  });
  io.run();
  EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "end"}));
  EXPECT_FALSE(end.scheduled());
}

TEST(RoundEndTest, RunsAgainWhenScheduledAgainIncludingFromItsOwnRun) {
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  int runs = 0;
  std::unique_ptr<RoundEnd> end;
  end = std::make_unique<RoundEnd>(io, [&] {
    if (++runs < 5) end->schedule();
  });
  asio::post(io, [&] { end->schedule(); });
  io.run();
  EXPECT_EQ(runs, 5);
}

// The point of RoundEnd: the reactor does not look between the round's handlers and the
// function. A handler starts a wait on a timer that has already expired and schedules the
// function. Asio's reactor takes expired timers out of its queue when it looks (epoll_wait sees
// its timerfd), so the function can still cancel the wait only if the reactor has not looked
// since. Behind the reactor task (asio::post) the non-blocking look comes first.
TEST(RoundEndTest, RunsBeforeTheReactorLooksForNewEvents) {
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  asio::steady_timer timer(io);
  size_t cancelled = 99;
  error_code wait_ec;
  bool waited = false;
  RoundEnd end(io, [&] { cancelled = timer.cancel(); });
  asio::post(io, [&] {
    timer.expires_at(asio::steady_timer::clock_type::now() - std::chrono::seconds(1));
    timer.async_wait([&](error_code ec) {
      waited = true;
      wait_ec = ec;
    });
    end.schedule();
  });
  io.run();
  ASSERT_TRUE(waited);
  if (RoundEnd::before_reactor()) {
    EXPECT_EQ(cancelled, 1u);
    EXPECT_EQ(wait_ec, asio::error::operation_aborted);
  } else {
    EXPECT_EQ(cancelled, 0u);
    EXPECT_FALSE(wait_ec);
  }
}

TEST(RoundEndTest, HandlersPostedInTheSameRoundStillRun) {
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  asio::steady_timer keep_reactor(io);  // a reactor task in the queue, as in a worker
  keep_reactor.expires_after(std::chrono::hours(1));
  keep_reactor.async_wait([](error_code) {});
  std::vector<std::string> order;
  RoundEnd end(io, [&] { order.push_back("end"); });
  asio::post(io, [&] {
    asio::post(io, [&] {
      order.push_back("posted");
      keep_reactor.cancel();
    });
    end.schedule();
  });
  io.run();
  ASSERT_EQ(order.size(), 2u);
  // In front of the reactor the function comes before what was posted behind it.
  if (RoundEnd::before_reactor()) {
    EXPECT_EQ(order[0], "end");
  }
}

TEST(RoundEndTest, DestroyingTheIoContextWithARunPendingDoesNotRunIt) {
  bool ran = false;
  auto io = std::make_unique<asio::io_context>(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  RoundEnd end(*io, [&] { ran = true; });
  asio::post(*io, [&] {
    end.schedule();
    io->stop();
  });
  io->run();
  io.reset();  // the queued operation is destroyed, not run (ASan checks nothing is touched)
  EXPECT_FALSE(ran);
  EXPECT_FALSE(end.scheduled());
}

// Many rounds of socket traffic: one run per round that scheduled, none lost.
TEST(RoundEndTest, OneRunPerRoundOverManyRoundTrips) {
  asio::io_context io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  Acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  Socket peer(io), socket(io);
  peer.connect(acceptor.local_endpoint());
  acceptor.accept(socket);
  constexpr int kRounds = 2000;
  int sent = 0, received = 0, runs = 0;
  char in[1];
  RoundEnd end(io, [&] {
    ++runs;
    // The flush: send the next byte once the round that asked for it is over.
    if (sent < kRounds) {
      ++sent;
      asio::write(peer, asio::buffer("y", 1));
    }
  });
  std::function<void()> read_one = [&] {
    socket.async_read_some(asio::buffer(in), [&](error_code ec, size_t n) {
      ASSERT_FALSE(ec);
      received += static_cast<int>(n);
      if (received < kRounds) {
        end.schedule();
        read_one();
      }
    });
  };
  read_one();
  asio::post(io, [&] { end.schedule(); });
  io.run();
  EXPECT_EQ(received, kRounds);
  EXPECT_EQ(sent, kRounds);
  EXPECT_EQ(runs, kRounds);
}

}  // namespace
}  // namespace flotilla::gateway
