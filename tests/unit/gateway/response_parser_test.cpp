#include "gateway/http1/response_parser.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/http1/syntax.h"

using namespace flotilla::gateway::http1;
using Status = ResponseParser::Status;
using namespace std::string_literals;

namespace {

ResponseParser::Result parse_once(ResponseParser& p, std::string_view input) {
  p.reset();
  return p.parse(input);
}

// Everything a parse decided, as one comparable string.
std::string outcome(const ResponseParser& p, const ResponseParser::Result& r) {
  std::ostringstream o;
  o << static_cast<int>(r.status) << '|' << r.head_length << '|' << r.reason;
  if (r.status == Status::done) {
    const ResponseHead& h = p.head();
    o << '|' << h.status << '|' << h.version_minor << '|' << h.reason << '|'
      << (h.content_length ? std::to_string(*h.content_length) : "-") << '|' << h.chunked << h.keep_alive
      << h.has_connection_tokens;
    for (size_t i = 0; i < h.fields.size(); ++i)
      o << "|[" << h.fields[i].name << "]=[" << h.fields[i].value << ']' << int(h.connection_listed.at(i));
  }
  return o.str();
}

std::string outcome_all_at_once(std::string_view input) {
  ResponseParser p;
  auto r = p.parse(input);
  return outcome(p, r);
}

// Feeds growing prefixes, each in a fresh std::string so the bytes move between calls (the
// parser must keep offsets, not pointers), and returns the outcome once the whole input is in.
std::string outcome_fed(std::string_view input, const std::vector<size_t>& cuts) {
  ResponseParser p;
  std::string copy;
  for (size_t cut : cuts) {
    copy = std::string(input.substr(0, cut));
    copy.reserve(copy.size() + 64);  // a different allocation each time
    p.parse(copy);
  }
  copy = std::string(input);
  auto r = p.parse(copy);
  return outcome(p, r);
}

// Real servers' heads, byte for byte as they send them.
const std::string kNginx200 =
    "HTTP/1.1 200 OK\r\n"
    "Server: nginx/1.22.1\r\n"
    "Date: Tue, 05 Mar 2024 10:15:42 GMT\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 1342\r\n"
    "Connection: keep-alive\r\n"
    "ETag: \"65e6f0a1-53e\"\r\n"
    "Accept-Ranges: bytes\r\n"
    "\r\n";
const std::string kNginxChunked =
    "HTTP/1.1 200 OK\r\n"
    "Server: nginx/1.22.1\r\n"
    "Date: Tue, 05 Mar 2024 10:15:42 GMT\r\n"
    "Content-Type: text/html; charset=utf-8\r\n"
    "Transfer-Encoding: chunked\r\n"
    "Connection: keep-alive\r\n"
    "Content-Encoding: gzip\r\n"
    "\r\n";
const std::string kNginx304 =
    "HTTP/1.1 304 Not Modified\r\n"
    "Server: nginx/1.22.1\r\n"
    "Date: Tue, 05 Mar 2024 10:15:42 GMT\r\n"
    "Last-Modified: Mon, 04 Mar 2024 09:00:00 GMT\r\n"
    "Connection: keep-alive\r\n"
    "ETag: \"65e58e10-264\"\r\n"
    "\r\n";
const std::string kNginx502 =
    "HTTP/1.1 502 Bad Gateway\r\n"
    "Server: nginx/1.22.1\r\n"
    "Date: Tue, 05 Mar 2024 10:15:42 GMT\r\n"
    "Content-Type: text/html\r\n"
    "Content-Length: 157\r\n"
    "Connection: close\r\n"
    "\r\n";
// python3 -m http.server (BaseHTTPRequestHandler speaks HTTP/1.0 by default).
const std::string kPython200 =
    "HTTP/1.0 200 OK\r\n"
    "Server: SimpleHTTP/0.6 Python/3.11.2\r\n"
    "Date: Tue, 05 Mar 2024 10:15:42 GMT\r\n"
    "Content-type: text/html; charset=utf-8\r\n"
    "Content-Length: 412\r\n"
    "Last-Modified: Mon, 04 Mar 2024 09:00:00 GMT\r\n"
    "\r\n";
const std::string kPython404 =
    "HTTP/1.0 404 File not found\r\n"
    "Server: SimpleHTTP/0.6 Python/3.11.2\r\n"
    "Date: Tue, 05 Mar 2024 10:15:42 GMT\r\n"
    "Connection: close\r\n"
    "Content-Type: text/html;charset=utf-8\r\n"
    "Content-Length: 335\r\n"
    "\r\n";
// Go net/http: small bodies get a Content-Length, large or flushed ones are chunked.
const std::string kGo200 =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Date: Tue, 05 Mar 2024 10:15:42 GMT\r\n"
    "Content-Length: 12\r\n"
    "\r\n";
const std::string kGoChunked =
    "HTTP/1.1 200 OK\r\n"
    "Content-Type: application/octet-stream\r\n"
    "Date: Tue, 05 Mar 2024 10:15:42 GMT\r\n"
    "Transfer-Encoding: chunked\r\n"
    "\r\n";
const std::string kGo204 = "HTTP/1.1 204 No Content\r\nDate: Tue, 05 Mar 2024 10:15:42 GMT\r\n\r\n";
const std::string kGo100 = "HTTP/1.1 100 Continue\r\n\r\n";
const std::string kGo103 =
    "HTTP/1.1 103 Early Hints\r\n"
    "Link: </style.css>; rel=preload; as=style\r\n"
    "Link: </script.js>; rel=preload; as=script\r\n"
    "\r\n";
const std::string kWebsocket101 =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    "\r\n";

struct Refusal {
  const char* name;
  std::string input;
};

std::string resp(std::string_view fields) { return "HTTP/1.1 200 OK\r\n" + std::string(fields) + "\r\n"; }

std::vector<Refusal> refusals() {
  return {
      // The status line.
      {"lower-case version", "http/1.1 200 OK\r\n\r\n"},
      {"HTTP/2.0", "HTTP/2.0 200 OK\r\n\r\n"},
      {"HTTP/2", "HTTP/2 200 OK\r\n\r\n"},
      {"HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n"},
      {"HTTP/1.9", "HTTP/1.9 200 OK\r\n\r\n"},
      {"HTTP/1.x", "HTTP/1.x 200 OK\r\n\r\n"},
      {"HTTP/1.10", "HTTP/1.10 200 OK\r\n\r\n"},
      {"HTTP/0.9 (a body without a head)", "<html><body>hello</body></html>\r\n"},
      {"ICY (SHOUTcast)", "ICY 200 OK\r\n\r\n"},
      {"RTSP", "RTSP/1.0 200 OK\r\n\r\n"},
      {"TLS alert from a TLS port", "\x15\x03\x03\x00\x02\x02\x46"s},
      {"version only", "HTTP/1.1\r\n\r\n"},
      {"version and SP only", "HTTP/1.1 \r\n\r\n"},
      {"double space before status", "HTTP/1.1  200 OK\r\n\r\n"},
      {"tab before status", "HTTP/1.1\t200 OK\r\n\r\n"},
      {"two-digit status", "HTTP/1.1 20 OK\r\n\r\n"},
      {"two-digit status at line end", "HTTP/1.1 20\r\n\r\n"},
      {"four-digit status", "HTTP/1.1 2000 OK\r\n\r\n"},
      {"status glued to reason", "HTTP/1.1 200OK\r\n\r\n"},
      {"tab after status", "HTTP/1.1 200\tOK\r\n\r\n"},
      {"status with a letter", "HTTP/1.1 2a0 OK\r\n\r\n"},
      {"negative status", "HTTP/1.1 -20 OK\r\n\r\n"},
      {"status 000", "HTTP/1.1 000 X\r\n\r\n"},
      {"status 099", "HTTP/1.1 099 X\r\n\r\n"},
      {"status 600", "HTTP/1.1 600 X\r\n\r\n"},
      {"status 999", "HTTP/1.1 999\r\n\r\n"},
      {"control byte in reason", "HTTP/1.1 200 O\x01K\r\n\r\n"},
      {"NUL in reason", "HTTP/1.1 200 O\0K\r\n\r\n"s},
      {"DEL in reason", "HTTP/1.1 200 OK\x7f\r\n\r\n"},
      {"ESC in reason", "HTTP/1.1 200 \x1b[1mOK\r\n\r\n"},
      {"empty line before the status line", "\r\nHTTP/1.1 200 OK\r\n\r\n"},
      {"leftover body bytes before the status line", "0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"},
      {"space before the status line", " HTTP/1.1 200 OK\r\n\r\n"},
      {"bare LF ends the status line", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"},
      {"bare LF everywhere", "HTTP/1.1 200 OK\nContent-Length: 0\n\n"},
      {"bare CR in the status line", "HTTP/1.1 200 O\rK\r\n\r\n"},
      {"CR CR LF", "HTTP/1.1 200 OK\r\r\n\r\n"},
      {"bare CR inside the version", "HTTP/1\r\n\r\n"},
      {"status line over 8 KiB", "HTTP/1.1 200 " + std::string(8192, 'k') + "\r\n\r\n"},
      {"status line over 8 KiB without CRLF yet", "HTTP/1.1 200 " + std::string(9000, 'k')},

      // Field lines.
      {"obs-fold with SP", resp("X: a\r\n b\r\n")},
      {"obs-fold with HTAB", resp("X: a\r\n\tb\r\n")},
      {"obs-fold as first line", "HTTP/1.1 200 OK\r\n Server: x\r\n\r\n"},
      {"space before colon", resp("X : a\r\n")},
      {"tab before colon", resp("X\t: a\r\n")},
      {"space before colon on Content-Length", resp("Content-Length : 0\r\n")},
      {"space before colon on Transfer-Encoding", resp("Transfer-Encoding : chunked\r\n")},
      {"space in field name", resp("X Y: a\r\n")},
      {"empty field name", resp(": a\r\n")},
      {"non-token field name", resp("X(: a\r\n")},
      {"non-ASCII field name", resp("X\xc3\xa9: a\r\n")},
      {"NUL in field name", resp("X\0Y: a\r\n"s)},
      {"line without colon", resp("NoColon\r\n")},
      {"NUL in value", resp("X: a\0b\r\n"s)},
      {"control byte in value", resp("X: a\x01"
                                     "b\r\n")},
      {"DEL in value", resp("X: a\x7f\r\n")},
      {"bare CR in value", resp("X: a\rb\r\n")},
      {"bare LF in value", resp("X: a\nb\r\n")},
      {"bare LF line ending", "HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n"},
      {"bare LF final line", "HTTP/1.1 200 OK\r\nX: a\r\n\n"},
      {"bare CR final line", "HTTP/1.1 200 OK\r\nX: a\r\n\rX"},
      {"response splitting attempt", resp("Location: /a\r\rContent-Length: 0\r\n")},

      // Framing.
      {"different Content-Length values", resp("Content-Length: 5\r\nContent-Length: 6\r\n")},
      {"different Content-Length values, other case", resp("Content-Length: 5\r\ncontent-length: 50\r\n")},
      {"Content-Length list", resp("Content-Length: 5, 5\r\n")},
      {"Content-Length with sign", resp("Content-Length: +5\r\n")},
      {"negative Content-Length", resp("Content-Length: -1\r\n")},
      {"hex Content-Length", resp("Content-Length: 0x5\r\n")},
      {"Content-Length with letters", resp("Content-Length: 5a\r\n")},
      {"Content-Length with inner space", resp("Content-Length: 1 2\r\n")},
      {"Content-Length with a decimal point", resp("Content-Length: 5.0\r\n")},
      {"empty Content-Length", resp("Content-Length:\r\n")},
      {"Content-Length overflows", resp("Content-Length: 18446744073709551616\r\n")},
      {"Content-Length far too long", resp("Content-Length: 99999999999999999999999999\r\n")},
      {"bad Content-Length beside Transfer-Encoding", resp("Transfer-Encoding: chunked\r\nContent-Length: x\r\n")},
      {"Transfer-Encoding chunked twice in a list", resp("Transfer-Encoding: chunked, chunked\r\n")},
      {"Transfer-Encoding chunked in two fields", resp("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n")},
      {"Transfer-Encoding chunked twice around gzip", resp("Transfer-Encoding: chunked, gzip, chunked\r\n")},
      {"Transfer-Encoding with a parameter", resp("Transfer-Encoding: chunked;q=1\r\n")},
      {"Transfer-Encoding trailing comma", resp("Transfer-Encoding: chunked,\r\n")},
      {"Transfer-Encoding leading comma", resp("Transfer-Encoding: ,chunked\r\n")},
      {"Transfer-Encoding quoted", resp("Transfer-Encoding: \"chunked\"\r\n")},
      {"empty Transfer-Encoding", resp("Transfer-Encoding:\r\n")},
      {"Transfer-Encoding with vertical tab", resp("Transfer-Encoding: \x0b"
                                                   "chunked\r\n")},
      {"Transfer-Encoding with inner space", resp("Transfer-Encoding: chun ked\r\n")},
      {"Transfer-Encoding in HTTP/1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"Transfer-Encoding and Content-Length in HTTP/1.0",
       "HTTP/1.0 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"Connection not a token list", resp("Connection: close, @\r\n")},
      {"Connection quoted", resp("Connection: \"close\"\r\n")},
  };
}

}  // namespace

TEST(ResponseParser, RefusesEveryMalformedShape) {
  for (const auto& c : refusals()) {
    ResponseParser p;
    auto r = p.parse(c.input);
    EXPECT_EQ(r.status, Status::error) << c.name;
    EXPECT_FALSE(r.reason.empty()) << c.name;
    EXPECT_EQ(r.head_length, 0u) << c.name;
  }
}

TEST(ResponseParser, ReasonsNameTheProblem) {
  ResponseParser p;
  EXPECT_EQ(parse_once(p, "SSH-2.0-OpenSSH_9.2\r\n").reason, "not an HTTP/1.x status line");
  EXPECT_EQ(parse_once(p, "HTTP/1.2 200 OK\r\n\r\n").reason, "unsupported HTTP version");
  EXPECT_EQ(parse_once(p, "HTTP/1.1 600 X\r\n\r\n").reason, "status code out of range");
  EXPECT_EQ(parse_once(p, "HTTP/1.1 2000 X\r\n\r\n").reason, "malformed status code");
  EXPECT_EQ(parse_once(p, "HTTP/1.1 200 OK\nX: y\r\n\r\n").reason, "LF without CR");
  EXPECT_EQ(parse_once(p, resp("Content-Length: 1\r\nContent-Length: 2\r\n")).reason,
            "conflicting Content-Length values");
  EXPECT_EQ(parse_once(p, "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").reason,
            "Transfer-Encoding in an HTTP/1.0 response");
  EXPECT_EQ(parse_once(p, resp("Transfer-Encoding: chunked, chunked\r\n")).reason, "chunked applied more than once");
  EXPECT_EQ(parse_once(p, resp("X : y\r\n")).reason, "whitespace in field name or before colon");
}

TEST(ResponseParser, TheFirstBytesAreCheckedAsTheyArrive) {
  // An upstream that does not speak HTTP/1 is refused at its first wrong byte, without waiting
  // for a line end.
  for (std::string_view start : {"<", "H", "HT", "HTT", "HTTP", "HTTP/", "HTTP/1", "HTTP/1."}) {
    ResponseParser p;
    EXPECT_EQ(p.parse(start).status, start == "<" ? Status::error : Status::need_more) << start;
  }
  ResponseParser p;
  EXPECT_EQ(p.parse("HTTP/2").status, Status::error);
  EXPECT_EQ(parse_once(p, "\x16\x03\x01").status, Status::error);
  EXPECT_EQ(parse_once(p, "\r").status, Status::error);
  EXPECT_EQ(parse_once(p, "HTTP/1.1 999").status, Status::need_more);  // judged once the line ends
}

TEST(ResponseParser, Nginx) {
  ResponseParser p;
  const std::string in = kNginx200 + "{\"ok\":true}";
  auto r = p.parse(in);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(r.head_length, kNginx200.size());
  const ResponseHead& h = p.head();
  EXPECT_EQ(h.status, 200);
  EXPECT_EQ(h.version_minor, 1);
  EXPECT_EQ(h.reason, "OK");
  ASSERT_EQ(h.fields.size(), 7u);
  EXPECT_EQ(h.fields[0].name, "Server");
  EXPECT_EQ(h.fields[0].value, "nginx/1.22.1");
  EXPECT_EQ(h.fields[5].value, "\"65e6f0a1-53e\"");
  EXPECT_EQ(h.content_length, 1342u);
  EXPECT_FALSE(h.chunked);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_FALSE(h.has_connection_tokens);
  EXPECT_EQ(h.connection_listed, std::vector<uint8_t>(7, 0));
  EXPECT_EQ(h.field("content-type"), "application/json");
  EXPECT_FALSE(h.field("set-cookie"));
  EXPECT_EQ(body_kind(h, false), BodyKind::content_length);
  EXPECT_TRUE(connection_reusable(h, false));

  r = parse_once(p, kNginxChunked);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_TRUE(p.head().chunked);
  EXPECT_FALSE(p.head().content_length);
  EXPECT_EQ(body_kind(p.head(), false), BodyKind::chunked);
  EXPECT_TRUE(connection_reusable(p.head(), false));

  r = parse_once(p, kNginx304);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().status, 304);
  EXPECT_EQ(p.head().reason, "Not Modified");
  EXPECT_EQ(body_kind(p.head(), false), BodyKind::none);
  EXPECT_TRUE(connection_reusable(p.head(), false));

  r = parse_once(p, kNginx502);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().status, 502);
  EXPECT_FALSE(p.head().keep_alive);
  EXPECT_EQ(body_kind(p.head(), false), BodyKind::content_length);
  EXPECT_FALSE(connection_reusable(p.head(), false));
}

TEST(ResponseParser, PythonHttpServer) {
  ResponseParser p;
  auto r = p.parse(kPython200);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().version_minor, 0);
  EXPECT_EQ(p.head().status, 200);
  EXPECT_EQ(p.head().content_length, 412u);
  EXPECT_FALSE(p.head().keep_alive);  // HTTP/1.0 without keep-alive
  EXPECT_EQ(p.head().field("content-type"), "text/html; charset=utf-8");  // "Content-type" as sent

  r = parse_once(p, kPython404);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().status, 404);
  EXPECT_EQ(p.head().reason, "File not found");
  EXPECT_FALSE(p.head().keep_alive);

  // A handler that writes no Content-Length: the body runs until the server closes.
  r = parse_once(p, "HTTP/1.0 200 OK\r\nServer: BaseHTTP/0.6 Python/3.11.2\r\nContent-Type: text/plain\r\n\r\nhi");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(body_kind(p.head(), false), BodyKind::until_close);
  EXPECT_FALSE(connection_reusable(p.head(), false));

  // protocol_version = "HTTP/1.0" with an explicit keep-alive.
  r = parse_once(p, "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_TRUE(p.head().keep_alive);
  EXPECT_FALSE(p.head().has_connection_tokens);
}

TEST(ResponseParser, GoNetHttp) {
  ResponseParser p;
  auto r = p.parse(kGo200 + "hello world\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().content_length, 12u);

  r = parse_once(p, kGoChunked);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(body_kind(p.head(), false), BodyKind::chunked);

  r = parse_once(p, kGo204);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().status, 204);
  EXPECT_EQ(body_kind(p.head(), false), BodyKind::none);
  EXPECT_TRUE(connection_reusable(p.head(), false));
}

TEST(ResponseParser, InterimResponsesThenTheFinalOne) {
  const std::string in = kGo100 + kGo103 + kGo200 + "hello world\n";
  ResponseParser p;
  size_t at = 0;
  std::vector<int> statuses;
  for (;;) {
    p.reset();
    auto r = p.parse(std::string_view(in).substr(at));
    ASSERT_EQ(r.status, Status::done) << r.reason;
    statuses.push_back(p.head().status);
    at += r.head_length;
    if (p.head().status >= 200) break;
    EXPECT_EQ(body_kind(p.head(), false), BodyKind::none);
  }
  EXPECT_EQ(statuses, (std::vector<int>{100, 103, 200}));
  EXPECT_EQ(in.substr(at), "hello world\n");
  EXPECT_EQ(*p.head().content_length, 12u);

  p.reset();
  ASSERT_EQ(p.parse(kGo103).status, Status::done);
  ASSERT_EQ(p.head().fields.size(), 2u);
  EXPECT_EQ(p.head().fields[1].value, "</script.js>; rel=preload; as=script");
  EXPECT_EQ(p.head().reason, "Early Hints");
}

TEST(ResponseParser, SwitchingProtocols) {
  ResponseParser p;
  const std::string in = kWebsocket101 + "\x81\x05hello"s;
  auto r = p.parse(in);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  const ResponseHead& h = p.head();
  EXPECT_EQ(h.status, 101);
  EXPECT_EQ(body_kind(h, false), BodyKind::none);
  EXPECT_FALSE(connection_reusable(h, false));  // the connection is the tunnel now
  EXPECT_EQ(in.substr(r.head_length), "\x81\x05hello"s);
  // "Connection: Upgrade" names the Upgrade field: hop-by-hop, which the proxy re-creates for
  // the downstream handshake.
  EXPECT_TRUE(h.has_connection_tokens);
  EXPECT_EQ(h.connection_listed, (std::vector<uint8_t>{1, 0, 0}));
}

TEST(ResponseParser, StatusLineForms) {
  ResponseParser p;
  struct Case {
    std::string line;
    int status;
    int minor;
    std::string reason;
  };
  for (const auto& c : std::vector<Case>{
           {"HTTP/1.1 200 OK", 200, 1, "OK"},
           {"HTTP/1.0 200 OK", 200, 0, "OK"},
           {"HTTP/1.1 200", 200, 1, ""},   // no SP before the empty reason: tolerated
           {"HTTP/1.1 200 ", 200, 1, ""},  // the standard form of an empty reason
           {"HTTP/1.1 404 Not Found", 404, 1, "Not Found"},
           {"HTTP/1.1 100 Continue", 100, 1, "Continue"},
           {"HTTP/1.1 599 Network Connect Timeout Error", 599, 1, "Network Connect Timeout Error"},
           {"HTTP/1.1 299 Custom", 299, 1, "Custom"},
           {"HTTP/1.1 200  OK", 200, 1, " OK"},  // reason-phrase may start with SP
           {"HTTP/1.1 200 OK \t", 200, 1, "OK \t"},
           {"HTTP/1.1 200 D\xc3\xa9j\xc3\xa0 vu", 200, 1, "D\xc3\xa9j\xc3\xa0 vu"},  // obs-text
           {"HTTP/1.1 200 100% \"fine\" (really)", 200, 1, "100% \"fine\" (really)"},
       }) {
    const std::string in = c.line + "\r\nContent-Length: 0\r\n\r\n";
    auto r = parse_once(p, in);
    ASSERT_EQ(r.status, Status::done) << c.line << ": " << r.reason;
    EXPECT_EQ(p.head().status, c.status) << c.line;
    EXPECT_EQ(p.head().version_minor, c.minor) << c.line;
    EXPECT_EQ(p.head().reason, c.reason) << c.line;
  }
  auto r = parse_once(p, "HTTP/1.1 200\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_TRUE(p.head().fields.empty());
  EXPECT_EQ(r.head_length, 16u);
}

TEST(ResponseParser, TrimsOptionalWhitespaceAndKeepsObsText) {
  ResponseParser p;
  auto r = p.parse(
      "HTTP/1.1 200 OK\r\nContent-Length:\t 7 \t\r\nX:   a  b \t \r\nY: caf\xc3\xa9\r\nZ:a\tb\r\nE:\r\n\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  const auto& f = p.head().fields;
  EXPECT_EQ(p.head().content_length, 7u);
  EXPECT_EQ(f[1].value, "a  b");
  EXPECT_EQ(f[2].value, "caf\xc3\xa9");
  EXPECT_EQ(f[3].value, "a\tb");
  EXPECT_EQ(f[4].value, "");
}

TEST(ResponseParser, ContentLength) {
  ResponseParser p;
  auto length = [&](const std::string& fields) -> std::optional<uint64_t> {
    auto r = parse_once(p, resp(fields));
    EXPECT_EQ(r.status, Status::done) << fields << r.reason;
    return p.head().content_length;
  };
  EXPECT_EQ(length("Content-Length: 0\r\n"), 0u);
  EXPECT_EQ(length("Content-Length: 007\r\n"), 7u);
  EXPECT_EQ(length("Content-Length: 18446744073709551615\r\n"), 18446744073709551615u);
  // Equal duplicates are one length (RFC 9110 §8.6), whatever their spelling.
  EXPECT_EQ(length("Content-Length: 5\r\nContent-Length: 5\r\n"), 5u);
  EXPECT_EQ(length("Content-Length: 5\r\nX: y\r\ncontent-length: 005\r\n"), 5u);
  EXPECT_EQ(p.head().fields.size(), 3u);  // both kept: the proxy writes its own framing
  EXPECT_EQ(length("X: y\r\n"), std::nullopt);
}

TEST(ResponseParser, TransferEncoding) {
  ResponseParser p;
  struct Case {
    std::string fields;
    bool chunked;
    BodyKind kind;
    bool other = true;  // a coding other than chunked is named
  };
  for (const auto& c : std::vector<Case>{
           {"Transfer-Encoding: chunked\r\n", true, BodyKind::chunked, false},
           {"Transfer-Encoding: Chunked\r\n", true, BodyKind::chunked, false},
           {"Transfer-Encoding: CHUNKED\r\n", true, BodyKind::chunked, false},
           {"Transfer-Encoding: gzip, chunked\r\n", true, BodyKind::chunked},
           {"Transfer-Encoding:gzip ,\tchunked \r\n", true, BodyKind::chunked},
           {"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", true, BodyKind::chunked},
           // RFC 9112 §6.3 item 4: chunked not final → the body runs until the close.
           {"Transfer-Encoding: gzip\r\n", false, BodyKind::until_close},
           {"Transfer-Encoding: identity\r\n", false, BodyKind::until_close},
           {"Transfer-Encoding: chunked, gzip\r\n", false, BodyKind::until_close},
           {"Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", false, BodyKind::until_close},
           {"Transfer-Encoding: xchunked\r\n", false, BodyKind::until_close},
           {"Transfer-Encoding: gzip\r\nContent-Length: 5\r\n", false, BodyKind::until_close},
       }) {
    auto r = parse_once(p, resp(c.fields));
    ASSERT_EQ(r.status, Status::done) << c.fields << r.reason;
    EXPECT_EQ(p.head().chunked, c.chunked) << c.fields;
    EXPECT_EQ(p.head().other_coding, c.other) << c.fields;
    EXPECT_EQ(body_kind(p.head(), false), c.kind) << c.fields;
    EXPECT_FALSE(p.head().content_length) << c.fields;
  }
}

TEST(ResponseParser, TransferEncodingWinsOverContentLengthAndClosesTheConnection) {
  ResponseParser p;
  for (std::string fields : {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                             "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                             "Content-Length: 5\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n"}) {
    auto r = parse_once(p, resp(fields));
    ASSERT_EQ(r.status, Status::done) << fields << r.reason;
    EXPECT_TRUE(p.head().chunked);
    EXPECT_FALSE(p.head().content_length);
    EXPECT_FALSE(p.head().keep_alive);
    EXPECT_EQ(body_kind(p.head(), false), BodyKind::chunked);
    EXPECT_FALSE(connection_reusable(p.head(), false));
  }
}

TEST(ResponseParser, KeepAliveRules) {
  ResponseParser p;
  auto keep_alive = [&](const std::string& in) {
    auto r = parse_once(p, in);
    EXPECT_EQ(r.status, Status::done) << in << r.reason;
    return p.head().keep_alive;
  };
  EXPECT_TRUE(keep_alive("HTTP/1.1 200 OK\r\n\r\n"));
  EXPECT_TRUE(keep_alive("HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"));
  EXPECT_FALSE(keep_alive("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"));
  EXPECT_FALSE(keep_alive("HTTP/1.1 200 OK\r\nConnection: Close\r\n\r\n"));
  EXPECT_FALSE(keep_alive("HTTP/1.1 200 OK\r\nConnection: keep-alive, CLOSE\r\n\r\n"));
  EXPECT_FALSE(keep_alive("HTTP/1.1 200 OK\r\nConnection: x\r\nConnection: close\r\n\r\n"));
  EXPECT_TRUE(keep_alive("HTTP/1.1 200 OK\r\nConnection: ,, \r\n\r\n"));
  EXPECT_FALSE(keep_alive("HTTP/1.0 200 OK\r\n\r\n"));
  EXPECT_TRUE(keep_alive("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n"));
  EXPECT_TRUE(keep_alive("HTTP/1.0 200 OK\r\nConnection: ,, KEEP-ALIVE ,\r\n\r\n"));
  EXPECT_FALSE(keep_alive("HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n\r\n"));
  EXPECT_FALSE(keep_alive("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n"));
}

TEST(ResponseParser, FieldsNamedByConnection) {
  ResponseParser p;
  auto r = p.parse(
      "HTTP/1.1 200 OK\r\n"
      "Connection: X-Trace, keep-alive\r\n"
      "X-Trace: abc\r\n"
      "Keep-Alive: timeout=5\r\n"
      "x-trace: def\r\n"
      "Connection: close, x-internal-hop\r\n"
      "X-Other: 1\r\n"
      "X-Internal-Hop: 2\r\n"
      "\r\n");
  ASSERT_EQ(r.status, Status::done) << r.reason;
  const ResponseHead& h = p.head();
  EXPECT_TRUE(h.has_connection_tokens);
  EXPECT_FALSE(h.keep_alive);
  EXPECT_EQ(h.connection_listed, (std::vector<uint8_t>{0, 1, 0, 1, 0, 0, 1}));

  // Options that name no present field, only connection options, or framing fields mark nothing.
  for (std::string fields : {"Connection: x-absent\r\nX-Present: 1\r\n", "Connection: close\r\nClose: 1\r\n",
                             "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n",
                             "Connection: Content-Length, Transfer-Encoding\r\nContent-Length: 3\r\n",
                             "Connection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n"}) {
    r = parse_once(p, resp(fields));
    ASSERT_EQ(r.status, Status::done) << fields << r.reason;
    EXPECT_FALSE(p.head().has_connection_tokens) << fields;
    EXPECT_EQ(p.head().connection_listed, std::vector<uint8_t>(2, 0)) << fields;
  }
  // Framing is untouched by such options.
  r = parse_once(p, resp("Connection: Content-Length\r\nContent-Length: 3\r\n"));
  EXPECT_EQ(p.head().content_length, 3u);

  // The Connection field naming itself marks itself (the proxy drops it anyway).
  r = parse_once(p, resp("Connection: connection\r\n"));
  EXPECT_EQ(p.head().connection_listed, (std::vector<uint8_t>{1}));
}

// The marking is linear: 100 fields and a Connection listing thousands of options, compared
// with the obvious quadratic reading.
TEST(ResponseParser, FieldsNamedByConnectionAtScale) {
  std::string fields = "Connection: ";
  for (int i = 0; i < 4000; ++i) fields += "o" + std::to_string(i % 150) + (i % 3 ? "," : ", ,");
  fields += "\r\n";
  for (int i = 0; i < 99; ++i) fields += (i % 2 ? "O" : "o") + std::to_string(i * 2) + ": v\r\n";
  ResponseParser p;
  const std::string in = resp(fields);
  auto r = p.parse(in);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  const ResponseHead& h = p.head();
  ASSERT_EQ(h.connection_listed.size(), h.fields.size());
  for (size_t i = 1; i < h.fields.size(); ++i) {
    bool named = false;
    flotilla::gateway::http1::syntax::for_each_list_element(h.fields[0].value, [&](std::string_view o) {
      if (o.size() == h.fields[i].name.size() && !o.empty() &&
          std::equal(o.begin(), o.end(), h.fields[i].name.begin(),
                     [](char a, char b) { return std::tolower(a) == std::tolower(b); }))
        named = true;
    });
    EXPECT_EQ(h.connection_listed[i], named ? 1 : 0) << h.fields[i].name;
  }
  EXPECT_TRUE(h.has_connection_tokens);
  EXPECT_EQ(h.connection_listed[1], 1);   // o0
  EXPECT_EQ(h.connection_listed[76], 0);  // O150
}

TEST(ResponseParser, BodyKindTable) {
  ResponseParser p;
  struct Case {
    std::string head;
    bool request_was_head;
    BodyKind kind;
  };
  const std::string cl = "Content-Length: 10\r\n";
  const std::string te = "Transfer-Encoding: chunked\r\n";
  for (const auto& c : std::vector<Case>{
           // HEAD: no body whatever the fields say.
           {"HTTP/1.1 200 OK\r\n" + cl, true, BodyKind::none},
           {"HTTP/1.1 200 OK\r\n" + te, true, BodyKind::none},
           {"HTTP/1.1 200 OK\r\n", true, BodyKind::none},
           {"HTTP/1.1 404 Not Found\r\n" + cl, true, BodyKind::none},
           // 1xx, 204, 304: never a body.
           {"HTTP/1.1 100 Continue\r\n", false, BodyKind::none},
           {"HTTP/1.1 101 Switching Protocols\r\n", false, BodyKind::none},
           {"HTTP/1.1 103 Early Hints\r\n" + cl, false, BodyKind::none},
           {"HTTP/1.1 204 No Content\r\n", false, BodyKind::none},
           {"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n", false, BodyKind::none},
           {"HTTP/1.1 204 No Content\r\n" + te, false, BodyKind::none},
           {"HTTP/1.1 304 Not Modified\r\n" + cl, false, BodyKind::none},
           {"HTTP/1.1 304 Not Modified\r\n", false, BodyKind::none},
           // Framed by the fields.
           {"HTTP/1.1 200 OK\r\n" + te, false, BodyKind::chunked},
           {"HTTP/1.1 200 OK\r\n" + cl, false, BodyKind::content_length},
           {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n", false, BodyKind::content_length},
           {"HTTP/1.1 205 Reset Content\r\nContent-Length: 0\r\n", false, BodyKind::content_length},
           {"HTTP/1.1 500 Internal Server Error\r\n" + cl, false, BodyKind::content_length},
           {"HTTP/1.1 200 OK\r\n", false, BodyKind::until_close},
           {"HTTP/1.0 200 OK\r\n", false, BodyKind::until_close},
           {"HTTP/1.1 200 OK\r\n" + cl + te, false, BodyKind::chunked},
           {"HTTP/1.1 200 OK\r\n" + te + cl, false, BodyKind::chunked},
           {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n" + cl, false, BodyKind::until_close},
       }) {
    auto r = parse_once(p, c.head + "\r\n");
    ASSERT_EQ(r.status, Status::done) << c.head << r.reason;
    EXPECT_EQ(body_kind(p.head(), c.request_was_head), c.kind) << c.head << (c.request_was_head ? " to HEAD" : "");
  }
  // connection_reusable: keep_alive, and a body that ends before the connection does.
  auto reusable = [&](const std::string& head, bool request_was_head) {
    EXPECT_EQ(parse_once(p, head + "\r\n").status, Status::done) << head;
    return connection_reusable(p.head(), request_was_head);
  };
  EXPECT_TRUE(reusable("HTTP/1.1 200 OK\r\n" + cl, false));
  EXPECT_TRUE(reusable("HTTP/1.1 200 OK\r\n", true));  // to HEAD: no body to wait for
  EXPECT_FALSE(reusable("HTTP/1.1 200 OK\r\n", false));
  EXPECT_FALSE(reusable("HTTP/1.1 200 OK\r\n" + cl + te, false));
  EXPECT_FALSE(reusable("HTTP/1.1 200 OK\r\nConnection: close\r\n" + cl, false));
  EXPECT_FALSE(reusable("HTTP/1.1 101 Switching Protocols\r\n", false));
  EXPECT_TRUE(reusable("HTTP/1.1 304 Not Modified\r\n", false));
  EXPECT_TRUE(reusable("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n" + cl, false));
}

TEST(ResponseParser, BodyThenTheNextResponse) {
  // What the proxy does on a reused connection: skip the body body_kind() describes, reset(),
  // parse the next response from there.
  const std::string chunked_body = "5\r\nhello\r\n0\r\n\r\n";
  const std::string in = kGoChunked + chunked_body + kGo200 + "hello world\n" + kGo204;
  ResponseParser p;
  auto r = p.parse(in);
  ASSERT_EQ(r.status, Status::done) << r.reason;
  ASSERT_EQ(body_kind(p.head(), false), BodyKind::chunked);
  size_t at = r.head_length + chunked_body.size();
  p.reset();
  r = p.parse(std::string_view(in).substr(at));
  ASSERT_EQ(r.status, Status::done) << r.reason;
  ASSERT_EQ(body_kind(p.head(), false), BodyKind::content_length);
  at += r.head_length + *p.head().content_length;
  p.reset();
  r = p.parse(std::string_view(in).substr(at));
  ASSERT_EQ(r.status, Status::done) << r.reason;
  EXPECT_EQ(p.head().status, 204);
  EXPECT_EQ(at + r.head_length, in.size());
}

TEST(ResponseParser, HeaderLimits) {
  auto with_fields = [](int n) {
    std::string s = "HTTP/1.1 200 OK\r\n";
    for (int i = 0; i < n; ++i) s += "X-F" + std::to_string(i) + ": v\r\n";
    return s + "\r\n";
  };
  ResponseParser p;
  EXPECT_EQ(parse_once(p, with_fields(100)).status, Status::done);
  EXPECT_EQ(p.head().fields.size(), 100u);
  EXPECT_EQ(parse_once(p, with_fields(101)).reason, "too many header fields");

  // The header section (field lines and the final CRLF) may be 60 KiB exactly, not one byte more.
  const std::string start = "HTTP/1.1 200 OK\r\n";
  auto sized = [&](size_t section) {
    std::string fields = "X: " + std::string(section - 3 - 4, 'v') + "\r\n\r\n";
    EXPECT_EQ(fields.size(), section);
    return start + fields;
  };
  auto r = parse_once(p, sized(60 * 1024));
  EXPECT_EQ(r.status, Status::done);
  EXPECT_EQ(r.head_length, start.size() + 60 * 1024);
  EXPECT_EQ(parse_once(p, sized(60 * 1024 + 1)).reason, "header section too large");
  // Refused as soon as the limit is passed, without waiting for a line end.
  EXPECT_EQ(parse_once(p, start + "X: " + std::string(70 * 1024, 'v')).reason, "header section too large");

  // The status line may be 8 KiB exactly.
  std::string line = "HTTP/1.1 200 " + std::string(8192 - 13, 'r');
  ASSERT_EQ(line.size(), 8192u);
  EXPECT_EQ(parse_once(p, line + "\r\n\r\n").status, Status::done);
  EXPECT_EQ(parse_once(p, line + "r\r\n\r\n").reason, "status line too long");

  // Limits are configurable.
  ResponseParser small(Limits{.max_request_line = 16, .max_header_bytes = 64, .max_header_count = 2});
  EXPECT_EQ(small.parse("HTTP/1.1 200 OKAY\r\n").reason, "status line too long");
  small.reset();
  EXPECT_EQ(small.parse("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n").reason, "too many header fields");
  small.reset();
  EXPECT_EQ(small.parse("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n").status, Status::done);
}

TEST(ResponseParser, NeedsMoreUntilTheHeadEnds) {
  ResponseParser p;
  for (size_t n = 0; n < kNginx200.size(); ++n) {
    auto r = p.parse(std::string_view(kNginx200).substr(0, n));
    ASSERT_EQ(r.status, Status::need_more) << n;
  }
  EXPECT_EQ(p.parse(kNginx200).status, Status::done);
}

TEST(ResponseParser, ViewsFollowTheBufferAndTheResultStays) {
  ResponseParser p;
  std::string a = kNginx200;
  auto r = p.parse(a);
  ASSERT_EQ(r.status, Status::done);
  EXPECT_EQ(p.head().reason.data(), a.data() + 13);
  EXPECT_EQ(p.head().fields[0].name.data(), a.data() + 17);
  // The connection's buffer moved: the same bytes elsewhere, and more after them.
  std::string b = kNginx200 + "body";
  EXPECT_EQ(p.parse(b), r);
  EXPECT_EQ(p.head().reason.data(), b.data() + 13);
  EXPECT_EQ(p.head().fields[6].value.data(), b.data() + kNginx200.size() - 4 - 5);
  EXPECT_EQ(p.head().content_length, 1342u);
  // An error stays too.
  p.reset();
  auto e = p.parse("HTTP/1.1 20 X\r\n");
  EXPECT_EQ(p.parse("HTTP/1.1 20 X\r\n\r\n"), e);
}

TEST(ResponseParser, ReuseKeepsNoStateBetweenResponses) {
  ResponseParser p;
  ASSERT_EQ(p.parse(resp("Content-Length: 1\r\nTransfer-Encoding: chunked\r\nConnection: close, x\r\nX: 1\r\n")).status,
            Status::done);
  EXPECT_TRUE(p.head().has_connection_tokens);
  p.reset();
  ASSERT_EQ(p.parse(resp("Content-Length: 2\r\n")).status, Status::done);
  EXPECT_EQ(*p.head().content_length, 2u);
  EXPECT_FALSE(p.head().chunked);
  EXPECT_TRUE(p.head().keep_alive);
  EXPECT_FALSE(p.head().has_connection_tokens);
  EXPECT_EQ(p.head().fields.size(), 1u);
  EXPECT_EQ(p.head().connection_listed.size(), 1u);
  p.reset();
  // The Content-Length of before is forgotten: no conflict.
  EXPECT_EQ(p.parse(resp("Content-Length: 3\r\n")).status, Status::done);
  p.reset();
  // So is the chunked of before: no "chunked twice".
  ASSERT_EQ(p.parse(resp("Transfer-Encoding: chunked\r\n")).status, Status::done);
  p.reset();
  EXPECT_EQ(p.parse(resp("Transfer-Encoding: chunked\r\n")).status, Status::done);
}

// After the first responses have grown the vectors, parsing allocates nothing: every vector
// keeps its storage across reset().
TEST(ResponseParser, NoAllocationAfterWarmUp) {
  const std::string in = resp("Connection: x-a, x-b\r\nX-A: 1\r\nX-B: 2\r\n") + kNginx200;
  ResponseParser p;
  ASSERT_EQ(p.parse(in).status, Status::done);
  const Field* fields = p.head().fields.data();
  const uint8_t* listed = p.head().connection_listed.data();
  for (int i = 0; i < 3; ++i) {
    for (const std::string& s : {in, kNginx200, kGo103, kWebsocket101}) {
      p.reset();
      ASSERT_EQ(p.parse(s).status, Status::done);
      EXPECT_EQ(p.head().fields.data(), fields);
      EXPECT_EQ(p.head().connection_listed.data(), listed);
    }
  }
}

// Feeding the bytes at any split point, or one at a time, gives what feeding them at once gives.
TEST(ResponseParser, SplitFeedingGivesTheSameResult) {
  std::vector<std::string> inputs = {
      kNginx200,
      kNginxChunked + "5\r\nhello\r\n0\r\n\r\n",
      kNginx304,
      kPython200,
      kPython404,
      kGo200 + "hello world\n",
      kGo204,
      kGo100 + kGo200,
      kGo103,
      kWebsocket101,
      resp("Connection: X-Trace\r\nX-Trace: 1\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
           "Transfer-Encoding: gzip, chunked\r\n"),
      "HTTP/1.1 200\r\n\r\n",
      "HTTP/1.1 200 OK\r",
      "HTTP/1.1 200 OK\r\nX: y\r\n\r",
      "HTTP/1",
      "",
  };
  for (const auto& c : refusals()) inputs.push_back(c.input);
  {
    std::string big = "HTTP/1.1 200 OK\r\n";
    for (int i = 0; i < 99; ++i) big += "X-Field-" + std::to_string(i) + ": " + std::string(200, 'v') + "\r\n";
    inputs.push_back(big + "Connection: x-field-7\r\n\r\n");
    inputs.push_back(big + "X-Last: 1\r\nX-Too-Many: 1\r\n\r\n");  // 101 fields
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
TEST(ResponseParser, ByteAtATimeIsLinear) {
  for (bool one_long_line : {false, true}) {
    std::string in = "HTTP/1.1 200 OK\r\n";
    if (one_long_line) {
      in += "X: " + std::string(60 * 1024 - 3 - 4, 'v') + "\r\n";
    } else {
      for (int i = 0; i < 99; ++i) in += "X-" + std::to_string(i) + ": " + std::string(600, 'v') + "\r\n";
    }
    in += "\r\n";
    ResponseParser p;
    ResponseParser::Result r;
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

// Not a pass/fail test: prints ns per response head for a typical nginx 200 (~200 bytes).
// FLOTILLA_PARSER_BENCH_ITERATIONS=1000000 for a steadier number.
TEST(ResponseParser, SpeedOfATypicalNginxResponse) {
  long iterations = 20000;
  if (const char* env = std::getenv("FLOTILLA_PARSER_BENCH_ITERATIONS")) iterations = std::atol(env);
  for (const std::string* in : {&kNginx200, &kWebsocket101}) {
    ResponseParser p;
    size_t sink = 0;
    auto start = std::chrono::steady_clock::now();
    for (long i = 0; i < iterations; ++i) {
      p.reset();
      auto r = p.parse(*in);
      sink += r.head_length + p.head().fields.size();
    }
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(sink, static_cast<size_t>(iterations) * (in->size() + p.head().fields.size()));
    std::printf("[          ] %zu-byte %d response head%s, %ld iterations: %.1f ns/response\n", in->size(),
                p.head().status, p.head().has_connection_tokens ? " (Connection names a field)" : "", iterations,
                static_cast<double>(ns) / static_cast<double>(iterations));
  }
}
