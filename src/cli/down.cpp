// `flotilla down`: stops every supervised service (dependents first, each drained), then the agent
// that `flotilla up` started, and forgets runtime changes (scale, deploys, canaries).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <signal.h>

#include <cerrno>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/target.h"
#include "common/duration.h"
#include "config/flotilla_file.h"

namespace flotilla::cli {

namespace {

using namespace std::chrono_literals;

struct DownOptions {
  Target target;
  bool keep = false;
};

// Stopping takes up to stop_grace_period per service in dependency order; far below this.
constexpr std::chrono::milliseconds kStopTimeout = 1h;
constexpr std::chrono::milliseconds kExitWait = 10s;

// The agent that runs on the data dir of the file the options name, when it listens somewhere
// else than `address` (the file's agent.api changed since it started).
std::optional<DataDirAgent> moved_agent(const Target& target, const std::string& address) {
  const std::string path = app_file_of(target);
  if (path.empty()) return std::nullopt;
  try {
    auto running = running_agent_of(config::load_file(path).agent.data_dir);
    if (running && !running->api.empty() && running->api != address) return running;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// Exited: no such process, or a zombie its parent has not reaped yet.
bool process_gone(int pid) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return true;
  auto close = line.rfind(')');  // the state follows the command name, which may hold spaces
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

int run(const DownOptions& o) {
  auto client = make_client(o.target);
  ApiResponse r;
  try {
    r = client.request("GET", "/v1/flotilla/status", {}, 10s);
  } catch (const AgentUnreachable& e) {
    // As `docker compose down`: nothing running is nothing to stop, not a failure. A name that
    // does not resolve or an address that does not answer at all may be a typo: say so.
    if (!e.refused()) return fail("down", e.what());
    auto moved = moved_agent(o.target, client.address());
    if (!moved) {
      std::cout << "nothing to stop: no agent at " << client.address() << "\n";
      return 0;
    }
    std::cout << "no agent at " << client.address() << ", but the application's data dir is in use by agent pid "
              << moved->pid << " at " << moved->api << " (the file's agent.api changed since it started): stopping it there"
              << std::endl;
    client = ApiClient(moved->api, o.target.token);
    r = client.request("GET", "/v1/flotilla/status", {}, 10s);
  }
  if (runs_no_application(r))
    return fail("down", "the agent at " + client.address() +
                            " runs no application (started with flotilla agent, not flotilla up): stop it with "
                            "Ctrl-C or SIGTERM");
  auto status = json_of(r);
  // The agent's process, when this is the application of a file here: waited for below, so the
  // next `flotilla up` finds its ports (the gateway's too) and its data dir free.
  std::optional<DataDirAgent> process;
  if (const std::string path = app_file_of(o.target); !path.empty()) {
    try {
      process = running_agent_of(config::load_file(path).agent.data_dir);
    } catch (const std::exception&) {
    }
  }
  std::cout << "stopping " << status.value("Name", std::string("the application")) << "…" << std::endl;
  json_of(client.request("POST", o.keep ? "/v1/flotilla/down?keep" : "/v1/flotilla/down", {}, kStopTimeout));
  std::cout << "stopped" << std::endl;

  // The agent exits after answering: wait until it no longer does, so that the next
  // `flotilla up` finds its address free.
  const auto deadline = std::chrono::steady_clock::now() + kExitWait;
  while (std::chrono::steady_clock::now() < deadline) {
    try {
      client.request("GET", "/v1/flotilla/status", {}, 1s);
    } catch (const AgentUnreachable&) {
      if (!process) return 0;
      while (std::chrono::steady_clock::now() < deadline) {
        if (process_gone(process->pid)) return 0;
        std::this_thread::sleep_for(20ms);
      }
      return fail("down", "everything stopped, but the agent (pid " + std::to_string(process->pid) +
                              ") has not exited after " + format_duration(kExitWait));
    } catch (const std::exception&) {
      // Cut off while it exits: the next try tells.
    }
    std::this_thread::sleep_for(100ms);
  }
  return fail("down", "everything stopped, but the agent at " + client.address() + " still answers after " +
                          format_duration(kExitWait));
}

}  // namespace

std::function<int()> add_down(CLI::App& app) {
  auto o = std::make_shared<DownOptions>();
  auto* cmd = app.add_subcommand("down", "Stop the application: every service, then its agent");
  cmd->footer(
      "Services stop dependents first; each instance is drained (no new requests, those in flight\n"
      "finish) before its stop_signal, and killed after stop_grace_period. Runtime changes (scale,\n"
      "deploys, canaries) are forgotten: the next flotilla up starts from flotilla.yaml; with\n"
      "--keep they stay, and the next flotilla up restores them (a restart of the agent). Returns\n"
      "once the agent has exited; with no agent at the address there is nothing to stop (exit 0).\n\n"
      "Example: flotilla down -f flotilla.yaml\n"
      "         flotilla down --keep && flotilla up -d     # restart the agent, keeping scale and deploys");
  add_target_options(cmd, o->target);
  cmd->add_flag("--keep", o->keep, "Keep runtime changes (scale, deploys, canaries) for the next flotilla up");
  return [o] { return run_guarded("down", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
