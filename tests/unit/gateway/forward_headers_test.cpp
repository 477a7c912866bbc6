#include "gateway/forward_headers.h"

#include <gtest/gtest.h>

#include <string>

#include "gateway/http1/request_parser.h"
#include "gateway/http1/response_parser.h"

using namespace flotilla::gateway;

namespace {

struct Parsed {
  std::string bytes;
  http1::RequestParser parser;
  const http1::RequestHead& head() {
    auto r = parser.parse(bytes);
    EXPECT_EQ(r.status, http1::RequestParser::Status::done) << r.reason;
    return parser.head();
  }
};

std::string upstream(const std::string& request, UpstreamRequest r = {}) {
  Parsed p{request, http1::RequestParser()};
  const auto& head = p.head();
  if (r.method.empty()) r.method = head.method;
  if (r.target.empty()) r.target = head.path;
  if (r.client_ip.empty()) r.client_ip = "10.1.2.3";
  r.random[0] = 0x1111111111111111ull;
  r.random[1] = 0x2222222222222222ull;
  r.random[2] = 0x3333333333333333ull;
  std::string out;
  build_upstream_head(head, r, out);
  return out;
}

bool has_line(const std::string& head, const std::string& line) {
  return head.find("\r\n" + line + "\r\n") != std::string::npos;
}

std::string field_value(const std::string& head, const std::string& name) {
  auto at = head.find("\r\n" + name + ": ");
  if (at == std::string::npos) return "<absent>";
  at += name.size() + 4;
  return head.substr(at, head.find("\r\n", at) - at);
}

}  // namespace

TEST(ForwardHeaders, HopByHopAndConnectionListedFieldsAreDropped) {
  auto out = upstream(
      "GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Secret\r\nX-Secret: s\r\n"
      "Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\nUpgrade: h2c\r\nAccept: */*\r\n\r\n");
  EXPECT_EQ(out.rfind("GET /a HTTP/1.1\r\nHost: example.com\r\n", 0), 0u) << out;
  for (const char* gone : {"Connection", "X-Secret", "Keep-Alive", "TE", "Proxy-Authorization", "Upgrade"})
    EXPECT_EQ(field_value(out, gone), "<absent>") << gone << "\n" << out;
  EXPECT_TRUE(has_line(out, "Accept: */*"));
  EXPECT_EQ(out.substr(out.size() - 4), "\r\n\r\n");
}

// An h2c upgrade is served as plain HTTP/1.1: its settings go with it, even when Connection
// does not name them.
TEST(ForwardHeaders, Http2SettingsNeverReachTheService) {
  for (const char* connection : {"Upgrade, HTTP2-Settings", "Upgrade"}) {
    auto out = upstream(std::string("GET /a HTTP/1.1\r\nHost: example.com\r\nConnection: ") + connection +
                        "\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
    EXPECT_EQ(field_value(out, "HTTP2-Settings"), "<absent>") << out;
  }
}

TEST(ForwardHeaders, ForwardedFieldsAppendAndReplace) {
  auto out = upstream(
      "GET / HTTP/1.1\r\nHost: shop.example:8080\r\nX-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n"
      "X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\r\n");
  EXPECT_EQ(field_value(out, "X-Forwarded-For"), "1.1.1.1, 2.2.2.2, 10.1.2.3");
  EXPECT_EQ(field_value(out, "X-Forwarded-Proto"), "http");
  EXPECT_EQ(field_value(out, "X-Forwarded-Host"), "shop.example:8080");
  EXPECT_EQ(out.find("evil"), std::string::npos);
  EXPECT_EQ(out.find("https"), std::string::npos);
}

TEST(ForwardHeaders, TheProtoGivenReplacesTheClients) {
  // Behind a trusted TLS terminator the gateway sends the scheme it said (TrustedProxies::
  // forwarded_proto); X-Forwarded-Host stays the gateway's own whoever sent one.
  UpstreamRequest r;
  r.proto = "https";
  auto out = upstream("GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-Proto: http\r\n"
                      "X-Forwarded-Host: evil.example\r\n\r\n", r);
  EXPECT_EQ(field_value(out, "X-Forwarded-Proto"), "https") << out;
  EXPECT_EQ(field_value(out, "X-Forwarded-Host"), "shop.example") << out;
  EXPECT_EQ(out.find("X-Forwarded-Proto", out.find("X-Forwarded-Proto") + 1), std::string::npos) << out;
  EXPECT_EQ(out.find("evil.example"), std::string::npos) << out;
}

TEST(ForwardHeaders, RealIpIsTheClientTheGatewayBelieves) {
  // The peer, or the client a trusted proxy named; a request's own X-Real-IP (any case, any
  // number) never reaches the service, so a service can believe the one it gets.
  const std::string request =
      "GET / HTTP/1.1\r\nHost: a\r\nX-Real-IP: 6.6.6.6\r\nx-real-ip: 7.7.7.7\r\nX-Forwarded-For: 8.8.8.8\r\n\r\n";
  auto direct = upstream(request);
  EXPECT_EQ(field_value(direct, "X-Real-IP"), "10.1.2.3") << direct;
  UpstreamRequest r;
  r.real_ip = "203.0.113.9";
  auto behind = upstream(request, r);
  EXPECT_EQ(field_value(behind, "X-Real-IP"), "203.0.113.9") << behind;
  EXPECT_EQ(field_value(behind, "X-Forwarded-For"), "8.8.8.8, 10.1.2.3") << behind;
  for (const auto& out : {direct, behind}) {
    EXPECT_EQ(out.find("6.6.6.6"), std::string::npos) << out;
    EXPECT_EQ(out.find("7.7.7.7"), std::string::npos) << out;
    EXPECT_EQ(out.find("X-Real-IP", out.find("X-Real-IP") + 1), std::string::npos) << out;
  }
}

TEST(ForwardHeaders, OnlyATrustedProxySpeaksForTheRequestsOrigin) {
  // Fields frameworks read as the proxy's word on scheme, port, prefix or user (Rack:
  // X-Forwarded-Ssl ahead of X-Forwarded-Proto; Tornado: X-Scheme; Spring: X-Forwarded-Prefix;
  // oauth2-proxy's X-Forwarded-User).
  const std::string request =
      "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Ssl: on\r\nX-Forwarded-Port: 443\r\n"
      "x-forwarded-prefix: /evil\r\nX-Forwarded-Scheme: https\r\nX-FORWARDED-USER: admin\r\nX-Scheme: https\r\n"
      "X-Url-Scheme: https\r\nFront-End-Https: on\r\nX-Forwarded-For: 5.6.7.8\r\nX-Forwardedness: kept\r\n"
      "X-Custom: kept\r\nFront-End: kept\r\nX-Schemes: kept\r\n\r\n";
  const char* origin[] = {"X-Forwarded-Ssl", "X-Forwarded-Port", "x-forwarded-prefix", "X-Forwarded-Scheme",
                          "X-FORWARDED-USER", "X-Scheme", "X-Url-Scheme", "Front-End-Https"};
  auto direct = upstream(request);
  for (const char* gone : origin) EXPECT_EQ(field_value(direct, gone), "<absent>") << gone << "\n" << direct;
  EXPECT_EQ(field_value(direct, "X-Forwarded-For"), "5.6.7.8, 10.1.2.3") << direct;
  EXPECT_EQ(field_value(direct, "X-Forwarded-Proto"), "http") << direct;
  for (const char* kept : {"X-Forwardedness", "X-Custom", "Front-End", "X-Schemes"})
    EXPECT_EQ(field_value(direct, kept), "kept") << kept << "\n" << direct;
  // From a trusted proxy they are its word, and pass as it sent them.
  UpstreamRequest r;
  r.trusted_peer = true;
  auto behind = upstream(request, r);
  for (const char* passed : origin) EXPECT_NE(field_value(behind, passed), "<absent>") << passed << "\n" << behind;
  EXPECT_EQ(field_value(behind, "X-FORWARDED-USER"), "admin") << behind;
}

TEST(ForwardHeaders, ForwardedNeverPasses) {
  // RFC 7239's field: few load balancers set it, most pass a client's on, and Rack and Spring read
  // its host= and proto= ahead of X-Forwarded-*; so from no one, whatever its case.
  for (bool trusted : {false, true})
    for (const char* name : {"Forwarded", "FORWARDED", "forwarded"}) {
      UpstreamRequest r;
      r.trusted_peer = trusted;
      auto out =
          upstream(std::string("GET / HTTP/1.1\r\nHost: a\r\n") + name + ": host=evil.example;proto=https\r\n\r\n", r);
      EXPECT_EQ(out.find("evil.example"), std::string::npos) << out;
    }
}

TEST(ForwardHeaders, UnderscoreSpellingsOfTheForwardingFieldsNeverPass) {
  // CGI, WSGI, PHP and Rack read X_Forwarded_Host as X-Forwarded-Host (HTTP_X_FORWARDED_HOST):
  // such a field would stand beside, or replace, the gateway's own. Dropped from anyone.
  const std::string request =
      "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_Host: evil.example\r\nx_forwarded_proto: https\r\n"
      "X-Forwarded_For: 6.6.6.6\r\nX_Real_IP: 7.7.7.7\r\nX_Forwarded_Port: 1\r\nX_Request_Id: forged\r\n"
      "X_Scheme: https\r\nFront_End_Https: on\r\nX_Custom: kept\r\n\r\n";
  for (bool trusted : {false, true}) {
    UpstreamRequest r;
    r.trusted_peer = trusted;
    auto out = upstream(request, r);
    for (const char* gone : {"evil.example", "https", "6.6.6.6", "7.7.7.7", "X_Forwarded_Port", "forged", "Front_End"})
      EXPECT_EQ(out.find(gone), std::string::npos) << gone << "\n" << out;
    EXPECT_EQ(field_value(out, "X_Custom"), "kept") << out;
    EXPECT_EQ(field_value(out, "X-Forwarded-For"), "10.1.2.3") << out;
  }
}

TEST(ForwardHeaders, RequestIdGeneratedOrKept) {
  auto made = upstream("GET / HTTP/1.1\r\nHost: a\r\n\r\n");
  auto id = field_value(made, "X-Request-Id");
  ASSERT_EQ(id.size(), 32u) << made;
  EXPECT_EQ(id.find_first_not_of("0123456789abcdef"), std::string::npos);
  auto kept = upstream("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n");
  EXPECT_EQ(field_value(kept, "X-Request-Id"), "abc-123");
  // Only one id goes upstream even when the client sent two.
  auto twice = upstream("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: one\r\nX-Request-Id: two\r\n\r\n");
  EXPECT_EQ(twice.find("two"), std::string::npos) << twice;
}

TEST(ForwardHeaders, TraceparentPropagatedWithNewParentOrCreated) {
  const std::string trace = "4bf92f3577b34da6a3ce929d0e0e4736";
  auto out = upstream("GET / HTTP/1.1\r\nHost: a\r\ntraceparent: 00-" + trace + "-00f067aa0ba902b7-01\r\n\r\n");
  auto tp = parse_traceparent(field_value(out, "traceparent"));
  ASSERT_TRUE(tp) << out;
  EXPECT_EQ(tp->trace_id, trace);
  EXPECT_NE(tp->parent_id, "00f067aa0ba902b7");
  EXPECT_EQ(tp->flags, "01");
  for (const char* bad : {"00-00000000000000000000000000000000-00f067aa0ba902b7-01", "zz", "ff-" "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                          "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}) {
    auto fresh = upstream(std::string("GET / HTTP/1.1\r\nHost: a\r\ntraceparent: ") + bad + "\r\n\r\n");
    auto made = parse_traceparent(field_value(fresh, "traceparent"));
    ASSERT_TRUE(made) << bad << "\n" << fresh;
    EXPECT_NE(made->trace_id, trace);
    EXPECT_EQ(fresh.find(bad), std::string::npos);
  }
}

TEST(ForwardHeaders, TracestateGoesOnlyWithAValidTraceparent) {
  const std::string valid = "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n";
  // tracestate before or after traceparent: kept with a trace that continues.
  for (const std::string& fields : {"tracestate: vendor=abc\r\n" + valid, valid + "tracestate: vendor=abc\r\n"}) {
    auto out = upstream("GET / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n");
    EXPECT_EQ(field_value(out, "tracestate"), "vendor=abc") << out;
  }
  // A new trace (no traceparent, or an invalid one): the old state is dropped (W3C Trace Context §3.3).
  for (const std::string& fields : {std::string("tracestate: vendor=abc\r\n"),
                                    std::string("traceparent: garbage\r\ntracestate: vendor=abc\r\n")}) {
    auto out = upstream("GET / HTTP/1.1\r\nHost: a\r\n" + fields + "\r\n");
    EXPECT_EQ(out.find("vendor=abc"), std::string::npos) << out;
    EXPECT_TRUE(parse_traceparent(field_value(out, "traceparent"))) << out;
  }
}

TEST(ForwardHeaders, BodyIsReframed) {
  UpstreamRequest chunked;
  chunked.chunked = true;
  auto out = upstream("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", chunked);
  EXPECT_TRUE(has_line(out, "Transfer-Encoding: chunked"));
  EXPECT_EQ(field_value(out, "Content-Length"), "<absent>");
  UpstreamRequest sized;
  sized.content_length = 5;
  out = upstream("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n", sized);
  EXPECT_EQ(field_value(out, "Content-Length"), "5");
  EXPECT_EQ(field_value(out, "Expect"), "<absent>");  // the gateway answers 100 itself
}

TEST(ForwardHeaders, UpgradeIsForwardedOnlyWhenAsked) {
  UpstreamRequest r;
  r.upgrade = true;
  auto out = upstream("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", r);
  EXPECT_TRUE(has_line(out, "Connection: upgrade"));
  EXPECT_TRUE(has_line(out, "Upgrade: websocket"));
}

TEST(ForwardHeaders, DownstreamHeadDropsHopByHopAndSetsFraming) {
  std::string raw =
      "HTTP/1.1 200 OK\r\nServer: x\r\nConnection: keep-alive, X-Internal\r\nX-Internal: 1\r\n"
      "Keep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=b\r\n\r\n";
  http1::ResponseParser p;
  ASSERT_EQ(p.parse(raw).status, http1::ResponseParser::Status::done);
  std::string out;
  DownstreamResponse d;
  d.chunked = true;
  build_downstream_head(p.head(), d, out);
  EXPECT_EQ(out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);
  EXPECT_TRUE(has_line(out, "Server: x"));
  EXPECT_TRUE(has_line(out, "Set-Cookie: a=b"));
  EXPECT_TRUE(has_line(out, "Transfer-Encoding: chunked"));
  EXPECT_EQ(field_value(out, "X-Internal"), "<absent>");
  EXPECT_EQ(field_value(out, "Keep-Alive"), "<absent>");
  EXPECT_EQ(field_value(out, "Connection"), "<absent>");

  out.clear();
  DownstreamResponse old;
  old.version_minor = 0;
  old.content_length = 12;
  build_downstream_head(p.head(), old, out);
  EXPECT_EQ(out.rfind("HTTP/1.1 200 OK\r\n", 0), 0u);  // RFC 9110 §6.2
  EXPECT_TRUE(has_line(out, "Connection: keep-alive"));
  EXPECT_TRUE(has_line(out, "Content-Length: 12"));
  EXPECT_EQ(field_value(out, "Transfer-Encoding"), "<absent>");

  out.clear();
  DownstreamResponse closing;
  closing.keep_alive = false;
  build_downstream_head(p.head(), closing, out);
  EXPECT_TRUE(has_line(out, "Connection: close"));
}

TEST(ForwardHeaders, TrailerIsKeptOnlyWithTheChunksThatCarryIt) {
  http1::ResponseParser p;
  ASSERT_EQ(p.parse("HTTP/1.1 200 OK\r\nTrailer: X-Checksum\r\nTransfer-Encoding: chunked\r\n\r\n").status,
            http1::ResponseParser::Status::done);
  std::string out;
  DownstreamResponse chunked;
  chunked.chunked = true;
  build_downstream_head(p.head(), chunked, out);
  EXPECT_EQ(field_value(out, "Trailer"), "X-Checksum") << out;
  // Decoded for an HTTP/1.0 client, ended by the close: the trailer fields are not sent.
  out.clear();
  DownstreamResponse decoded;
  decoded.version_minor = 0;
  decoded.keep_alive = false;
  build_downstream_head(p.head(), decoded, out);
  EXPECT_EQ(field_value(out, "Trailer"), "<absent>") << out;
}

TEST(ForwardHeaders, DownstreamHeadGetsADateWhenTheServiceSentNone) {
  const std::string now = "Thu, 03 Dec 2026 12:00:00 GMT";
  DownstreamResponse d;
  d.date = now;
  http1::ResponseParser without;
  ASSERT_EQ(without.parse("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").status, http1::ResponseParser::Status::done);
  std::string out;
  build_downstream_head(without.head(), d, out);
  EXPECT_EQ(field_value(out, "Date"), now) << out;
  // The service's own Date is passed on, not doubled.
  http1::ResponseParser with;
  ASSERT_EQ(with.parse("HTTP/1.1 200 OK\r\ndate: Wed, 02 Dec 2026 08:00:00 GMT\r\nContent-Length: 0\r\n\r\n").status,
            http1::ResponseParser::Status::done);
  out.clear();
  build_downstream_head(with.head(), d, out);
  EXPECT_EQ(field_value(out, "date"), "Wed, 02 Dec 2026 08:00:00 GMT") << out;
  EXPECT_EQ(out.find(now), std::string::npos) << out;
}

TEST(ForwardHeaders, TraceparentParser) {
  EXPECT_TRUE(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  EXPECT_FALSE(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"));
  EXPECT_FALSE(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
  EXPECT_TRUE(parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"));
  EXPECT_FALSE(parse_traceparent("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
  EXPECT_FALSE(parse_traceparent(""));
}
