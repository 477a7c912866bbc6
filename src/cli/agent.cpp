// `flotilla agent`: the registry and health checkers, serving the Consul-compatible API.
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <set>

#include "cli/commands.h"
#include "gateway/admin.h"
#include "gateway/gateway.h"
#include "gateway/registry_feed.h"
#include "common/error.h"
#include "common/event_loop.h"
#include "common/log.h"
#include "common/metrics.h"
#include "health/runner.h"
#include "http/server.h"
#include "registry/api/api.h"
#include "registry/registry.h"
#include "registry/store/sqlite_store.h"
#include "supervisor/api.h"
#include "supervisor/output_echo.h"
#include "supervisor/spec.h"
#include "supervisor/supervisor.h"

namespace flotilla::cli {

namespace {


std::string hostname() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0 || !buf[0]) return "flotilla";
  std::string h = buf;
  if (auto dot = h.find('.'); dot != std::string::npos) h = h.substr(0, dot);
  return h;
}

// The file as the gateway of `flotilla up` takes it: every service others depend on gets a
// listener of its own (its <NAME>_URL), so a file with dependencies has a gateway even without a
// `gateway:` section (then with no public listener).
config::File gateway_file_of(const config::File& file) {
  config::File out = file;
  if (!out.gateway) {
    out.gateway = config::GatewaySection{};
    out.gateway->listen.clear();
  }
  out.gateway->service_listeners = supervisor::Supervisor::dependency_targets(file);
  return out;
}

}  // namespace

// Thousands of blocking queries, or of gateway connections, are thousands of sockets.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

int run_agent(const AgentOptions& o, const config::File* file) {
  const char* who = file ? "flotilla up" : "flotilla agent";
  // A closed stdout or stderr (`flotilla up | head`) must not end the agent and, through
  // PDEATHSIG, every service: writes to it fail with EPIPE instead. Sockets never raise it
  // (MSG_NOSIGNAL); the supervised services get every signal back at its default (exec_shim).
  ::signal(SIGPIPE, SIG_IGN);
  if (!init_logging(o.log_level)) {
    std::cerr << who << ": unknown --log-level \"" << o.log_level << "\" (trace, debug, info, warn, error)\n";
    return 2;
  }
  std::string api = o.api;
  if (api.rfind("http://", 0) == 0) api = api.substr(7);
  while (!api.empty() && api.back() == '/') api.pop_back();
  std::string host;
  uint16_t port;
  if (!http::split_host_port(api, host, port) || !http::is_ip_or_localhost(host)) {
    std::cerr << "flotilla agent: --api \"" << o.api
              << "\" must be an IP address (or localhost) and a port, such as 127.0.0.1:7700\n";
    return 2;
  }
  if (!http::is_loopback_host(host) && o.token.empty()) {
    std::cerr << "flotilla agent: refusing to serve the API on " << api
              << " without a token: anyone who can reach it could change the registry.\n"
                 "Pass --token SECRET (or FLOTILLA_TOKEN), or bind to 127.0.0.1.\n";
    return 2;
  }
  if (!o.advertise.empty() && (!http::is_ip_or_localhost(o.advertise) || o.advertise == "0.0.0.0" ||
                               o.advertise == "::" || o.advertise == "[::]")) {
    std::cerr << "flotilla agent: --advertise \"" << o.advertise
              << "\" must be an IP address, the one other hosts reach this one at, such as 10.0.0.5 (not "
                 "0.0.0.0 or ::)\n";
    return 2;
  }
  // The node's address: an instance registered without one is at this address (as in Consul).
  const std::string node_address = http::advertise_address(o.advertise.empty() ? host : o.advertise);
  EventLoop loop;
  metrics::Registry metrics;
  // Caught from the start (its default action ends the process): logrotate's postrotate may send
  // it while this starts. Handled once the gateway runs (it reopens the access log).
  boost::asio::signal_set usr1(loop.io(), SIGUSR1);
  // Listen first: a taken port must fail before anything is created on disk. Connections wait in
  // the backlog until the registry is ready and the server starts accepting.
  registry::api::Api* api_handler = nullptr;
  gateway::Gateway* gateway_ptr = nullptr;
  supervisor::Supervisor* supervisor_ptr = nullptr;
  supervisor::ApiHooks supervisor_hooks{o.token, o.protect_reads, {}, {}, {}};
  const std::string read_token = o.protect_reads ? o.token : std::string();
  http::Server server(loop, [&](const std::shared_ptr<http::Exchange>& ex) {
    if (gateway_ptr && gateway::serve_admin(*gateway_ptr, ex, read_token)) return;
    if (supervisor_ptr && supervisor::serve_api(*supervisor_ptr, supervisor_hooks, ex)) return;
    api_handler->handle(ex);
  });
  try {
    server.listen(api);
  } catch (const std::exception& e) {
    std::cerr << who << ": " << e.what() << (file ? " (agent.api in " + file->path + " picks another address)\n"
                                                 : std::string(" (--api picks another address)\n"));
    return 1;
  }
  // The gateway binds its listeners now too, so a taken port fails before anything is created.
  // Supervised services' dependents reach them through a gateway listener of their own
  // (<NAME>_URL), so a file with dependencies gets a gateway even without a `gateway:` section.
  std::unique_ptr<gateway::Gateway> gw;
  const auto targets = file ? supervisor::Supervisor::dependency_targets(*file) : std::vector<std::string>{};
  if (file && (file->gateway || !targets.empty())) {
    try {
      gw = std::make_unique<gateway::Gateway>(gateway_file_of(*file), metrics);  // opens the access log
    } catch (const std::exception& e) {
      std::cerr << who << ": " << e.what() << "\n";
      return 1;
    }
    try {
      gw->listen();
    } catch (const std::exception& e) {
      std::cerr << who << ": " << e.what() << " (gateway.listen in " << file->path << " picks another address)\n";
      return 1;
    }
  }

  std::error_code ec;
  std::filesystem::create_directories(o.data_dir, ec);
  if (ec) {
    std::cerr << "flotilla agent: cannot create data dir " << o.data_dir << ": " << ec.message() << "\n";
    return 1;
  }
  // One agent per data dir: a second one would write the same database behind the first's view.
  auto lock_path = (std::filesystem::path(o.data_dir) / "LOCK").string();
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::cerr << "flotilla agent: data dir " << o.data_dir
              << " is in use by another running agent (lock " << lock_path << ")\n";
    return 1;
  }
  raise_fd_limit();
  // `flotilla up -d` and `flotilla down` find the agent by its pid file.
  const auto pid_path = (std::filesystem::path(o.data_dir) / "flotilla.pid").string();
  if (file) {
    if (FILE* f = std::fopen(pid_path.c_str(), "w")) {
      // The API address too: `flotilla up`/`down` with a file whose agent.api changed since find
      // the running agent by its data dir.
      std::fprintf(f, "%d %s\n", static_cast<int>(::getpid()), o.api.c_str());
      std::fclose(f);
    }
  }

  try {
    store::SqliteStore store({(std::filesystem::path(o.data_dir) / "registry.db").string(), 1024, &metrics}, loop);
    registry::Registry registry(loop, store,
                                registry::Identity{o.node.empty() ? hostname() : o.node, o.datacenter, node_address},
                                metrics);
    registry.start();
    health::Runner health(loop, registry, metrics);
    health.start();
    registry::api::Api api_impl(registry, health, metrics,
                                {o.token, o.protect_reads, kVersion, store.describe(), api});
    api_handler = &api_impl;
    std::unique_ptr<gateway::LocalRegistryFeed> feed;
    if (gw) {
      feed = std::make_unique<gateway::LocalRegistryFeed>(registry, *gw);
      feed->start();
      gw->start();
      gateway_ptr = gw.get();
    }
    // `flotilla up` always has a supervisor, even for an application of the gateway alone: it
    // answers status, apply (`flotilla up` again) and down.
    std::unique_ptr<supervisor::Supervisor> sup;
    if (file) {
      for (const auto& w : config::warnings(*file)) spdlog::warn("{}", w);
      supervisor::Options so;
      so.data_dir = o.data_dir;
      if (o.attach) {
        const char* no_color = std::getenv("NO_COLOR");
        so.echo = std::make_shared<supervisor::OutputEcho>(STDOUT_FILENO, isatty(STDOUT_FILENO) && !(no_color && *no_color));
      }
      sup = std::make_unique<supervisor::Supervisor>(loop, registry, store, gw.get(), metrics, so);
      sup->start(*file);
      supervisor_ptr = sup.get();
    }
    // Everything stops in order: services drained and stopped (dependents first), then the
    // gateway (requests in flight finish), then the API.
    bool stopping = false;
    Timer stop_deadline(loop);
    // The last writes asked for (the deregistrations of stopped instances) reach the store
    // before the loop ends, for at most 2 s.
    Timer settle(loop);
    std::function<void(std::chrono::steady_clock::time_point)> stop_when_settled =
        [&](std::chrono::steady_clock::time_point until) {
          if (registry.idle() || std::chrono::steady_clock::now() >= until) return loop.stop();
          settle.arm(std::chrono::milliseconds(5), [&, until] { stop_when_settled(until); });
        };
    bool finishing = false;
    auto finish = [&](bool now = false) {
      if (now) return loop.stop();
      if (finishing) return;  // already settling (the deadline and stop_all may both finish)
      finishing = true;
      if (gw) gw->stop();
      server.stop();
      stop_when_settled(std::chrono::steady_clock::now() + std::chrono::seconds(2));
    };
    auto stop_everything = [&](bool forget) {
      if (stopping) return;
      stopping = true;
      if (!sup) return finish();
      Duration longest{0};
      for (const auto& s : file->services) longest = std::max(longest, s.stop_grace_period);
      // Draining and stopping take at most two grace periods per level of dependencies.
      stop_deadline.arm(longest * 2 * static_cast<int64_t>(file->services.size()) + std::chrono::seconds(5), [&] {
        spdlog::warn("services did not stop in time; exiting (their shims kill what is left)");
        finish();
      });
      sup->stop_all(forget, [&] { finish(); });
    };
    // `flotilla up` again: the services are the supervisor's, routes the gateway's. The endpoints
    // of newly routed services are set before any route sends to them.
    // Adding or removing the `gateway:` section (or the only gateway, of a file without one)
    // needs a restart: the running routes stay.
    // A service that became a dependency gets its own listener now, before any instance is
    // started with its <NAME>_URL (its route comes with on_apply).
    supervisor_hooks.before_apply = [&](const config::File& next) {
      if (!gw || file->gateway.has_value() != next.gateway.has_value()) return;
      for (const auto& t : supervisor::Supervisor::dependency_targets(next)) {
        if (gw->service_port(t)) continue;
        try {
          spdlog::info("gateway: {} at http://127.0.0.1:{} ({})", t, gw->add_service_listener(t),
                       supervisor::url_variable(t));
        } catch (const std::exception& e) {
          throw ApiError(500, std::string("cannot open the listener behind ") + supervisor::url_variable(t) + ": " +
                                  e.what());
        }
      }
    };
    supervisor_hooks.on_apply = [&](const config::File& next) -> nlohmann::json {
      if (!gw || file->gateway.has_value() != next.gateway.has_value()) {
        if (gw || next.gateway || !supervisor::Supervisor::dependency_targets(next).empty())
          return {{"RestartNeeded", {"gateway"}}};
        return nullptr;
      }
      config::File gateway_file = gateway_file_of(next);
      std::set<std::string> both = gateway::Gateway::services_of(gateway_file);
      for (const auto& s : gw->services()) both.insert(s);
      feed->follow(both);
      gateway::GatewayChange change = gw->reconfigure(std::move(gateway_file));
      feed->follow(gw->services());
      spdlog::info("gateway: applied {}: {}", next.path, change.summary());
      return change.to_json();
    };
    supervisor_hooks.on_down = [&] {
      // Let the answer reach the client before the API closes.
      auto t = std::make_shared<Timer>(loop);
      t->arm(std::chrono::milliseconds(100), [t, &stop_everything] { stop_everything(true); });
    };
    server.start();
    metrics.gauge_callback("flotilla_api_connections", "Open connections to the agent API.", {},
                           [&server] { return static_cast<double>(server.connections()); });

    boost::asio::signal_set signals(loop.io(), SIGINT, SIGTERM);
    std::function<void(const boost::system::error_code&, int)> on_signal = [&](const boost::system::error_code& e, int sig) {
      if (e) return;
      // A Ctrl-C in a terminal reaches the agent and the script that started it, which may pass a
      // SIGTERM on at once: a second signal within a second is the same request.
      static std::chrono::steady_clock::time_point first;
      if (stopping && std::chrono::steady_clock::now() - first < std::chrono::seconds(1)) {
        signals.async_wait(on_signal);
        return;
      }
      if (!stopping) first = std::chrono::steady_clock::now();
      if (stopping) {
        spdlog::warn("received {} again: stopping now", sig == SIGINT ? "SIGINT" : "SIGTERM");
        finish(true);
        return;
      }
      spdlog::info("received {}, stopping{}", sig == SIGINT ? "SIGINT" : "SIGTERM",
                   sup ? " services (again to stop at once)" : "");
      signals.async_wait(on_signal);
      stop_everything(false);
    };
    signals.async_wait(on_signal);
    // SIGHUP to `flotilla up`: with a controlling terminal (in the foreground), the terminal went
    // away, so stop as on SIGTERM. Without one (`flotilla up -d`, systemd), apply the file again
    // as `flotilla up` again would (nginx's reload; systemd's ExecReload=kill -HUP $MAINPID).
    // SIGUSR1 reopens the gateway's access log (nginx's `-s reopen`, logrotate's postrotate).
    std::function<void(const boost::system::error_code&, int)> on_usr1 = [&](const boost::system::error_code& e, int) {
      if (e) return;
      usr1.async_wait(on_usr1);
      if (gw) gw->reopen_logs();
    };
    usr1.async_wait(on_usr1);
    boost::asio::signal_set hup(loop.io());
    std::function<void(const boost::system::error_code&, int)> on_hup;
    if (file) {
      const int tty = ::open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC);
      const bool has_terminal = tty >= 0;
      if (tty >= 0) ::close(tty);
      hup.add(SIGHUP);
      on_hup = [&, has_terminal](const boost::system::error_code& e, int) {
        if (e) return;
        hup.async_wait(on_hup);
        if (stopping) return;
        if (has_terminal) {
          spdlog::info("received SIGHUP (the terminal went away), stopping");
          stop_everything(false);
          return;
        }
        spdlog::info("received SIGHUP, applying {}", file->path);
        config::File next;
        try {
          next = config::load_file(file->path);
        } catch (const config::ConfigError& err) {
          spdlog::error("reload: {}; keeping the running configuration", err.what());
          return;
        }
        try {
          nlohmann::json a = supervisor::apply_file(*sup, supervisor_hooks, next);
          auto list = [](const nlohmann::json& v) {
            std::string out;
            for (const auto& x : v) out += (out.empty() ? "" : ", ") + x.get<std::string>();
            return out.empty() ? std::string("-") : out;
          };
          spdlog::info("applied {}: services added: {}; changed: {}; settings: {}; removed: {}; re-run: {}", file->path,
                       list(a["Added"]), list(a["Changed"]), list(a["Reconfigured"]), list(a["Removed"]),
                       list(a["Rerun"]));
          if (a.contains("Gateway") && !a["Gateway"].contains("Routes"))
            spdlog::warn("gateway: adding or removing the gateway needs a restart; the running one stays as it is");
        } catch (const std::exception& err) {
          spdlog::error("reload: {}; keeping the running configuration", err.what());
        }
      };
      hup.async_wait(on_hup);
    }
    spdlog::info("flotilla agent {} serving http://{}:{} (node {} at {}{}, store {}, index {})", kVersion,
                 host.find(':') != std::string::npos ? "[" + host + "]" : host, server.port(),
                 registry.state().node().name, node_address,
                 !o.advertise.empty()               ? " (--advertise)"
                 : host == "0.0.0.0" || host == "::" ? ", this host's address on its default route (--advertise sets another)"
                                                     : "",
                 store.describe(), registry.state().revision());
    if (http::is_loopback_host(node_address) && !http::is_loopback_host(host))
      spdlog::warn("the node's address is {}, a loopback address, while the API listens on {}: gateways on other "
                   "hosts cannot reach instances registered without an Address (--advertise IP sets it)",
                   node_address, host);
    if (gw)
      spdlog::info("gateway listening on {} with {} worker(s), {} route(s)", gw->status()["Listen"].dump(),
                   gw->workers(), file->gateway ? file->gateway->routes.size() : 0);
    if (gw)
      for (const auto& t : targets) spdlog::info("gateway: {} at http://127.0.0.1:{} ({})", t, gw->service_port(t), supervisor::url_variable(t));
    // A handler that throws is a bug, but it must not take the registry down with it: log and
    // keep serving (loop.stop() ends run() normally).
    while (true) {
      try {
        loop.run();
        break;
      } catch (const std::exception& e) {
        spdlog::error("unexpected error in a handler (the agent keeps running): {}", e.what());
      }
    }
    api_handler = nullptr;
    gateway_ptr = nullptr;
    supervisor_ptr = nullptr;
    sup.reset();
    feed.reset();
    if (gw) gw->stop(std::chrono::milliseconds(0));
    server.stop();
    store.stop();  // finishes queued writes
    if (file) std::filesystem::remove(pid_path, ec);
    spdlog::info("stopped");
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
    return 1;
  }
  return 0;
}


std::function<int()> add_agent(CLI::App& app) {
  auto o = std::make_shared<AgentOptions>();
  auto* cmd = app.add_subcommand("agent", "Run the registry and health checks (Consul-compatible HTTP API)");
  cmd->footer(
      "Runs in the foreground and logs to stderr. Existing Consul clients work unchanged: point\n"
      "them at --api. Stops cleanly on SIGINT or SIGTERM; every acknowledged write is on disk.\n\n"
      "Example: flotilla agent --data-dir /var/lib/flotilla\n"
      "         curl -X PUT -d '{\"Name\":\"web\",\"Port\":8080}' localhost:7700/v1/agent/service/register");
  cmd->add_option("--api", o->api, "Address of the HTTP API (HOST:PORT)")->capture_default_str();
  cmd->add_option("--data-dir", o->data_dir, "Directory for the registry's database")->capture_default_str();
  cmd->add_option("--token", o->token, "Secret that writes must present (X-Consul-Token); required off loopback")
      ->envname("FLOTILLA_TOKEN");
  cmd->add_flag("--protect-reads", o->protect_reads, "With --token: reads need the token too");
  cmd->add_option("--node", o->node, "Node name (default: the host name)");
  cmd->add_option("--advertise", o->advertise,
                  "The node's address, for instances registered without one (default: the --api host; "
                  "for 0.0.0.0, this host's address on its default route)");
  cmd->add_option("--datacenter", o->datacenter, "Datacenter name")->capture_default_str();
  cmd->add_option("--log-level", o->log_level, "trace, debug, info, warn or error")->capture_default_str();
  return [o] { return run_agent(*o, nullptr); };
}

}  // namespace flotilla::cli
