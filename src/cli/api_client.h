// The CLI's client of the agent API: one blocking HTTP/1.1 request at a time. Every subcommand
// other than `agent` talks to the agent only through this (the CLI never opens the store).
#pragma once

#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace flotilla::cli {

struct ApiResponse {
  int status = 0;
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string header(const std::string& name) const;  // case-insensitive; "" when absent
};

// Thrown when no agent answers at the address (connection refused, unresolvable, connect timeout);
// other failures (a request cut off, a read timeout) are plain std::runtime_error.
class AgentUnreachable : public std::runtime_error {
 public:
  explicit AgentUnreachable(const std::string& message, bool refused = false)
      : std::runtime_error(message), refused_(refused) {}
  // The address answered that nothing listens there (ECONNREFUSED), as opposed to a name that
  // does not resolve or a connection that timed out.
  bool refused() const { return refused_; }

 private:
  bool refused_;
};

class ApiClient {
 public:
  // address: "HOST:PORT" or "http://HOST:PORT"; empty means $FLOTILLA_API, else 127.0.0.1:7700.
  // token: empty means $FLOTILLA_TOKEN.
  explicit ApiClient(std::string address = {}, std::string token = {});
  // Throws AgentUnreachable when the agent cannot be reached, std::runtime_error (with a readable
  // message) when the exchange fails. timeout bounds the whole exchange (connecting included);
  // zero means 11 minutes, above the longest blocking query (10m).
  ApiResponse request(const std::string& method, const std::string& target, const std::string& body = {},
                      std::chrono::milliseconds timeout = {}) const;
  const std::string& address() const { return host_port_; }

 private:
  std::string host_, port_, host_port_, token_;
};

// Percent-encodes a path segment or key (keeps '/').
std::string url_encode_path(const std::string& s);
// "error" from a JSON error body, or the body itself.
std::string error_message(const ApiResponse& r);

}  // namespace flotilla::cli
