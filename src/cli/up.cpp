// `flotilla up`: everything flotilla.yaml describes, on this machine, in one process — the agent
// (registry, health checks, API), the gateway fed from it in-process, and the supervisor running
// every service that has a command. Against an agent that already runs this application, `up`
// applies the file's differences instead (changed services roll out, the rest is untouched).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <set>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <thread>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/rollout_wait.h"
#include "cli/target.h"
#include "config/flotilla_file.h"

namespace flotilla::cli {

namespace {

struct UpOptions {
  std::string file = "flotilla.yaml";
  std::string log_level = "info";
  std::string token;
  std::string node;
  std::string advertise;
  bool detach = false;
  bool no_attach = false;
  int wait_seconds = 120;
};

std::string join(const nlohmann::json& list) {
  std::string out;
  for (const auto& e : list) out += (out.empty() ? "" : ", ") + e.get<std::string>();
  return out.empty() ? "-" : out;
}

// `rollouts_after`: the last event before the file was applied to a running agent; a rollout
// since then that failed (rolled back by itself) makes the exit status 1.
// `must_end`: one-shot jobs that must have ended (not only started) to count as settled.
int wait_and_report(const ApiClient& client, std::chrono::steady_clock::time_point started,
                    std::chrono::steady_clock::time_point deadline, const std::function<bool()>& gone,
                    std::optional<uint64_t> rollouts_after = std::nullopt,
                    const std::set<std::string>& must_end = {});

// An agent already answering at the file's address: apply the file there (with -d, then wait
// for the services as a first start does). nullopt: none runs.
std::optional<int> apply_to_running(const config::File& file, const std::string& token, bool detach,
                                    int wait_seconds) {
  ApiClient client(file.agent.api, token);
  ApiResponse r;
  try {
    r = client.request("GET", "/v1/flotilla/status");
  } catch (const std::exception&) {
    return std::nullopt;  // nothing listens there
  }
  if (runs_no_application(r)) {
    std::cerr << "flotilla up: an agent without an application (flotilla agent) already serves " << file.agent.api
              << "; stop it or give this file another agent.api\n";
    return 1;
  }
  if (r.status != 200) {
    std::cerr << "flotilla up: the agent at " << file.agent.api << " answered: " << error_message(r) << "\n";
    return 1;
  }
  auto status = nlohmann::json::parse(r.body, nullptr, false);
  std::string name = status.is_object() ? status.value("Name", "") : "";
  if (name != file.name) {
    std::cerr << "flotilla up: the agent at " << file.agent.api << " runs \"" << name << "\", not \"" << file.name
              << "\"; give this file another agent.api\n";
    return 1;
  }
  nlohmann::json body = {{"file", std::filesystem::absolute(file.path).lexically_normal().string()}};
  const uint64_t before = last_event_seq(client);
  auto a = client.request("POST", "/v1/flotilla/apply", body.dump());
  if (a.status != 200) {
    std::cerr << "flotilla up: " << error_message(a) << "\n";
    return 1;
  }
  auto j = nlohmann::json::parse(a.body);
  std::cout << file.name << " is running at " << file.agent.api << "; applied " << file.path << "\n"
            << "  added:     " << join(j["Added"]) << "\n"
            << "  changed:   " << join(j["Changed"]) << (j["Changed"].empty() ? "" : "  (rolling out; see flotilla status)")
            << "\n";
  if (!j.value("Reconfigured", nlohmann::json::array()).empty())
    std::cout << "  settings:  " << join(j["Reconfigured"])
              << "  (replicas, autoscale, deploy or a depends_on condition; no instance replaced)\n";
  if (!j.value("Rerun", nlohmann::json::array()).empty())
    std::cout << "  re-run:    " << join(j["Rerun"]) << "  (one-shot jobs that had failed)\n";
  std::cout << "  removed:   " << join(j["Removed"]) << "\n"
            << "  unchanged: " << join(j["Unchanged"]) << "\n";
  if (!j.value("Deployed", nlohmann::json::array()).empty())
    std::cout << "  deployed:  " << join(j["Deployed"])
              << "  (run a version from flotilla deploy, not the file's; kept until the file changes them)\n";
  if (j.contains("Gateway") && j["Gateway"].is_object()) {
    const auto& g = j["Gateway"];
    if (g.contains("Routes")) {
      std::cout << "  gateway:   " << g.value("Routes", 0) << " route(s), "
                << (g.value("RoutesChanged", false) ? "changed" : "unchanged") << "; now routing to: "
                << join(g.value("ServicesAdded", nlohmann::json::array()))
                << "; no longer: " << join(g.value("ServicesRemoved", nlohmann::json::array()))
                << "; settings changed: " << join(g.value("ServicesChanged", nlohmann::json::array()))
                << (g.value("TrustedProxiesChanged", false) ? "; trusted_proxies changed" : "") << "\n";
    }
    auto restart = g.value("RestartNeeded", nlohmann::json::array());
    if (!restart.empty())
      std::cout << "  restart needed to change: " << join(restart)
                << " (restart the agent: flotilla down --keep, then flotilla up; the running values stay until "
                   "then)\n";
  }
  if (!detach) {
    // Not waiting: say so, since the exit status cannot tell how the rollouts go.
    if (!j["Changed"].empty() || !j["Added"].empty() || !j.value("Rerun", nlohmann::json::array()).empty())
      std::cout << "not waiting for the changes (flotilla up -d waits and exits 1 if one fails; flotilla status "
                   "shows them)\n";
    return 0;
  }
  std::cout.flush();
  // A job that runs again (changed, re-run or new) while what depends on its completion already
  // runs: a first start waits for it through those dependents, so wait for it to end here.
  std::set<std::string> must_end;
  for (const char* list : {"Changed", "Rerun", "Added"})
    for (const auto& n : j.value(list, nlohmann::json::array())) {
      const std::string job = n.get<std::string>();
      for (const auto& s : file.services)
        for (const auto& d : s.depends_on)
          if (d.service == job && d.condition == "service_completed_successfully") must_end.insert(job);
    }
  const auto started = std::chrono::steady_clock::now();
  return wait_and_report(client, started, started + std::chrono::seconds(wait_seconds), nullptr, before, must_end);
}

// A service is settled when each of its desired instances is ready or, for a one-shot, has
// exited for good (completed or failed), and no rollout is under way.
bool service_settled(const nlohmann::json& svc) {
  return svc["Ready"].get<int>() + svc.value("Completed", 0) + svc.value("Failed", 0) >= svc["Desired"].get<int>() &&
         !svc.contains("Rollout");
}

// A service that will not get there by waiting: a one-shot job failed, or it keeps crashing.
bool service_failed(const nlohmann::json& svc) {
  return svc.value("Failed", 0) > 0 || svc.value("State", "") == "crash-looping";
}

// As `docker compose up --wait`: polls the agent until every service settled, one failed (at
// once: what depends on it would never start), `deadline` passed or `gone()` says the agent
// exited; prints each service and returns the exit status (1 unless all settled). The
// application keeps running either way.
int wait_and_report(const ApiClient& client, std::chrono::steady_clock::time_point started,
                    std::chrono::steady_clock::time_point deadline, const std::function<bool()>& gone,
                    std::optional<uint64_t> rollouts_after, const std::set<std::string>& must_end) {
  auto ended = [&](const nlohmann::json& svc) {
    return !must_end.count(svc.value("Name", "")) ||
           svc.value("Completed", 0) + svc.value("Failed", 0) >= svc.value("Desired", 0);
  };
  nlohmann::json s;
  while (true) {
    if (gone && gone()) return 1;
    try {
      auto r = client.request("GET", "/v1/flotilla/status", {}, std::chrono::seconds(10));
      if (r.status == 404) return 0;  // a file without services: nothing to wait for
      if (r.status == 200) {
        s = nlohmann::json::parse(r.body);
        bool settled = true, failed = false;
        for (const auto& svc : s["Services"]) {
          settled = settled && service_settled(svc) && ended(svc);
          failed = failed || service_failed(svc);
        }
        if (settled || failed) break;
      }
    } catch (const std::exception&) {
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (!s.is_object()) {
    std::cerr << "flotilla up: the agent at " << client.address() << " did not report its services\n";
    return 1;
  }
  std::vector<std::string> not_ready, failed;
  for (const auto& svc : s["Services"]) {
    const std::string name = svc["Name"].get<std::string>();
    const int ready = svc["Ready"].get<int>(), desired = svc["Desired"].get<int>();
    const int completed = svc.value("Completed", 0), failures = svc.value("Failed", 0);
    std::cout << "  " << name << ": " << ready << "/" << desired << " ready";
    if (completed) std::cout << ", " << completed << " completed";
    if (failures) std::cout << ", " << failures << " failed (exited, not restarted)";
    if (svc.value("State", "") == "crash-looping")
      std::cout << ", crash-looping (" << svc.value("LastFailure", std::string("see flotilla events")) << ")";
    if (svc.contains("Rollout")) std::cout << ", rollout under way";
    std::string waiting;
    for (const auto& d : svc.value("WaitingFor", nlohmann::json::array()))
      waiting += (waiting.empty() ? "" : ", ") + d.get<std::string>();
    if (!waiting.empty()) std::cout << ", waiting for " << waiting;
    std::cout << "\n";
    if (service_failed(svc)) failed.push_back(name);
    else if (!service_settled(svc) || !ended(svc)) not_ready.push_back(name);
  }
  auto list = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& n : v) out += (out.empty() ? "" : ", ") + n;
    return out;
  };
  // A new version that failed was rolled back by itself: every service is ready again, on the
  // version it had before, which is not what the file asks for.
  std::vector<std::string> rolled_back;
  if (rollouts_after) {
    try {
      auto answer = json_of(client.request("GET", "/v1/flotilla/events?limit=1000&after=" + std::to_string(*rollouts_after)));
      for (const auto& e : answer["Events"]) {
        const std::string kind = e.value("Kind", "");
        if (kind != "rollback" && kind != "deploy-failed") continue;
        const std::string name = e.value("Service", "");
        std::cerr << "flotilla up: " << name << ": " << e.value("Message", kind) << "\n";
        if (std::find(rolled_back.begin(), rolled_back.end(), name) == rolled_back.end()) rolled_back.push_back(name);
      }
    } catch (const std::exception&) {
    }
  }
  if (not_ready.empty() && failed.empty() && rolled_back.empty()) {
    std::printf("all services ready in %.2f s\n", secs);
    // A new version is still watched: its crashes over deploy.healthy_timeout roll it back.
    for (const auto& svc : s["Services"])
      if (svc.contains("Probation"))
        std::cout << "  " << svc["Name"].get<std::string>() << ": version " << svc["Probation"].value("Version", "")
                  << " is watched for " << svc["Probation"].value("SecondsLeft", 0.0)
                  << " s more: 3 crashes in that time roll it back (flotilla events -f shows it)\n";
    return 0;
  }
  if (!rolled_back.empty())
    std::cerr << "flotilla up: the new version of " << list(rolled_back)
              << " failed and was rolled back; see flotilla events and flotilla logs\n";
  if (!failed.empty()) std::cerr << "flotilla up: failed: " << list(failed) << "; see flotilla ps and flotilla events\n";
  if (!not_ready.empty()) {
    char took[32];
    std::snprintf(took, sizeof took, "%.1f", secs);
    std::cerr << "flotilla up: not ready after " << took << " s: " << list(not_ready)
              << "; see flotilla status and flotilla logs\n";
  }
  return 1;
}

// -d: the agent runs on in the background; this process waits until every service is ready
// (or the agent gave up) and reports.
int detach_and_wait(const UpOptions& o, const config::File& file, const AgentOptions& a) {
  std::error_code ec;
  std::filesystem::create_directories(file.agent.data_dir, ec);
  const auto log_path = (std::filesystem::path(file.agent.data_dir) / "flotilla.log").string();
  const auto started = std::chrono::steady_clock::now();
  const auto deadline = started + std::chrono::seconds(o.wait_seconds);
  pid_t child = ::fork();
  if (child < 0) {
    std::perror("flotilla up: fork");
    return 1;
  }
  if (child == 0) {
    ::setsid();
    int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    int out = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (in >= 0) ::dup2(in, 0);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    std::_Exit(run_agent(a, &file));
  }
  ApiClient client(file.agent.api, o.token);
  auto gone = [&] {
    int st = 0;
    if (::waitpid(child, &st, WNOHANG) != child) return false;
    std::cerr << "flotilla up: the agent exited" << (WIFEXITED(st) ? " with code " + std::to_string(WEXITSTATUS(st)) : "")
              << "; its log " << log_path << " ends with:\n";
    std::ifstream in(log_path);
    std::vector<std::string> lines;
    for (std::string l; std::getline(in, l);) lines.push_back(l);
    for (size_t i = lines.size() > 10 ? lines.size() - 10 : 0; i < lines.size(); ++i) std::cerr << "  " << lines[i] << "\n";
    return true;
  };
  // First the agent's API.
  while (true) {
    if (gone()) return 1;
    try {
      auto r = client.request("GET", "/v1/flotilla/status", {}, std::chrono::seconds(10));
      if (r.status == 200 || r.status == 404) break;
    } catch (const std::exception&) {
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::cerr << "flotilla up: the agent (pid " << child << ") did not answer at " << file.agent.api << " within "
                << o.wait_seconds << " s; see " << log_path << "\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::cout << file.name << " is up (agent pid " << child << ", API http://" << file.agent.api << ", log " << log_path
            << ")\n";
  std::cout.flush();
  const int rc = wait_and_report(client, started, deadline, gone);
  std::cout << "stop it with: flotilla down -f " << file.path << "\n";
  return rc;
}

}  // namespace

std::function<int()> add_up(CLI::App& app) {
  auto o = std::make_shared<UpOptions>();
  auto* cmd = app.add_subcommand("up", "Run the application flotilla.yaml describes: agent, gateway and services");
  cmd->footer(
      "Starts the agent (registry, API), the gateway and every service that has a command, in\n"
      "dependency order. In the foreground it prints the services' output (\"web-3f9a1c | line\", as\n"
      "docker compose up does; not with --no-attach), logs to stderr and stops everything cleanly\n"
      "on SIGINT or SIGTERM; with -d it runs in the background (log and pid file in the data dir) and returns\n"
      "once every service is ready (a one-shot job: ended), exiting 1 when one failed, crash-loops\n"
      "or is not ready within --wait. Run against an agent that already runs the application, it\n"
      "applies the file's changes: changed services roll out, unchanged ones are untouched, a\n"
      "failed one-shot job runs again; with -d it then waits the same way, and exits 1 when a new\n"
      "version failed and was rolled back (without -d it returns at once and says so).\n\n"
      "Example: flotilla up -d -f examples/hello/flotilla.yaml\n"
      "         flotilla status; flotilla logs -f web; flotilla down");
  cmd->add_option("-f,--file", o->file, "The application's file")->capture_default_str();
  cmd->add_flag("-d,--detach", o->detach, "Run in the background; return once every service is ready");
  cmd->add_flag("--no-attach", o->no_attach, "In the foreground: do not print the services' output (flotilla logs has it)");
  cmd->add_option("--wait", o->wait_seconds, "With -d: seconds to wait for every service to be ready")
      ->capture_default_str();
  cmd->add_option("--token", o->token, "Secret that API writes must present; required off loopback")
      ->envname("FLOTILLA_TOKEN");
  cmd->add_option("--node", o->node, "Node name (default: the host name)");
  cmd->add_option("--advertise", o->advertise,
                  "The node's address, for instances registered without one (default: agent.api's host; "
                  "for 0.0.0.0, this host's address on its default route)");
  cmd->add_option("--log-level", o->log_level, "trace, debug, info, warn or error")->capture_default_str();
  return [o] {
    config::File file;
    try {
      // The default file: here, or in the nearest parent directory that has one.
      if (o->file == "flotilla.yaml")
        if (std::string found = find_app_file(); !found.empty()) o->file = found;
      file = config::load_file(o->file);
    } catch (const config::ConfigError& e) {
      std::cerr << "flotilla up: " << e.what() << "\n";
      return 2;
    }
    // What loads but is probably a slip, on the terminal: a fresh attached agent logs them there
    // itself; an application applied again, or started detached, logs them only to its file.
    auto say_warnings = [&] {
      for (const auto& w : config::warnings(file)) std::cerr << "warning: " << w << "\n";
    };
    if (auto applied = apply_to_running(file, o->token, o->detach, o->wait_seconds)) {
      if (*applied == 0) say_warnings();  // not for a file the running agent refused
      return *applied;
    }
    // Nothing answers at agent.api, but an agent runs on this data dir: the file's agent.api
    // changed since it started. It cannot move; say where it is rather than fail on its lock.
    if (auto running = running_agent_of(file.agent.data_dir)) {
      std::cerr << "flotilla up: " << file.name << " already runs on the data dir " << file.agent.data_dir
                << " (agent pid " << running->pid << (running->api.empty() ? "" : ", API " + running->api)
                << "), not at " << file.agent.api << " as the file now says. Stop it first: flotilla down -f "
                << file.path << " finds it there (--keep keeps scale and deploys); then flotilla up\n";
      return 1;
    }
    AgentOptions a;
    a.api = file.agent.api;
    a.data_dir = file.agent.data_dir;
    a.token = o->token;
    a.node = o->node;
    a.advertise = o->advertise;
    a.log_level = o->log_level;
    if (o->detach) {
      say_warnings();
      return detach_and_wait(*o, file, a);
    }
    a.attach = !o->no_attach;
    return run_agent(a, &file);
  };
}

}  // namespace flotilla::cli
