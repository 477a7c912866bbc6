// `flotilla config check [-f FILE]`: validates flotilla.yaml without starting anything.
#include <CLI/CLI.hpp>

#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/target.h"
#include "common/duration.h"
#include "config/flotilla_file.h"

namespace flotilla::cli {

namespace {

std::string join_words(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& e : v) out += (out.empty() ? "" : sep) + e;
  return out;
}

std::string plain_number(double v) {
  std::ostringstream o;
  o << std::setprecision(15) << v;  // 1234567.5, not 1.23457e+06
  return o.str();
}

// One route as understood: what it matches, where it sends, and every setting it has.
std::string describe_route(const config::Route& r) {
  const auto& m = r.match;
  std::string what = !m.path.empty() ? "path " + m.path : !m.path_prefix.empty() ? "prefix " + m.path_prefix : "any path";
  if (!m.host.empty()) what = "host " + m.host + ", " + what;
  if (!m.methods.empty()) what += ", methods " + join_words(m.methods, " ");
  for (const auto& [name, value] : m.headers) what += ", header " + name + ": " + value;
  std::vector<std::string> opts{"timeout " + format_duration(r.timeout)};
  if (r.idle_timeout) opts.push_back("streams may stall " + format_duration(*r.idle_timeout));
  if (r.strip_prefix) opts.push_back("strip prefix");
  if (r.max_body_bytes) opts.push_back("max body " + std::to_string(r.max_body_bytes) + " bytes");
  if (r.retry) {
    std::string t = "retry " + std::to_string(r.retry->attempts) + " tries on " + join_words(r.retry->on, " ");
    if (r.retry->per_try_timeout.count()) t += ", " + format_duration(r.retry->per_try_timeout) + " each";
    opts.push_back(t);
  }
  if (r.rate_limit) {
    double burst = r.rate_limit->burst > 0 ? r.rate_limit->burst : r.rate_limit->requests_per_second;
    opts.push_back("rate limit " + plain_number(r.rate_limit->requests_per_second) + "/s burst " + plain_number(burst) + " per " +
                   r.rate_limit->key);
  }
  if (!r.abort_on_client_close) opts.push_back("a client's close waits for the answer");
  return (r.name.empty() ? "" : r.name + ": ") + what + " -> " + r.service + " (" + join_words(opts, ", ") + ")";
}

// A service's gateway settings that differ from the defaults ("" when none do).
std::string describe_gateway_settings(const config::ServiceSection& s) {
  const config::ServiceSection d;
  std::vector<std::string> out;
  if (s.load_balancer != d.load_balancer || !s.hash_on.empty())
    out.push_back(s.load_balancer + (s.hash_on.empty() ? "" : " on " + s.hash_on));
  const auto& cb = s.circuit_breaker;
  if (!(cb == d.circuit_breaker))
    out.push_back("circuit breaker: " + std::to_string(cb.max_connections) + " connections, " +
                  std::to_string(cb.max_pending_requests) + " pending, " + std::to_string(cb.max_requests) + " requests");
  const auto& od = s.outlier_detection;
  if (!(od == d.outlier_detection))
    out.push_back(od.consecutive_failures == 0
                      ? std::string("outlier detection off")
                      : "ejected after " + std::to_string(od.consecutive_failures) + " failures for " +
                            format_duration(od.base_ejection_time) + " (at most " + format_duration(od.max_ejection_time) +
                            ", " + std::to_string(od.max_ejection_percent) + "% of instances)");
  return join_words(out, "; ");
}

}  // namespace

std::function<int()> add_config(CLI::App& app) {
  auto file = std::make_shared<std::string>("flotilla.yaml");
  auto* cmd = app.add_subcommand("config", "Work with flotilla.yaml");
  cmd->require_subcommand(1);
  auto* check = cmd->add_subcommand("check", "Validate a flotilla.yaml without starting anything");
  check->add_option("-f,--file", *file, "The file")->capture_default_str();
  auto gateway_alone = std::make_shared<bool>(false);
  check->add_flag("--gateway", *gateway_alone,
                  "Check it as `flotilla gateway` reads it: no agent.api beside the listeners, no supervisor files");
  check->footer("Exit status 0 when the file is valid; otherwise one line FILE:LINE:COL: what is wrong.");
  return [file, check, gateway_alone]() -> int {
    if (!check->parsed()) return 2;
    try {
      if (*file == "flotilla.yaml")  // the default: here or in a parent directory
        if (std::string found = find_app_file(); !found.empty()) *file = found;
      auto f = config::load_file(*file, *gateway_alone ? config::Use::gateway_alone : config::Use::agent);
      if (*gateway_alone && !f.gateway) {
        std::cerr << *file << ": no `gateway:` section (listen and routes), which `flotilla gateway` needs\n";
        return 1;
      }
      std::cout << *file << ": ok" << (*gateway_alone ? " (as flotilla gateway reads it)" : "") << "\n"
                << "  name:    " << f.name << "\n";
      if (*gateway_alone) {
        const auto choice = gateway_registry(f, *file, check->get_option("--file")->count() > 0);
        std::cout << "  registry: " << choice.url << " (" << choice.from << ") unless --registry says another\n";
      } else {
        std::cout << "  agent:   api " << f.agent.api << ", data dir " << f.agent.data_dir << ", store " << f.agent.store
                  << "\n";
      }
      if (f.gateway) {
        std::cout << "  gateway: listen";
        for (const auto& l : f.gateway->listen) std::cout << " " << l;
        std::cout << ", workers " << (f.gateway->workers ? std::to_string(f.gateway->workers) : "auto") << ", "
                  << f.gateway->routes.size() << " route(s)\n";
        if (!f.gateway->trusted_proxies.empty()) {
          std::cout << "    trusted proxies (X-Forwarded-For/-Proto believed from):";
          for (const auto& t : f.gateway->trusted_proxies) std::cout << " " << t;
          std::cout << "\n";
        }
        for (const auto& r : f.gateway->routes) std::cout << "    line " << r.line << ": " << describe_route(r) << "\n";
      }
      for (const auto& sv : f.services) {
        std::string g = describe_gateway_settings(sv);
        if (!g.empty()) std::cout << "  service " << sv.name << " at the gateway: " << g << "\n";
      }
      auto order = f.start_order();
      if (!order.empty()) std::cout << "  services run by flotilla, in start-up order:\n";
      for (const auto* s : order) {
        std::string cmd;
        for (const auto& a : s->command) cmd += (cmd.empty() ? "" : " ") + a;
        std::string port = s->port_mode == config::ServiceSection::PortMode::automatic ? "auto"
                           : s->port_mode == config::ServiceSection::PortMode::none  ? "none"
                                                                                     : std::to_string(s->port);
        std::cout << "    " << s->name << ": " << cmd << " (replicas " << s->replicas;
        if (s->autoscale)
          std::cout << ", autoscale " << s->autoscale->min << ".." << s->autoscale->max << " on " << s->autoscale->metric;
        std::cout << ", port " << port << ", restart " << s->restart << ")";
        if (!s->depends_on.empty()) {
          std::cout << " after";
          for (const auto& d : s->depends_on) {
            std::cout << " " << d.service;
            if (d.condition == "service_healthy") std::cout << " (healthy)";
            if (d.condition == "service_completed_successfully") std::cout << " (completed)";
          }
        }
        std::cout << "\n";
      }
      for (const auto& w : config::warnings(f)) std::cerr << "warning: " << w << "\n";
      return 0;
    } catch (const config::ConfigError& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  };
}

}  // namespace flotilla::cli
