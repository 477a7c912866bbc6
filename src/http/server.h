// An HTTP/1.1 server for control-plane APIs (agent API, metrics, admin) on one event loop.
// Keep-alive, pipelining (answered in order), deferred answers with client-disconnect detection,
// and limits on header and body size. The gateway's data plane has its own, faster path.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/duration.h"
#include "http/address.h"  // split_host_port and friends, for the users of the server
#include "http/message.h"

namespace flotilla {
class EventLoop;
}

namespace flotilla::http {

struct ServerLimits {
  uint32_t header_bytes = 64 * 1024;
  uint64_t body_bytes = 1024 * 1024;
  Duration idle_timeout = std::chrono::seconds(60);
  Duration read_timeout = std::chrono::seconds(30);  // header complete -> body complete; writing an answer
  uint32_t max_connections = 100000;
};

class Server {
 public:
  Server(EventLoop& loop, Handler handler, ServerLimits limits = {});
  ~Server();
  // Binds "host:port" (port 0 picks one) and listens; throws std::runtime_error with a clear
  // message. Connections wait in the kernel's backlog until start().
  void listen(const std::string& address);
  // Starts accepting connections.
  void start();
  // The bound port (after listen).
  uint16_t port() const;
  void stop();
  size_t connections() const;

  struct Impl;  // public so the connection type in server.cpp can name it

 private:
  std::shared_ptr<Impl> impl_;
};


}  // namespace flotilla::http
