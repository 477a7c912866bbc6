// One health probe: an HTTP(S) request or a TCP connect with a deadline, run on an event loop
// without blocking it. The result is a Consul status and the output a person reads.
#pragma once

#include <functional>
#include <string>

#include "common/duration.h"
#include "registry/types.h"

namespace flotilla {
class EventLoop;
}

namespace flotilla::health {

struct ProbeResult {
  std::string status;  // passing | warning | critical
  std::string output;
};
using ProbeDone = std::function<void(ProbeResult&&)>;

// 2xx passing, 429 warning, anything else, an error or the deadline critical. At most 4 KiB of
// the body goes into the output, as Consul does.
void probe_http(EventLoop& loop, const registry::CheckDefinition& check, Duration timeout, ProbeDone done);
void probe_tcp(EventLoop& loop, const std::string& address, Duration timeout, ProbeDone done);

struct Url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;  // path and query, at least "/"
};
// Parses http:// and https:// URLs; false otherwise.
bool parse_url(const std::string& url, Url& out);

}  // namespace flotilla::health
