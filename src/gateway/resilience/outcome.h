// How one attempt of a proxied request ended, as the resilience rules see it. Retry decisions
// (retry.h) and passive outlier detection (outlier.h) both read it, so the proxy describes an
// attempt once and asks both.
#pragma once

#include <cstdint>

namespace flotilla::gateway::resilience {

struct Outcome {
  enum class Kind : uint8_t {
    connect_failure,  // no connection was established (refused, unreachable, connect timeout)
    reset,            // the connection closed or reset before a complete response head arrived
    timeout,          // the attempt's (per-try or route) timeout fired after connecting
    response,         // the upstream answered with `status`
  };
  Kind kind = Kind::response;
  int status = 0;  // for Kind::response
  // True once any byte of the request was handed to the upstream socket: from then on the upstream
  // may have seen (and acted on) the request. Always false for connect_failure.
  bool request_sent = false;

  static Outcome connect_failure() { return {Kind::connect_failure, 0, false}; }
  static Outcome reset(bool request_sent) { return {Kind::reset, 0, request_sent}; }
  static Outcome timeout(bool request_sent) { return {Kind::timeout, 0, request_sent}; }
  static Outcome response(int status) { return {Kind::response, status, true}; }
};

}  // namespace flotilla::gateway::resilience
