#include "gateway/http1/request_parser.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/http1/chunked_decoder.h"

using namespace flotilla::gateway::http1;
using Status = RequestParser::Status;
using namespace std::string_literals;

namespace {

RequestParser::Result parse_once(RequestParser& p, std::string_view input) {
  p.reset();
  return p.parse(input);
}

// Everything a parse decided, as one comparable string.
std::string outcome(const RequestParser& p, const RequestParser::Result& r) {
  std::ostringstream o;
  o << static_cast<int>(r.status) << '|' << r.head_length << '|' << r.http_status << '|' << r.reason;
  if (r.status == Status::done) {
    const RequestHead& h = p.head();
    o << '|' << h.method << '|' << h.target << '|' << static_cast<int>(h.target_form) << '|' << h.path << '|'
      << h.authority << '|' << h.host << '|' << h.version_minor << '|'
      << (h.content_length ? std::to_string(*h.content_length) : "-") << '|' << h.chunked << h.keep_alive
      << h.expect_continue << h.upgrade << '|' << h.upgrade_protocols;
    for (const auto& f : h.fields) o << "|[" << f.name << "]=[" << f.value << ']';
  }
  return o.str();
}

std::string outcome_all_at_once(std::string_view input) {
  RequestParser p;
  auto r = p.parse(input);
  return outcome(p, r);
}

// Feeds growing prefixes, each in a fresh std::string so the bytes move between calls (the
// parser must keep offsets, not pointers), and returns the outcome once the whole input is in.
std::string outcome_fed(std::string_view input, const std::vector<size_t>& cuts) {
  RequestParser p;
  RequestParser::Result r;
  std::string copy;
  for (size_t cut : cuts) {
    copy = std::string(input.substr(0, cut));
    copy.reserve(copy.size() + 64);  // a different allocation each time
    r = p.parse(copy);
  }
  copy = std::string(input);
  r = p.parse(copy);
  std::string out = outcome(p, r);
  return out;
}

struct Refusal {
  const char* name;
  std::string input;
  int status;
};

std::string req(std::string_view head_fields) { return "GET / HTTP/1.1\r\nHost: a\r\n" + std::string(head_fields) + "\r\n"; }

std::vector<Refusal> refusals() {
  std::string long_target(8192, 'a');
  long_target[0] = '/';
  return {
      // The request line.
      {"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
      {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
      {"HTTP/3.1", "GET / HTTP/3.1\r\nHost: a\r\n\r\n", 505},
      {"empty label in Host", "GET / HTTP/1.1\r\nHost: a..example.com\r\n\r\n", 400},
      {"empty label in the target's authority", "GET http://a..example.com/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"HTTP/0.9 version", "GET / HTTP/0.9\r\n\r\n", 505},
      {"version with three digits", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400},
      {"no version", "GET /\r\n\r\n", 400},
      {"method only", "GET\r\n\r\n", 400},
      {"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
      {"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"tab separator", "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"leading space", " GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"method not a token", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"method with NUL", "G\0T / HTTP/1.1\r\nHost: a\r\n\r\n"s, 400},
      {"TLS hello on the plain port", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"s, 400},
      {"CONNECT", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", 501},
      {"authority-form outside CONNECT", "GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"asterisk outside OPTIONS", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"other scheme", "GET ftp://a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"userinfo", "GET http://u:p@a/x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"empty authority", "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"bad absolute port", "GET http://a:99999/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"control byte in target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"DEL in target", "GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"non-ASCII in target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"NUL in target", "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n"s, 400},
      {"fragment in target", "GET /#f HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"bare LF ends the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
      {"bare CR in the request line", "GET /\rx HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"bare LF in the target", "GET /\nx HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"request line over 8 KiB", "GET " + long_target + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
      {"request line over 8 KiB without CRLF yet", "GET " + long_target + long_target, 414},
      {"bare CR before the request line", "\r\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"endless empty lines", [] {
         std::string s;
         for (int i = 0; i < 5000; ++i) s += "\r\n";
         return s;
       }(),
       414},

      // Field lines.
      {"obs-fold with SP", req("X: a\r\n b\r\n"), 400},
      {"obs-fold with HTAB", req("X: a\r\n\tb\r\n"), 400},
      {"obs-fold as first line", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
      {"space before colon", req("X : a\r\n"), 400},
      {"tab before colon", req("X\t: a\r\n"), 400},
      {"space before colon on Content-Length", req("Content-Length : 0\r\n"), 400},
      {"space in field name", req("X Y: a\r\n"), 400},
      {"empty field name", req(": a\r\n"), 400},
      {"non-token field name", req("X(: a\r\n"), 400},
      {"non-ASCII field name", req("X\xc3\xa9: a\r\n"), 400},
      {"NUL in field name", req("X\0Y: a\r\n"s), 400},
      {"line without colon", req("NoColon\r\n"), 400},
      {"NUL in value", req("X: a\0b\r\n"s), 400},
      {"control byte in value", req("X: a\x01"
                                    "b\r\n"),
       400},
      {"DEL in value", req("X: a\x7f\r\n"), 400},
      {"ESC in value", req("X: \x1b[0m\r\n"), 400},
      {"bare CR in value", req("X: a\rb\r\n"), 400},
      {"bare LF in value", req("X: a\nb\r\n"), 400},
      {"bare LF line ending", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400},
      {"bare LF final line", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400},
      {"bare CR final line", "GET / HTTP/1.1\r\nHost: a\r\n\rX", 400},

      // Framing.
      {"Content-Length then Transfer-Encoding", req("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"), 400},
      {"Transfer-Encoding then Content-Length", req("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), 400},
      {"duplicate equal Content-Length", req("Content-Length: 5\r\nContent-Length: 5\r\n"), 400},
      {"duplicate Content-Length", req("Content-Length: 5\r\ncontent-length: 6\r\n"), 400},
      {"Content-Length list", req("Content-Length: 5, 5\r\n"), 400},
      {"Content-Length with sign", req("Content-Length: +5\r\n"), 400},
      {"negative Content-Length", req("Content-Length: -1\r\n"), 400},
      {"hex Content-Length", req("Content-Length: 0x5\r\n"), 400},
      {"Content-Length with letters", req("Content-Length: 5a\r\n"), 400},
      {"Content-Length with inner space", req("Content-Length: 1 2\r\n"), 400},
      {"empty Content-Length", req("Content-Length:\r\n"), 400},
      {"Content-Length overflows", req("Content-Length: 18446744073709551616\r\n"), 400},
      {"Content-Length far too long", req("Content-Length: 99999999999999999999999999\r\n"), 400},
      {"Transfer-Encoding gzip", req("Transfer-Encoding: gzip\r\n"), 501},
      {"Transfer-Encoding identity", req("Transfer-Encoding: identity\r\n"), 501},
      {"Transfer-Encoding gzip, chunked", req("Transfer-Encoding: gzip, chunked\r\n"), 501},
      {"Transfer-Encoding chunked, gzip", req("Transfer-Encoding: chunked, gzip\r\n"), 501},
      {"Transfer-Encoding xchunked", req("Transfer-Encoding: xchunked\r\n"), 501},
      {"Transfer-Encoding chunked twice in a list", req("Transfer-Encoding: chunked, chunked\r\n"), 400},
      {"Transfer-Encoding with a parameter", req("Transfer-Encoding: chunked;q=1\r\n"), 400},
      {"Transfer-Encoding trailing comma", req("Transfer-Encoding: chunked,\r\n"), 400},
      {"Transfer-Encoding quoted", req("Transfer-Encoding: \"chunked\"\r\n"), 400},
      {"empty Transfer-Encoding", req("Transfer-Encoding:\r\n"), 400},
      {"Transfer-Encoding in two fields", req("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"), 400},
      {"Transfer-Encoding split over two fields", req("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"), 501},
      {"Transfer-Encoding in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
      {"Transfer-Encoding with vertical tab", req("Transfer-Encoding: \x0b"
                                                  "chunked\r\n"),
       400},

      // Host.
      {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX: a\r\n\r\n", 400},
      {"two Host fields", req("Host: b\r\n"), 400},
      {"two equal Host fields", req("Host: a\r\n"), 400},
      {"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400},
      {"Host list", "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400},
      {"Host with space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
      {"Host with path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
      {"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
      {"Host port too big", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", 400},
      {"Host port not a number", "GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", 400},
      {"Host with two ports", "GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", 400},
      {"Host with %-escape", "GET / HTTP/1.1\r\nHost: %61\r\n\r\n", 400},
      {"Host unclosed IPv6", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400},
      {"Host IPv6 with zone", "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", 400},
      {"Host IPv6 nine groups", "GET / HTTP/1.1\r\nHost: [1:2:3:4:5:6:7:8:9]\r\n\r\n", 400},
      {"Host IPv6 two ::", "GET / HTTP/1.1\r\nHost: [1::2::3]\r\n\r\n", 400},
      {"Host IPv6 junk after ]", "GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", 400},
      {"Host IPv6 bad IPv4 tail", "GET / HTTP/1.1\r\nHost: [::ffff:1.2.3.256]\r\n\r\n", 400},
      {"Host IPvFuture", "GET / HTTP/1.1\r\nHost: [v1.x]\r\n\r\n", 400},
      {"Host too long", "GET / HTTP/1.1\r\nHost: " + std::string(256, 'a') + "\r\n\r\n", 400},
      {"Connection not a token list", req("Connection: close, @\r\n"), 400},
  };
}

}  // namespace

TEST(RequestParser, RefusesWithTheRightStatus) {
  for (const auto& c : refusals()) {
    RequestParser p;
    auto r = p.parse(c.input);
    EXPECT_EQ(r.status, Status::error) << c.name;
    EXPECT_EQ(r.http_status, c.status) << c.name << ": " << r.reason;
    EXPECT_FALSE(r.reason.empty()) << c.name;
  }
}

TEST(RequestParser, HeaderLimits) {
  auto with_fields = [](int n) {
    std::string s = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 1; i < n; ++i) s += "X-F" + std::to_string(i) + ": v\r\n";
    return s + "\r\n";
  };
  RequestParser p;
  EXPECT_EQ(parse_once(p, with_fields(100)).status, Status::done);
  EXPECT_EQ(p.head().fields.size(), 100u);
  auto r = parse_once(p, with_fields(101));
  EXPECT_EQ(r.status, Status::error);
  EXPECT_EQ(r.http_status, 431);

  // The header section (field lines and the final CRLF) may be 60 KiB exactly, not one byte more.
  const std::string start = "GET / HTTP/1.1\r\n";
  auto sized = [&](size_t section) {
    std::string fields = "Host: a\r\nX: ";
    fields += std::string(section - fields.size() - 4, 'v');
    fields += "\r\n\r\n";
    EXPECT_EQ(fields.size(), section);
    return start + fields;
  };
  r = parse_once(p, sized(60 * 1024));
  EXPECT_EQ(r.status, Status::done);
  EXPECT_EQ(r.head_length, start.size() + 60 * 1024);
  r = parse_once(p, sized(60 * 1024 + 1));
  EXPECT_EQ(r.http_status, 431);
  // Refused as soon as the limit is passed, without waiting for a line end.
  r = parse_once(p, start + "Host: a\r\nX: " + std::string(70 * 1024, 'v'));
  EXPECT_EQ(r.http_status, 431);

  // The request line may be 8 KiB exactly.
  std::string target = "/" + std::string(8192 - 4 - 9 - 1, 'a');
  std::string line = "GET " + target + " HTTP/1.1";
  ASSERT_EQ(line.size(), 8192u);
  EXPECT_EQ(parse_once(p, line + "\r\nHost: a\r\n\r\n").status, Status::done);
  EXPECT_EQ(parse_once(p, "GET /a" + target.substr(1) + " HTTP/1.1\r\nHost: a\r\n\r\n").http_status, 414);

  // Limits are configurable.
  RequestParser small(Limits{.max_request_line = 32, .max_header_bytes = 64, .max_header_count = 2});
  EXPECT_EQ(small.parse("GET /" + std::string(40, 'a') + " HTTP/1.1\r\n").http_status, 414);
  small.reset();
  EXPECT_EQ(small.parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n").http_status, 431);
  small.reset();
  EXPECT_EQ(small.parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n").status, Status::done);
}

TEST(RequestParser, SimpleGet) {
  RequestParser p;
  std::string in = "GET /index.html?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Empty:\r\n\r\n";
  auto r = p.parse(in);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(r.head_length, in.size());
  const auto& h = p.head();
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.target, "/index.html?x=1");
  EXPECT_EQ(h.path, "/index.html?x=1");
  EXPECT_EQ(h.target_form, TargetForm::origin);
  EXPECT_EQ(h.version_minor, 1);
  EXPECT_EQ(h.host, "example.com");
  EXPECT_EQ(h.authority, "example.com");
  ASSERT_EQ(h.fields.size(), 3u);
  EXPECT_EQ(h.fields[1].name, "Accept");
  EXPECT_EQ(h.fields[1].value, "*/*");
  EXPECT_EQ(h.fields[2].name, "X-Empty");
  EXPECT_EQ(h.fields[2].value, "");
  EXPECT_FALSE(h.content_length);
  EXPECT_FALSE(h.chunked);
  EXPECT_FALSE(h.has_body());
  EXPECT_TRUE(h.keep_alive);
  EXPECT_FALSE(h.expect_continue);
  EXPECT_FALSE(h.upgrade);
  EXPECT_EQ(h.field("accept"), "*/*");
  EXPECT_FALSE(h.field("cookie"));
  // Views point into the buffer.
  EXPECT_EQ(h.method.data(), in.data());
  // The result stays until reset().
  EXPECT_EQ(p.parse(in), r);
}

TEST(RequestParser, AHigherMinorVersionIsHttp11) {
  // RFC 9110 §2.5: processed as the highest minor version implemented; the major must be 1.
  for (const char* v : {"HTTP/1.2", "HTTP/1.9"}) {
    RequestParser p;
    std::string in = std::string("GET / ") + v + "\r\nHost: a\r\n\r\n";
    auto r = p.parse(in);
    ASSERT_EQ(r.status, Status::done) << v << ": " << r.reason;
    EXPECT_EQ(p.head().version_minor, 1) << v;
    EXPECT_TRUE(p.head().keep_alive) << v;
  }
}

TEST(RequestParser, TrimsOptionalWhitespaceAndKeepsObsText) {
  RequestParser p;
  auto r = p.parse("GET / HTTP/1.1\r\nHost:\t a \t\r\nX:   a  b \t \r\nY: caf\xc3\xa9\r\nZ:a\tb\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().host, "a");
  EXPECT_EQ(p.head().fields[1].value, "a  b");
  EXPECT_EQ(p.head().fields[2].value, "caf\xc3\xa9");
  EXPECT_EQ(p.head().fields[3].value, "a\tb");
}

TEST(RequestParser, GetWithBodyAndPostWithContentLength) {
  RequestParser p;
  std::string in = "POST /v1/orders HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world";
  auto r = p.parse(in);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(*p.head().content_length, 11u);
  EXPECT_TRUE(p.head().has_body());
  EXPECT_EQ(in.substr(r.head_length), "hello world");

  r = parse_once(p, "GET /search HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_EQ(p.head().method, "GET");
  EXPECT_EQ(*p.head().content_length, 2u);

  r = parse_once(p, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_FALSE(p.head().has_body());

  r = parse_once(p, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_EQ(*p.head().content_length, 18446744073709551615u);
  r = parse_once(p, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_EQ(*p.head().content_length, 7u);
}

TEST(RequestParser, ChunkedWithExtensionsAndTrailers) {
  std::string in =
      "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
      "5;name=\"a b\"\r\nhello\r\n6 ; x=1\r\n world\r\n0\r\nX-Checksum: 1234\r\n\r\n"
      "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
  RequestParser p;
  auto r = p.parse(in);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_TRUE(p.head().chunked);
  EXPECT_FALSE(p.head().content_length);
  EXPECT_TRUE(p.head().has_body());

  ChunkedDecoder d;
  std::string body;
  auto s = d.feed(std::string_view(in).substr(r.head_length), [&](std::string_view data) { body += data; });
  ASSERT_EQ(s.status, ChunkedDecoder::Status::done) << s.reason;
  EXPECT_EQ(body, "hello world");
  EXPECT_EQ(d.decoded_size(), 11u);

  // The next pipelined request starts right after the body.
  size_t next = r.head_length + s.consumed;
  p.reset();
  r = p.parse(std::string_view(in).substr(next));
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().target, "/next");
  EXPECT_EQ(next + r.head_length, in.size());
}

TEST(RequestParser, KeepAliveRules) {
  RequestParser p;
  auto keep_alive = [&](const std::string& in) {
    auto r = parse_once(p, in);
    EXPECT_EQ(r.status, Status::done) << in << r.reason;
    return p.head().keep_alive;
  };
  EXPECT_TRUE(keep_alive("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
  EXPECT_FALSE(keep_alive("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
  EXPECT_FALSE(keep_alive("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, CLOSE\r\n\r\n"));
  EXPECT_FALSE(keep_alive("GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n"));
  EXPECT_FALSE(keep_alive("GET / HTTP/1.0\r\n\r\n"));
  EXPECT_TRUE(keep_alive("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
  EXPECT_TRUE(keep_alive("GET / HTTP/1.0\r\nConnection: ,, keep-alive ,\r\n\r\n"));
  EXPECT_FALSE(keep_alive("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
  // HTTP/1.0 needs no Host; when it has one it is validated and used.
  auto r = parse_once(p, "GET / HTTP/1.0\r\nHost: b:81\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_EQ(p.head().version_minor, 0);
  EXPECT_EQ(p.head().authority, "b:81");
  r = parse_once(p, "GET / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_EQ(p.head().host, "");
  // An empty port is the default one (RFC 3986 port = *DIGIT), not a malformed Host.
  r = parse_once(p, "GET / HTTP/1.1\r\nHost: b:\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_EQ(p.head().authority, "b:");
  r = parse_once(p, "GET / HTTP/1.1\r\nHost: [::1]:\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
}

TEST(RequestParser, PipelinedRequests) {
  std::string in =
      "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
      "GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
      "\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
  RequestParser p;
  std::vector<std::string> targets;
  size_t at = 0;
  while (at < in.size()) {
    p.reset();
    auto r = p.parse(std::string_view(in).substr(at));
    ASSERT_EQ(r.status, Status::done) << r.reason;
    targets.emplace_back(p.head().target);
    at += r.head_length + p.head().content_length.value_or(0);
  }
  EXPECT_EQ(targets, (std::vector<std::string>{"/a", "/b", "/c"}));
  EXPECT_FALSE(p.head().keep_alive);
  EXPECT_EQ(at, in.size());
}

TEST(RequestParser, EmptyLinesBeforeTheRequestLine) {
  RequestParser p;
  std::string in = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
  auto r = p.parse(in);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(r.head_length, in.size());
  EXPECT_EQ(p.head().method, "GET");
  EXPECT_EQ(parse_once(p, "\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").http_status, 400);
}

TEST(RequestParser, AbsoluteFormTarget) {
  RequestParser p;
  auto r = p.parse("GET HTTP://api.example.com:8080/v1/items?limit=5 HTTP/1.1\r\nHost: other\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  const auto& h = p.head();
  EXPECT_EQ(h.target_form, TargetForm::absolute);
  EXPECT_EQ(h.authority, "api.example.com:8080");
  EXPECT_EQ(h.host, "other");
  EXPECT_EQ(h.path, "/v1/items?limit=5");

  r = parse_once(p, "GET https://[::1]:8443?q HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().authority, "[::1]:8443");
  EXPECT_EQ(p.head().path, "?q");

  r = parse_once(p, "GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().authority, "a.example");
  EXPECT_EQ(p.head().path, "");

  r = parse_once(p, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().target_form, TargetForm::asterisk);
  EXPECT_EQ(p.head().path, "*");
}

TEST(RequestParser, HostForms) {
  RequestParser p;
  for (std::string host : {"a", "example.com", "EXAMPLE.com:80", "my_host-1.internal~x", "127.0.0.1", "10.0.0.1:65535",
                           "[::1]", "[::1]:8080", "[2001:db8::ff00:42:8329]", "[2001:DB8:0:0:8:800:200C:417A]",
                           "[::ffff:192.0.2.128]", "[::]", "[1::]", "[1:2:3:4:5:6:7::]", "[1:2:3:4:5:6:1.2.3.4]"}) {
    const std::string in = "GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n";
    auto r = parse_once(p, in);
    EXPECT_EQ(r.status, Status::done) << host << ": " << r.reason;
    if (r.status == Status::done) {
      EXPECT_EQ(p.head().host, host);
    }
  }
  for (std::string bad : {"[1:2:3:4:5:6:7:8::]", "[:1]", "[1:]", "[1:2:3:4:5:6:7]", "[12345::]", "[::1.2.3]",
                          "[::01.2.3.4]", "[]", "a:0x50", ":80"}) {
    EXPECT_FALSE(valid_authority(bad)) << bad;
  }
  EXPECT_TRUE(valid_ipv4("255.255.255.255"));
  EXPECT_FALSE(valid_ipv4("1.2.3"));
  EXPECT_FALSE(valid_ipv4("1.2.3.4.5"));
}

TEST(RequestParser, ExpectContinue) {
  RequestParser p;
  auto r = p.parse("PUT /v1/kv/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_TRUE(p.head().expect_continue);
  // RFC 9110 §10.1.1: ignored in an HTTP/1.0 request.
  r = parse_once(p, "PUT / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_FALSE(p.head().expect_continue);
}

TEST(RequestParser, UpgradeWebsocket) {
  RequestParser p;
  auto r = p.parse(
      "GET /chat HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_TRUE(p.head().upgrade);
  EXPECT_EQ(p.head().upgrade_protocols, "websocket");
  // Upgrade without the Connection option is no upgrade.
  r = parse_once(p, "GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_FALSE(p.head().upgrade);
  r = parse_once(p, "GET /chat HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
  ASSERT_EQ(r.status, Status::done);
  EXPECT_FALSE(p.head().upgrade);
}

TEST(RequestParser, NeedsMoreUntilTheHeadEnds) {
  RequestParser p;
  std::string in = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  for (size_t n = 0; n < in.size(); ++n) {
    auto r = p.parse(std::string_view(in).substr(0, n));
    ASSERT_EQ(r.status, Status::need_more) << n;
  }
  EXPECT_EQ(p.parse(in).status, Status::done);
}

TEST(RequestParser, ReuseKeepsNoStateBetweenRequests) {
  RequestParser p;
  ASSERT_EQ(p.parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nConnection: close\r\n\r\n").status,
            Status::done);
  p.reset();
  ASSERT_EQ(p.parse("GET / HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\n").status, Status::done);
  EXPECT_EQ(*p.head().content_length, 2u);
  EXPECT_TRUE(p.head().keep_alive);
  EXPECT_EQ(p.head().fields.size(), 2u);
  p.reset();
  EXPECT_EQ(p.parse("GET / HTTP/1.1\r\n\r\n").http_status, 400);  // the Host of before is forgotten
}

// Feeding the bytes at any split point, or one at a time, gives what feeding them at once gives.
TEST(RequestParser, SplitFeedingGivesTheSameResult) {
  std::vector<std::string> inputs = {
      "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
      "\r\nPOST /x HTTP/1.1\r\nHost: a.example:81\r\nContent-Length: 3\r\n\r\nabc",
      "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX:  v  \r\n\r\n3\r\nabc\r\n0\r\n\r\n",
      "GET http://[::1]:80/p HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
      "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
      "GET /\r",
      "GET / HTTP/1.1\r",
      "GET / HTTP/1.1\r\nHost: a\r\n\r",
  };
  for (const auto& c : refusals()) inputs.push_back(c.input);
  {
    std::string big = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (int i = 0; i < 99; ++i) big += "X-Field-" + std::to_string(i) + ": " + std::string(200, 'v') + "\r\n";
    inputs.push_back(big + "\r\n");
    inputs.push_back(big + "X-Last: 1\r\n\r\n");  // 101 fields
  }
  for (const auto& in : inputs) {
    const std::string once = outcome_all_at_once(in);
    // Two pieces, split at every point (every 61st in the long inputs, to keep the test quick).
    const size_t split_stride = in.size() > 2000 ? 61 : 1;
    for (size_t cut = 0; cut <= in.size(); cut += split_stride) {
      ASSERT_EQ(outcome_fed(in, {cut}), once) << "split at " << cut << " of " << testing::PrintToString(in);
    }
    // Byte at a time (long inputs: every 7th prefix, to keep the test quick).
    std::vector<size_t> cuts;
    size_t stride = in.size() > 2000 ? 7 : 1;
    for (size_t n = 0; n <= in.size(); n += stride) cuts.push_back(n);
    ASSERT_EQ(outcome_fed(in, cuts), once) << testing::PrintToString(in);
  }
}

// Byte-at-a-time feeding of a full 60 KiB header section must cost O(n), not O(n²): only new
// bytes are scanned and each line is validated once.
TEST(RequestParser, ByteAtATimeIsLinear) {
  for (bool one_long_line : {false, true}) {
    std::string in = "GET / HTTP/1.1\r\nHost: a\r\n";
    if (one_long_line) {
      in += "X: " + std::string(60 * 1024 - 9 - 5 - 4, 'v') + "\r\n";
    } else {
      for (int i = 0; i < 98; ++i) in += "X-" + std::to_string(i) + ": " + std::string(600, 'v') + "\r\n";
    }
    in += "\r\n";
    RequestParser p;
    RequestParser::Result r;
    auto start = std::chrono::steady_clock::now();
    for (size_t n = 1; n <= in.size(); ++n) r = p.parse(std::string_view(in).substr(0, n));
    auto took = std::chrono::steady_clock::now() - start;
    ASSERT_EQ(r.status, Status::done) << r.reason;
    EXPECT_EQ(r.head_length, in.size());
    // Every byte is looked at a small constant number of times: once by the scan, once by the
    // line's validation (and the CR of a line once per call while its LF is awaited).
    EXPECT_LE(p.bytes_examined(), 3 * in.size()) << "size " << in.size();
    std::printf("[          ] %zu bytes byte-at-a-time: %llu bytes examined, %lld us\n", in.size(),
                static_cast<unsigned long long>(p.bytes_examined()),
                static_cast<long long>(std::chrono::duration_cast<std::chrono::microseconds>(took).count()));
  }
}

// Not a pass/fail test: prints ns per request for a typical browser GET (~400 bytes).
// FLOTILLA_PARSER_BENCH_ITERATIONS=1000000 for a steadier number.
TEST(RequestParser, SpeedOfATypicalBrowserGet) {
  const std::string in =
      "GET /assets/app.3f9a1c.js?v=20240101 HTTP/1.1\r\n"
      "Host: shop.example.com\r\n"
      "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0\r\n"
      "Accept: */*\r\n"
      "Accept-Language: en-US,en;q=0.5\r\n"
      "Accept-Encoding: gzip, deflate, br\r\n"
      "Referer: https://shop.example.com/cart\r\n"
      "Connection: keep-alive\r\n"
      "Cookie: session=4f2a9c7e1b3d5f60; theme=dark\r\n"
      "Sec-Fetch-Dest: script\r\n"
      "Sec-Fetch-Mode: no-cors\r\n"
      "Sec-Fetch-Site: same-origin\r\n"
      "\r\n";
  long iterations = 20000;
  if (const char* env = std::getenv("FLOTILLA_PARSER_BENCH_ITERATIONS")) iterations = std::atol(env);
  RequestParser p;
  size_t sink = 0;
  auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < iterations; ++i) {
    p.reset();
    auto r = p.parse(in);
    sink += r.head_length + p.head().fields.size();
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(sink, static_cast<size_t>(iterations) * (in.size() + 11));
  std::printf("[          ] %zu-byte GET, %ld iterations: %.1f ns/request\n", in.size(), iterations,
              static_cast<double>(ns) / static_cast<double>(iterations));
}
