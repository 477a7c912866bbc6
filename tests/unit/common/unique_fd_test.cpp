#include "common/unique_fd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <type_traits>
#include <utility>
#include <vector>

namespace flotilla {
namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

int open_fd() {
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  return fd;
}

static_assert(!std::is_copy_constructible_v<UniqueFd>);
static_assert(!std::is_copy_assignable_v<UniqueFd>);
static_assert(std::is_nothrow_move_constructible_v<UniqueFd>);  // vector growth moves, never copies

TEST(UniqueFdTest, ClosesWhenItGoesOutOfScope) {
  int fd = open_fd();
  {
    UniqueFd f(fd);
    EXPECT_TRUE(f.valid());
    EXPECT_EQ(f.get(), fd);
    EXPECT_TRUE(is_open(fd));
  }
  EXPECT_FALSE(is_open(fd));
}

TEST(UniqueFdTest, MoveTransfersOwnershipAndClosesOnce) {
  int fd = open_fd();
  UniqueFd a(fd);
  UniqueFd b(std::move(a));
  EXPECT_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): the moved-from state is the contract
  EXPECT_EQ(b.get(), fd);
  a.reset();  // closing the moved-from one must not close b's descriptor
  EXPECT_TRUE(is_open(fd));
  b = UniqueFd();
  EXPECT_FALSE(is_open(fd));
}

TEST(UniqueFdTest, MoveAssignmentClosesTheDescriptorItReplaces) {
  int first = open_fd(), second = open_fd();
  UniqueFd a(first), b(second);
  a = std::move(b);
  EXPECT_FALSE(is_open(first));
  EXPECT_TRUE(is_open(second));
  EXPECT_EQ(a.get(), second);
  UniqueFd& self = a;
  a = std::move(self);  // self-move keeps it
  EXPECT_TRUE(is_open(second));
}

TEST(UniqueFdTest, ReleaseGivesItUpWithoutClosing) {
  int fd = open_fd();
  {
    UniqueFd f(fd);
    EXPECT_EQ(f.release(), fd);
    EXPECT_FALSE(f.valid());
  }
  EXPECT_TRUE(is_open(fd));
  ::close(fd);
}

TEST(UniqueFdTest, ResetClosesTheOldAndOwnsTheNew) {
  int first = open_fd(), second = open_fd();
  UniqueFd f(first);
  f.reset(second);
  EXPECT_FALSE(is_open(first));
  EXPECT_EQ(f.get(), second);
  f.reset();
  EXPECT_FALSE(is_open(second));
  EXPECT_FALSE(f.valid());
}

TEST(UniqueFdTest, SurvivesVectorGrowth) {
  std::vector<int> raw;
  {
    std::vector<UniqueFd> v;
    for (int i = 0; i < 40; ++i) {  // several reallocations
      raw.push_back(open_fd());
      v.emplace_back(raw.back());
    }
    for (int fd : raw) EXPECT_TRUE(is_open(fd));
  }
  for (int fd : raw) EXPECT_FALSE(is_open(fd));
}

}  // namespace
}  // namespace flotilla
