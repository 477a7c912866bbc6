#include "common/thread_name.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

namespace flotilla {
namespace {

// What the kernel says the calling thread is called.
std::string own_thread_name() {
  std::ifstream in("/proc/self/task/" + std::to_string(::syscall(SYS_gettid)) + "/comm");
  std::string name;
  std::getline(in, name);
  return name;
}

std::string named_in_a_thread(std::string_view name) {
  std::string seen;
  std::thread t([&] {
    set_thread_name(name);
    seen = own_thread_name();
  });
  t.join();
  return seen;
}

TEST(ThreadName, IsWhatTheKernelShows) { EXPECT_EQ(named_in_a_thread("gw-worker-3"), "gw-worker-3"); }

TEST(ThreadName, LongerThanFifteenBytesIsCutThere) {
  // pthread_setname_np refuses names over 15 bytes and would leave the old one.
  EXPECT_EQ(named_in_a_thread("gw-worker-123456789"), "gw-worker-12345");
}

TEST(ThreadName, OnlyTheCallingThreadIsRenamed) {
  const std::string before = own_thread_name();
  named_in_a_thread("elsewhere");
  EXPECT_EQ(own_thread_name(), before);
}

}  // namespace
}  // namespace flotilla
