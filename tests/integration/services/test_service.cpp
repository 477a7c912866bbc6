// A small service for flotilla's end-to-end tests (C++17, libc and pthreads only). The contract
// it shares with py_service.py and shell_service.sh:
//   listens on 127.0.0.1:$PORT (HTTP/1.1, keep-alive, Content-Length; a thread per connection);
//   GET /healthz   200 "ok"; 500 while $UNHEALTHY_FOR_MS has not elapsed since start, or while the
//                  file named by $HEALTH_FILE exists;
//   GET /          200 {"instance": $FLOTILLA_INSTANCE, "service": $FLOTILLA_SERVICE,
//                  "version": $VERSION, "pid": N}; the same with 500 when FAIL=1;
//   GET /env       the whole environment as a JSON object;
//   GET /slow?ms=N sleeps N ms, then answers like /;
//   GET /call?dep=NAME  GET ${NAME_URL}/ (NAME upper-cased, '-' -> '_'), answers {"via": <its body>};
//   CRASH_AFTER_MS=N    exits with code 3 after N ms;
//   FORK_CHILDREN=1     starts a background `sleep 1000` child and a `setsid sleep 1000` daemon at
//                       start and prints "children PID1 PID2";
//   prints "listening on $PORT" on stdout and "started" on stderr; SIGTERM: exits at once.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
const Clock::time_point kStart = Clock::now();

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

long env_long(const char* name) {
  std::string v = env(name);
  return v.empty() ? 0 : std::strtol(v.c_str(), nullptr, 10);
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string identity() {
  return "{\"instance\": " + json_string(env("FLOTILLA_INSTANCE")) + ", \"service\": " +
         json_string(env("FLOTILLA_SERVICE")) + ", \"version\": " + json_string(env("VERSION")) +
         ", \"pid\": " + std::to_string(::getpid()) + "}";
}

std::string environment_json() {
  std::string out = "{";
  bool first = true;
  for (char** e = environ; e && *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    out += (first ? "" : ", ") + json_string(kv.substr(0, eq)) + ": " + json_string(kv.substr(eq + 1));
    first = false;
  }
  return out + "}";
}

bool healthy() {
  long unhealthy_ms = env_long("UNHEALTHY_FOR_MS");
  auto up = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - kStart).count();
  if (up < unhealthy_ms) return false;
  std::string hf = env("HEALTH_FILE");
  struct stat st;
  return hf.empty() || ::stat(hf.c_str(), &st) != 0;
}

bool write_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

const char* reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    default: return "Unknown";
  }
}

std::string query_param(const std::string& query, const std::string& name) {
  size_t pos = 0;
  while (pos <= query.size()) {
    size_t amp = query.find('&', pos);
    if (amp == std::string::npos) amp = query.size();
    std::string part = query.substr(pos, amp - pos);
    auto eq = part.find('=');
    if (part.substr(0, eq) == name) return eq == std::string::npos ? "" : part.substr(eq + 1);
    pos = amp + 1;
  }
  return "";
}

// GET URL/ (URL is http://HOST:PORT[/...]) with a fresh connection. Returns false on any failure.
bool http_get(const std::string& base, int& status, std::string& body, std::string& error) {
  std::string rest = base;
  if (rest.rfind("http://", 0) != 0) {
    error = "not an http:// URL: " + base;
    return false;
  }
  rest = rest.substr(7);
  auto slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  auto colon = hostport.rfind(':');
  std::string host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  int port = colon == std::string::npos ? 80 : std::atoi(hostport.c_str() + colon + 1);
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::strerror(errno);
    return false;
  }
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host.c_str(), &a.sin_addr) != 1 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    error = "cannot connect to " + hostport + ": " + std::strerror(errno);
    ::close(fd);
    return false;
  }
  std::string req = "GET / HTTP/1.1\r\nHost: " + hostport + "\r\nConnection: close\r\n\r\n";
  if (!write_all(fd, req)) {
    error = "cannot send to " + hostport;
    ::close(fd);
    return false;
  }
  std::string in;
  char buf[4096];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    in.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  auto head_end = in.find("\r\n\r\n");
  if (in.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || in.size() < 12) {
    error = "bad answer from " + hostport;
    return false;
  }
  status = std::atoi(in.c_str() + 9);
  body = in.substr(head_end + 4);
  // A chunked answer (unlikely through the gateway for a Content-Length body) is not decoded.
  return true;
}

void serve_connection(int fd) {
  std::string buf;
  char chunk[8192];
  while (true) {
    // Read a request head.
    size_t head_end;
    while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
      if (buf.size() > 64 * 1024) {
        ::close(fd);
        return;
      }
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(fd);
        return;
      }
      buf.append(chunk, static_cast<size_t>(n));
    }
    std::string head = buf.substr(0, head_end);
    buf.erase(0, head_end + 4);
    auto line_end = head.find("\r\n");
    std::string request_line = head.substr(0, line_end);
    std::string method, target, version;
    {
      auto sp1 = request_line.find(' ');
      auto sp2 = sp1 == std::string::npos ? std::string::npos : request_line.find(' ', sp1 + 1);
      if (sp2 == std::string::npos) {
        write_all(fd, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        ::close(fd);
        return;
      }
      method = request_line.substr(0, sp1);
      target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
      version = request_line.substr(sp2 + 1);
    }
    // Headers we care about: Content-Length (a body to skip) and Connection.
    long content_length = 0;
    bool close_after = version == "HTTP/1.0";
    size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      size_t e = head.find("\r\n", pos);
      if (e == std::string::npos) e = head.size();
      std::string h = head.substr(pos, e - pos);
      pos = e + 2;
      auto colon = h.find(':');
      if (colon == std::string::npos) continue;
      std::string name = h.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = h.substr(colon + 1);
      while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
      for (auto& c : value) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (name == "content-length") content_length = std::strtol(value.c_str(), nullptr, 10);
      else if (name == "connection") {
        if (value.find("close") != std::string::npos) close_after = true;
        if (value.find("keep-alive") != std::string::npos) close_after = false;
      }
    }
    while (static_cast<long>(buf.size()) < content_length) {
      ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        ::close(fd);
        return;
      }
      buf.append(chunk, static_cast<size_t>(n));
    }
    buf.erase(0, static_cast<size_t>(content_length));

    std::string path = target, query;
    if (auto q = target.find('?'); q != std::string::npos) {
      path = target.substr(0, q);
      query = target.substr(q + 1);
    }
    int status = 200;
    std::string body, type = "application/json";
    const bool fail = env("FAIL") == "1";
    if (path == "/healthz") {
      type = "text/plain";
      if (healthy()) body = "ok";
      else {
        status = 500;
        body = "unhealthy";
      }
    } else if (path == "/") {
      status = fail ? 500 : 200;
      body = identity();
    } else if (path == "/env") {
      body = environment_json();
    } else if (path == "/slow") {
      long ms = std::strtol(query_param(query, "ms").c_str(), nullptr, 10);
      if (ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      status = fail ? 500 : 200;
      body = identity();
    } else if (path == "/call") {
      std::string var = query_param(query, "dep");
      for (auto& c : var) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      var += "_URL";
      std::string base = env(var.c_str());
      int st = 0;
      std::string got, error;
      if (base.empty()) {
        status = 502;
        body = "{\"error\": " + json_string("no " + var + " in the environment") + "}";
      } else if (!http_get(base, st, got, error)) {
        status = 502;
        body = "{\"error\": " + json_string(error) + "}";
      } else if (st != 200) {
        status = 502;
        body = "{\"error\": " + json_string(base + " answered " + std::to_string(st)) + ", \"body\": " + json_string(got) + "}";
      } else {
        body = "{\"via\": " + got + "}";
      }
    } else {
      status = 404;
      body = "{\"error\": \"not found\", \"path\": " + json_string(path) + "}";
    }
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\nContent-Type: " + type +
                      "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
                      (close_after ? "Connection: close\r\n" : "") + "\r\n";
    if (method != "HEAD") out += body;
    if (!write_all(fd, out) || close_after) {
      ::close(fd);
      return;
    }
  }
}

pid_t start_child(bool new_session) {
  pid_t p = ::fork();
  if (p == 0) {
    if (new_session) ::setsid();
    ::execlp("sleep", "sleep", "1000", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return p;
}

}  // namespace

int main() {
  ::signal(SIGPIPE, SIG_IGN);
  long port = env_long("PORT");
  if (port <= 0 || port > 65535) {
    std::fprintf(stderr, "test_service: PORT must be set to a port number\n");
    return 2;
  }
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(lfd, 512) != 0) {
    std::fprintf(stderr, "test_service: cannot listen on 127.0.0.1:%ld: %s\n", port, std::strerror(errno));
    return 1;
  }
  if (env("FORK_CHILDREN") == "1") {
    pid_t child = start_child(false);
    pid_t daemon = start_child(true);  // the same as `setsid sleep 1000`
    std::printf("children %d %d\n", static_cast<int>(child), static_cast<int>(daemon));
    std::fflush(stdout);
  }
  long crash_ms = env_long("CRASH_AFTER_MS");
  if (crash_ms > 0) {
    std::thread([crash_ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(crash_ms));
      std::fflush(stdout);
      std::fflush(stderr);
      ::_exit(3);
    }).detach();
  }
  std::printf("listening on %ld\n", port);
  std::fflush(stdout);
  std::fprintf(stderr, "started\n");
  std::fflush(stderr);
  while (true) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      std::fprintf(stderr, "test_service: accept: %s\n", std::strerror(errno));
      return 1;
    }
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread(serve_connection, fd).detach();
  }
}
