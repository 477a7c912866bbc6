#include "http/message.h"

#include <gtest/gtest.h>

using namespace flotilla::http;

TEST(Message, ParsesTargetWithDecoding) {
  std::string path;
  std::vector<std::pair<std::string, std::string>> q;
  ASSERT_TRUE(parse_target("/v1/kv/a%2Fb%20c?recurse&cas=3&note=a+b%21&x=", path, q));
  EXPECT_EQ(path, "/v1/kv/a/b c");
  ASSERT_EQ(q.size(), 4u);
  EXPECT_EQ(q[0], (std::pair<std::string, std::string>{"recurse", ""}));
  EXPECT_EQ(q[1], (std::pair<std::string, std::string>{"cas", "3"}));
  EXPECT_EQ(q[2], (std::pair<std::string, std::string>{"note", "a b!"}));
  EXPECT_EQ(q[3], (std::pair<std::string, std::string>{"x", ""}));
}

TEST(Message, RejectsBadEscapes) {
  std::string path;
  std::vector<std::pair<std::string, std::string>> q;
  EXPECT_FALSE(parse_target("/a%2", path, q));
  EXPECT_FALSE(parse_target("/a%zz", path, q));
  EXPECT_FALSE(parse_target("/a?x=%", path, q));
}

TEST(Message, ExchangeAnswersOnceAndCancels) {
  int delivered = 0, cancelled = 0;
  auto ex = std::make_shared<Exchange>(Request{}, [&](Response&&) { ++delivered; });
  ex->on_cancel([&] { ++cancelled; });
  ex->respond(Response::json(200, "a"));
  ex->respond(Response::json(200, "b"));
  ex->cancel();
  EXPECT_EQ(delivered, 1);
  EXPECT_EQ(cancelled, 0);

  auto ex2 = std::make_shared<Exchange>(Request{}, [&](Response&&) { ++delivered; });
  ex2->on_cancel([&] { ++cancelled; });
  ex2->cancel();
  ex2->respond(Response::json(200, "late"));
  EXPECT_EQ(delivered, 1);
  EXPECT_EQ(cancelled, 1);
}

TEST(Message, ErrorBodyNamesField) {
  auto r = Response::error(400, "Port must be an integer", "Port");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.body, "{\"error\":\"Port must be an integer\",\"field\":\"Port\"}\n");
}

TEST(Message, EveryStatusTheGatewayAnswersItselfHasAReasonPhrase) {
  // A status line such as "HTTP/1.1 504 " is legal but tells a person reading it nothing.
  for (int status : {100, 101, 200, 204, 400, 404, 408, 413, 414, 429, 431, 500, 501, 502, 503, 504, 505})
    EXPECT_FALSE(reason_phrase(status).empty()) << status;
  EXPECT_EQ(reason_phrase(502), "Bad Gateway");
  EXPECT_EQ(reason_phrase(504), "Gateway Timeout");
  EXPECT_EQ(reason_phrase(299), "");  // unknown: empty, still a valid status line
}
