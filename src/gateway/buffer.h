// A byte buffer with a read window, for the proxy's reads: grows up to a limit, compacts when it
// must, never zeroes what it allocates. Movable, so workers can lend relay buffers to requests.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>
#include <utility>

namespace flotilla::gateway {

// A byte buffer with a read window [begin, end); grows up to a limit, compacts when it must.
class Buffer {
 public:
  explicit Buffer(size_t initial = 0) { if (initial) grow(initial); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    data_ = std::move(o.data_);
    cap_ = std::exchange(o.cap_, 0);
    begin_ = std::exchange(o.begin_, 0);
    end_ = std::exchange(o.end_, 0);
    return *this;
  }
  std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
  size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  size_t capacity() const { return cap_; }
  void consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  // Room for at least `want` more bytes after end(), growing to at most `limit` in all. Returns
  // the room there is (0 when full at the limit).
  size_t make_room(size_t want, size_t limit);
  char* write_ptr() { return data_.get() + end_; }
  size_t room() const { return cap_ - end_; }
  void commit(size_t n) { end_ += n; }
  void clear() { begin_ = end_ = 0; }
  // Gives memory back when a big buffer is empty again.
  void shrink(size_t to);

 private:
  void grow(size_t cap);
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0, begin_ = 0, end_ = 0;
};

}  // namespace flotilla::gateway
