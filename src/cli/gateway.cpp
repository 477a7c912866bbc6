// `flotilla gateway`: the data plane alone, following a remote registry through blocking queries.
// Any number of gateways can follow one agent.
#include <CLI/CLI.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <iostream>
#include <optional>
#include <set>

#include "cli/commands.h"
#include "common/event_loop.h"
#include "common/log.h"
#include "common/metrics.h"
#include "config/flotilla_file.h"
#include "gateway/admin.h"
#include "gateway/gateway.h"
#include "gateway/registry_feed.h"
#include "http/address.h"
#include "http/server.h"

namespace flotilla::cli {

std::string registry_of_api(const std::string& api) {
  // An agent listening on every address is reached on this host.
  std::string host, out = api;
  uint16_t port = 0;
  if (http::split_host_port(api, host, port) && (host == "0.0.0.0" || host == "::"))
    out = (host == "::" ? "[::1]:" : "127.0.0.1:") + std::to_string(port);
  return "http://" + out;
}

RegistryChoice gateway_registry(const config::File& file, const std::string& file_name, bool file_given) {
  const char* env = std::getenv("FLOTILLA_API");
  const bool env_set = env && *env;
  if (file.agent.api_set && (file_given || !env_set)) return {registry_of_api(file.agent.api), "agent.api of " + file_name};
  if (env_set)
    return {std::string(env).find("://") != std::string::npos ? env : "http://" + std::string(env), "$FLOTILLA_API"};
  return {"http://127.0.0.1:7700", "default"};
}

namespace {
struct GatewayOptions {
  std::string file = "flotilla.yaml";
  std::string registry;  // empty: chosen in run_gateway, in the CLI's order for --api
  bool file_given = false;  // -f on the command line (not the default flotilla.yaml)
  std::string admin;
  std::string token;
  std::string log_level = "info";
};

int run_gateway(const GatewayOptions& o) {
  if (!init_logging(o.log_level)) {
    std::cerr << "flotilla gateway: unknown --log-level \"" << o.log_level << "\"\n";
    return 2;
  }
  config::File file;
  try {
    file = config::load_file(o.file, config::Use::gateway_alone);
  } catch (const config::ConfigError& e) {
    std::cerr << "flotilla gateway: " << e.what() << "\n";
    return 2;
  }
  if (!file.gateway) {
    std::cerr << "flotilla gateway: " << o.file << " has no `gateway:` section (listen and routes)\n";
    return 2;
  }
  for (const auto& w : config::warnings(file)) spdlog::warn("{}", w);
  std::string registry = o.registry, registry_from;
  if (registry.empty()) {
    auto choice = gateway_registry(file, o.file, o.file_given);
    registry = choice.url;
    registry_from = " (" + choice.from + ")";
  }
  // Said before anything is opened (the access log, its directory).
  std::string admin_address = o.admin.rfind("http://", 0) == 0 ? o.admin.substr(7) : o.admin;
  if (!admin_address.empty()) {
    std::string host;
    uint16_t port = 0;
    if (!http::split_host_port(admin_address, host, port) || !http::is_ip_or_localhost(host)) {
      std::cerr << "flotilla gateway: --admin must be an IP address (or localhost) and a port, such as 127.0.0.1:9901 "
                   "(got \""
                << o.admin << "\")\n";
      return 2;
    }
  }
  raise_fd_limit();
  EventLoop loop;
  metrics::Registry metrics;
  // Caught from the start (its default action ends the process): logrotate's postrotate may send
  // it while this starts. Handled once the gateway runs (it reopens the access log).
  boost::asio::signal_set usr1(loop.io(), SIGUSR1);
  std::unique_ptr<gateway::Gateway> gw_owner;
  try {
    gw_owner = std::make_unique<gateway::Gateway>(file, metrics);  // opens the access log
  } catch (const std::exception& e) {
    std::cerr << "flotilla gateway: " << e.what() << "\n";
    return 1;
  }
  gateway::Gateway& gw = *gw_owner;
  std::unique_ptr<gateway::RemoteRegistryFeed> feed;
  try {
    feed = std::make_unique<gateway::RemoteRegistryFeed>(loop, registry, o.token, gw);
    feed->register_metrics(metrics);
  } catch (const std::exception& e) {
    std::cerr << "flotilla gateway: " << e.what() << "\n";
    return 2;
  }
  try {
    gw.listen();
  } catch (const std::exception& e) {
    std::cerr << "flotilla gateway: " << e.what() << " (gateway.listen in " << o.file << " picks another address)\n";
    return 1;
  }
  std::unique_ptr<http::Server> admin;
  if (!admin_address.empty()) {
    const std::string& a = admin_address;
    admin = std::make_unique<http::Server>(loop, [&gw, &metrics](const std::shared_ptr<http::Exchange>& ex) {
      if (gateway::serve_admin(gw, ex)) return;
      const auto& req = ex->request();
      if (req.path == "/metrics") {
        http::Response r;
        r.content_type = "text/plain; version=0.0.4";
        r.body = metrics.render();
        ex->respond(std::move(r));
        return;
      }
      ex->respond(http::Response::error(404, "unknown path; try /metrics or /v1/flotilla/gateway"));
    });
    try {
      admin->listen(a);
      admin->start();
    } catch (const std::exception& e) {
      std::cerr << "flotilla gateway: " << e.what() << " (--admin)\n";
      return 1;
    }
  }
  // Registered before the first sync: a SIGHUP meanwhile waits for the handler below, and a
  // SIGINT or SIGTERM stops the gateway cleanly even before it serves.
  boost::asio::signal_set hup(loop.io(), SIGHUP);
  boost::asio::signal_set signals(loop.io(), SIGINT, SIGTERM);
  bool stopping = false;
  signals.async_wait([&](const boost::system::error_code& e, int sig) {
    if (e) return;
    spdlog::info("received {}, stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    stopping = true;
    gw.stop();
    if (admin) admin->stop();
    loop.stop();
  });
  feed->start();
  // Route nothing before every service's endpoints are known (or 5 s passed: the registry may be down).
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  Timer tick(loop);
  std::function<void()> poll = [&] {
    if (!feed->synced() && std::chrono::steady_clock::now() < until) tick.arm(std::chrono::milliseconds(10), poll);
  };
  poll();
  loop.run_until([&] { return stopping || feed->synced() || std::chrono::steady_clock::now() >= until; });
  if (stopping) {
    feed.reset();
    spdlog::info("stopped");
    return 0;
  }
  gw.start();
  if (auto waiting = feed->unsynced(); !waiting.empty()) {
    std::string list;
    for (const auto& s : waiting) list += (list.empty() ? "" : ", ") + s;
    spdlog::warn("gateway: the registry at {} gave no endpoints for {} within 5 s (no answer yet, or an error "
                 "logged above); serving anyway: their routes answer 503 until it does",
                 registry, list);
  }
  spdlog::info("flotilla gateway {} listening on {} with {} worker(s), following {}{}", kVersion,
               gw.status()["Listen"].dump(), gw.workers(), registry + registry_from,
               admin ? "; admin (/metrics, /v1/flotilla/gateway) on " +
                           admin_address.substr(0, admin_address.rfind(':') + 1) + std::to_string(admin->port())
                     : std::string());
  // SIGHUP reloads the file (as nginx does): routes and the services' gateway keys change
  // without closing a connection. Newly routed services are followed first, and the new routes
  // take effect once their endpoints are known (or after 5 s, if the registry does not answer).
  std::optional<config::File> pending;
  std::set<std::string> pending_new;  // services the pending file routes to and the running one does not
  std::chrono::steady_clock::time_point pending_until;
  Timer reload_tick(loop);
  std::function<void()> switch_when_synced = [&] {
    if (!pending) return;
    const bool synced = feed->synced(pending_new);
    if (!synced && std::chrono::steady_clock::now() < pending_until) {
      reload_tick.arm(std::chrono::milliseconds(10), switch_when_synced);
      return;
    }
    if (!synced) spdlog::warn("gateway: reload: the registry has not answered for every new service yet; switching anyway");
    gateway::GatewayChange change = gw.reconfigure(std::move(*pending));
    pending.reset();
    feed->follow(gw.services());
    spdlog::info("gateway: reloaded {}: {}", o.file, change.summary());
  };
  std::function<void(const boost::system::error_code&, int)> on_hup = [&](const boost::system::error_code& e, int) {
    if (e) return;
    hup.async_wait(on_hup);
    spdlog::info("gateway: received SIGHUP, reloading {}", o.file);
    config::File next;
    try {
      next = config::load_file(o.file, config::Use::gateway_alone);
    } catch (const config::ConfigError& err) {
      // An earlier reload that waits for the registry still takes effect: say so, not only
      // "keeping", which the switch a few seconds later would contradict.
      spdlog::error("gateway: reload: {}; keeping the running configuration{}", err.what(),
                    pending ? " (the file read at the previous SIGHUP still takes effect once the registry answers "
                              "for its new services)"
                            : "");
      return;
    }
    if (!next.gateway) {
      spdlog::error("gateway: reload: {} has no `gateway:` section; keeping the running configuration{}", o.file,
                    pending ? " (the file read at the previous SIGHUP still takes effect once the registry answers "
                              "for its new services)"
                            : "");
      return;
    }
    for (const auto& w : config::warnings(next)) spdlog::warn("{}", w);
    const std::set<std::string> running = gw.services();
    std::set<std::string> both = running;
    pending_new.clear();
    for (const auto& s : gateway::Gateway::services_of(next))
      if (both.insert(s).second) pending_new.insert(s);
    const bool waiting = pending.has_value();
    pending = std::move(next);  // the latest file wins, within the first one's 5 s
    if (!waiting) pending_until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    feed->follow(both);
    if (!waiting) switch_when_synced();
  };
  hup.async_wait(on_hup);
  // SIGUSR1 reopens the access log (nginx's `-s reopen`, what logrotate's postrotate sends).
  std::function<void(const boost::system::error_code&, int)> on_usr1 = [&](const boost::system::error_code& e, int) {
    if (e) return;
    usr1.async_wait(on_usr1);
    gw.reopen_logs();
  };
  usr1.async_wait(on_usr1);
  loop.run();
  feed.reset();
  spdlog::info("stopped");  // as flotilla up's last line
  return 0;
}
}  // namespace

std::function<int()> add_gateway(CLI::App& app) {
  auto o = std::make_shared<GatewayOptions>();
  auto* cmd = app.add_subcommand("gateway", "Run the gateway alone, following a remote registry");
  cmd->footer(
      "Reads the `gateway:` and `services:` sections of the file and follows the endpoints of the\n"
      "routed services at --registry with blocking queries. SIGHUP reloads the file (routes and\n"
      "services change without closing connections). Stops cleanly on SIGINT or SIGTERM.\n\n"
      "Example: flotilla gateway -f flotilla.yaml --registry http://10.0.0.5:7700 --admin 127.0.0.1:9901");
  auto* file_option = cmd->add_option("-f,--file", o->file, "The application's file")->capture_default_str();
  cmd->add_option("--registry", o->registry,
                  "The agent to follow, http://HOST:PORT (default: agent.api of the -f file, else $FLOTILLA_API, "
                  "else agent.api of ./flotilla.yaml when there is no -f, else http://127.0.0.1:7700)");
  cmd->add_option("--admin", o->admin, "Serve /metrics and /v1/flotilla/gateway on HOST:PORT");
  cmd->add_option("--token", o->token, "Token for the registry's API (X-Consul-Token)")->envname("FLOTILLA_TOKEN");
  cmd->add_option("--log-level", o->log_level, "trace, debug, info, warn or error")->capture_default_str();
  return [o, file_option] {
    o->file_given = file_option->count() > 0;
    return run_gateway(*o);
  };
}

}  // namespace flotilla::cli
