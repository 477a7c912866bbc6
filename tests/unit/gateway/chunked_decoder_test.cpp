#include "gateway/http1/chunked_decoder.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "gateway/http1/request_parser.h"

using namespace flotilla::gateway::http1;
using Status = ChunkedDecoder::Status;
using namespace std::string_literals;

namespace {

struct Decoded {
  Status status = Status::need_more;
  std::string body;
  size_t consumed = 0;  // of the whole input, up to the end of the body or the offending byte
  int http_status = 0;
  std::string reason;
  bool operator==(const Decoded&) const = default;
};

std::ostream& operator<<(std::ostream& o, const Decoded& d) {
  return o << "{status " << static_cast<int>(d.status) << ", body " << testing::PrintToString(d.body) << ", consumed "
           << d.consumed << ", " << d.http_status << " " << d.reason << "}";
}

// Feeds `input` in pieces ending at each of `cuts` (then the rest), as a connection would.
Decoded decode(std::string_view input, const std::vector<size_t>& cuts = {}, const Limits& limits = {}) {
  ChunkedDecoder d(limits);
  Decoded out;
  size_t from = 0;
  auto pieces = cuts;
  pieces.push_back(input.size());
  for (size_t to : pieces) {
    if (to < from) continue;
    // Each piece in its own buffer: data views must point into the piece given.
    std::string piece(input.substr(from, to - from));
    auto s = d.feed(piece, [&](std::string_view data) {
      EXPECT_FALSE(data.empty());
      EXPECT_GE(data.data(), piece.data());
      EXPECT_LE(data.data() + data.size(), piece.data() + piece.size());
      out.body += data;
    });
    out.consumed += s.consumed;
    out.status = s.status;
    out.http_status = s.http_status;
    out.reason = std::string(s.reason);
    if (s.status != Status::need_more) break;
    from = to;
  }
  EXPECT_EQ(d.decoded_size(), out.body.size());
  return out;
}

struct Refusal {
  const char* name;
  std::string input;
  int status;
};

std::vector<Refusal> refusals() {
  std::string many_fields = "0\r\n";
  for (int i = 0; i < 101; ++i) (many_fields += "T").append(std::to_string(i)).append(": v\r\n");
  return {
      {"empty size", "\r\n", 400},
      {"not hex", "g\r\n", 400},
      {"negative", "-1\r\n", 400},
      {"0x prefix", "0x5\r\nhello\r\n0\r\n\r\n", 400},
      {"sign", "+5\r\nhello\r\n0\r\n\r\n", 400},
      {"17 hex digits", "10000000000000000\r\n", 400},
      {"17 digits with leading zeros", "00000000000000005\r\nhello\r\n0\r\n\r\n", 400},
      {"size overflows the running total", "1\r\na\r\nffffffffffffffff\r\n", 400},
      {"bare LF after size", "5\nhello\r\n0\r\n\r\n", 400},
      {"bare CR after size", "5\rhello\r\n0\r\n\r\n", 400},
      {"whitespace after size", "5 \r\nhello\r\n0\r\n\r\n", 400},
      {"whitespace before size", " 5\r\nhello\r\n0\r\n\r\n", 400},
      {"empty extension name", "5;\r\nhello\r\n0\r\n\r\n", 400},
      {"extension without value", "5;a=\r\nhello\r\n0\r\n\r\n", 400},
      {"extension with whitespace at the end", "5;a=b \r\nhello\r\n0\r\n\r\n", 400},
      {"extension unclosed quote", "5;a=\"x\r\nhello\r\n0\r\n\r\n", 400},
      {"extension control byte", "5;a=\x01\r\nhello\r\n0\r\n\r\n", 400},
      {"extension NUL in quotes", "5;a=\"\0\"\r\nhello\r\n0\r\n\r\n"s, 400},
      {"extension bare LF", "5;a\nhello\r\n0\r\n\r\n", 400},
      {"extension too long", "5;a=" + std::string(4094, 'x') + "\r\nhello\r\n0\r\n\r\n", 400},
      {"data longer than size", "5\r\nhelloX\r\n0\r\n\r\n", 400},
      {"data shorter than size", "5\r\nhell\r\n0\r\n\r\n", 400},
      {"bare LF after data", "5\r\nhello\n0\r\n\r\n", 400},
      {"bare CR after data", "5\r\nhello\r0\r\n\r\n", 400},
      {"no CRLF after data", "5\r\nhello0\r\n\r\n", 400},
      {"last chunk bare LF", "0\n\r\n", 400},
      {"final bare LF", "0\r\n\n", 400},
      {"final bare CR", "0\r\n\rX", 400},
      {"trailer obs-fold", "0\r\nA: b\r\n c\r\n\r\n", 400},
      {"trailer whitespace before colon", "0\r\nA : b\r\n\r\n", 400},
      {"trailer empty name", "0\r\n: b\r\n\r\n", 400},
      {"trailer non-token name", "0\r\nA(: b\r\n\r\n", 400},
      {"trailer without colon", "0\r\nAb\r\n\r\n", 400},
      {"trailer NUL in value", "0\r\nA: \0\r\n\r\n"s, 400},
      {"trailer control byte in value", "0\r\nA: \x7f\r\n\r\n", 400},
      {"trailer bare LF", "0\r\nA: b\n\r\n", 400},
      {"trailer bare CR", "0\r\nA: b\rc\r\n\r\n", 400},
      {"too many trailer fields", many_fields + "\r\n", 431},
      {"trailer section too large", "0\r\nA: " + std::string(61 * 1024, 'v') + "\r\n\r\n", 431},
  };
}

}  // namespace

TEST(ChunkedDecoder, DecodesChunks) {
  auto d = decode("5\r\nhello\r\n1;x=1\r\n \r\nA\r\n0123456789\r\na\r\nabcdefghij\r\n0\r\n\r\n");
  EXPECT_EQ(d.status, Status::done) << d;
  EXPECT_EQ(d.body, "hello 0123456789abcdefghij");
}

TEST(ChunkedDecoder, StopsAtTheEndOfTheBody) {
  std::string in = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
  auto d = decode(in);
  EXPECT_EQ(d.status, Status::done);
  EXPECT_EQ(d.consumed, in.find("GET"));
  // Once done, the decoder consumes nothing more.
  ChunkedDecoder dec;
  auto s = dec.feed(in, [](std::string_view) {});
  ASSERT_EQ(s.status, Status::done);
  EXPECT_TRUE(dec.finished());
  auto again = dec.step("more");
  EXPECT_EQ(again.status, Status::done);
  EXPECT_EQ(again.consumed, 0u);
}

TEST(ChunkedDecoder, ExtensionsAsTheGrammarAllows) {
  for (std::string line : {"5;a", "5;a=b", "5 ;a=b", "5\t; a = b ;c", "5;a=\"quoted \\\" ;=\"", "5;a=\"\"", "5;a;b;c=d",
                           "5;a=\"caf\xc3\xa9\"", "5;a=b\t;c", "5;a=\"x\" ;b", "0005"}) {
    auto d = decode(line + "\r\nhello\r\n0;last=1\r\n\r\n");
    EXPECT_EQ(d.status, Status::done) << line << " " << d;
    EXPECT_EQ(d.body, "hello") << line;
  }
  // Exactly at the limit.
  auto d = decode("5;a=" + std::string(4093, 'x') + "\r\nhello\r\n0\r\n\r\n");
  EXPECT_EQ(d.status, Status::done) << d;
}

TEST(ChunkedDecoder, TrailersAreValidatedAndDropped) {
  auto d = decode("4\r\nbody\r\n0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=53, app;dur=47.2\r\nEmpty:\r\n\r\n");
  EXPECT_EQ(d.status, Status::done) << d;
  EXPECT_EQ(d.body, "body");
  std::string hundred = "0\r\n";
  for (int i = 0; i < 100; ++i) (hundred += "T").append(std::to_string(i)).append(": v\r\n");
  EXPECT_EQ(decode(hundred + "\r\n").status, Status::done);
}

TEST(ChunkedDecoder, RefusesWithTheRightStatus) {
  for (const auto& c : refusals()) {
    auto d = decode(c.input);
    EXPECT_EQ(d.status, Status::error) << c.name << " " << d;
    EXPECT_EQ(d.http_status, c.status) << c.name << " " << d;
  }
}

TEST(ChunkedDecoder, SizesForTheBodyLimit) {
  ChunkedDecoder d;
  auto s = d.step("ffffffffffffffff\r\nab");
  ASSERT_EQ(s.status, Status::data);
  EXPECT_EQ(s.data, "ab");
  EXPECT_EQ(d.decoded_size(), 2u);
  EXPECT_EQ(d.announced_size(), std::numeric_limits<uint64_t>::max());
  ChunkedDecoder e;
  s = e.step("10\r\n");
  EXPECT_EQ(s.status, Status::need_more);
  EXPECT_EQ(s.consumed, 4u);
  EXPECT_EQ(e.decoded_size(), 0u);
  EXPECT_EQ(e.announced_size(), 16u);
}

TEST(ChunkedDecoder, StepReturnsOneRunOfDataAtATime) {
  ChunkedDecoder d;
  std::string in = "2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n";
  auto s = d.step(in);
  ASSERT_EQ(s.status, Status::data);
  EXPECT_EQ(s.data, "ab");
  EXPECT_EQ(s.consumed, 5u);
  s = d.step(std::string_view(in).substr(5));
  ASSERT_EQ(s.status, Status::data);
  EXPECT_EQ(s.data, "cde");
  EXPECT_EQ(s.consumed, 8u);
  s = d.step(std::string_view(in).substr(13));
  EXPECT_EQ(s.status, Status::done);
  EXPECT_EQ(13 + s.consumed, in.size());
}

TEST(ChunkedDecoder, SplitFeedingGivesTheSameResult) {
  std::vector<std::string> inputs = {
      "5\r\nhello\r\n6;ext=\"a\\\"b\"\r\n world\r\n0\r\nT: v\r\n\r\nNEXT",
      "1\r\na\r\n0\r\n\r\n",
      "0\r\n\r\n",
      "A\r\n0123456789\r\n",
  };
  for (const auto& c : refusals()) inputs.push_back(c.input);
  for (const auto& in : inputs) {
    const Decoded once = decode(in);
    // Long inputs: every 61st split point and pieces of 7 bytes, to keep the test quick.
    const bool is_long = in.size() > 2000;
    for (size_t cut = 0; cut <= in.size(); cut += is_long ? 61 : 1)
      ASSERT_EQ(decode(in, {cut}), once) << "split at " << cut << " of " << testing::PrintToString(in);
    std::vector<size_t> cuts;
    for (size_t n = 1; n < in.size(); n += is_long ? 7 : 1) cuts.push_back(n);
    ASSERT_EQ(decode(in, cuts), once) << testing::PrintToString(in);
  }
}

// A trailer line is judged exactly as the same line in a request head.
TEST(ChunkedDecoder, TrailerRulesAreTheHeaderRules) {
  for (std::string line : {"A: b"s, "A:"s, "A:b c"s, "A: \tb\t "s, "A: caf\xc3\xa9"s, "!#$%&'*+-.^_`|~09az: x"s, " A: b"s,
                           "\tA: b"s, "A : b"s, "A\t: b"s, ": b"s, "A"s, "A(: b"s, "A: b\0"s, "A: \x01"s, "A: \x7f"s,
                           "A: b\rc"s, "A: b\nc"s, "A\xc3\xa9: b"s, "A\x0b: b"s}) {
    RequestParser p;
    bool head_ok = p.parse("GET / HTTP/1.1\r\nHost: h\r\n" + line + "\r\n\r\n").status == RequestParser::Status::done;
    bool trailer_ok = decode("0\r\n" + line + "\r\n\r\n").status == Status::done;
    EXPECT_EQ(head_ok, trailer_ok) << testing::PrintToString(line);
  }
}
