// Plain HTTP request/response values and the Exchange a handler answers through. No Beast or Asio
// here: API handlers depend on this header only.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace flotilla::http {

struct Request {
  std::string method;  // "GET", "PUT", ...
  std::string target;  // as received
  std::string path;    // percent-decoded, without the query
  std::vector<std::pair<std::string, std::string>> query;    // decoded, in order
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string remote_address;

  // The first value of a query parameter; nullptr when absent ("?recurse" gives "").
  const std::string* param(std::string_view name) const;
  bool has_param(std::string_view name) const { return param(name) != nullptr; }
  // The first value of a header, by lower-case name; nullptr when absent.
  const std::string* header(std::string_view lower_name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  static Response json(int status, std::string body);
  // {"error": message, "field": field} — the shape of every API error.
  static Response error(int status, std::string_view message, std::string_view field = {});
};

// One request in flight. A handler answers at once or later (blocking queries, durable writes)
// by calling respond() exactly once; if the client disconnects first, the on_cancel callback runs
// so the handler can drop its timers and watches.
class Exchange {
 public:
  using Deliver = std::function<void(Response&&)>;
  Exchange(Request request, Deliver deliver) : request_(std::move(request)), deliver_(std::move(deliver)) {}

  const Request& request() const { return request_; }
  void respond(Response response);
  bool responded() const { return responded_; }
  void on_cancel(std::function<void()> fn) { on_cancel_ = std::move(fn); }
  // Sees the answer just before it is sent (metrics, access logs).
  void observe(std::function<void(const Response&)> fn) { observer_ = std::move(fn); }
  // Called by the server when the client went away before the answer.
  void cancel();

 private:
  Request request_;
  Deliver deliver_;
  std::function<void()> on_cancel_;
  std::function<void(const Response&)> observer_;
  bool responded_ = false;
};

using Handler = std::function<void(const std::shared_ptr<Exchange>&)>;

// Percent-decoding; '+' becomes a space only when plus_as_space (query strings).
// Returns false on a malformed escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_as_space);

// Splits "/p/a?x=1&y" into decoded path and query pairs; false on a malformed escape.
bool parse_target(std::string_view target, std::string& path,
                  std::vector<std::pair<std::string, std::string>>& query);

std::string_view reason_phrase(int status);

}  // namespace flotilla::http
