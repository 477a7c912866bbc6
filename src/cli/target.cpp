#include "cli/target.h"

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <unistd.h>

#include "config/flotilla_file.h"

namespace flotilla::cli {

void add_target_options(CLI::App* cmd, Target& target, bool short_file) {
  cmd->add_option("--api", target.api,
                  "Agent HOST:PORT (default: agent.api of --file, $FLOTILLA_API, agent.api of the flotilla.yaml "
                  "here or in a parent directory, 127.0.0.1:7700)");
  cmd->add_option("--token", target.token,
                  "The agent's token, for writes and for reads it protects (default $FLOTILLA_TOKEN)");
  cmd->add_option(short_file ? "-f,--file" : "--file", target.file,
                  "Use the agent of this flotilla.yaml (its agent.api)");
}

std::string find_app_file() {
  std::error_code ec;
  if (std::filesystem::is_regular_file("flotilla.yaml", ec)) return "flotilla.yaml";
  auto dir = std::filesystem::current_path(ec);
  if (ec) return {};
  for (auto d = dir.parent_path(); !d.empty(); d = d.parent_path()) {
    auto candidate = d / "flotilla.yaml";
    if (std::filesystem::is_regular_file(candidate, ec)) return candidate.string();
    if (d == d.root_path()) break;
  }
  return {};
}

std::string app_file_of(const Target& target) {
  if (!target.file.empty()) return target.file;
  if (!target.api.empty()) return {};
  if (const char* env = std::getenv("FLOTILLA_API"); env && *env) return {};
  return find_app_file();
}

std::optional<DataDirAgent> running_agent_of(const std::string& data_dir) {
  std::ifstream in(std::filesystem::path(data_dir) / "flotilla.pid");
  DataDirAgent a;
  if (!(in >> a.pid) || a.pid <= 0) return std::nullopt;
  in >> a.api;  // absent in pid files of agents before 0.1.1: then unknown
  // Still that agent: the process exists and runs the flotilla binary (not a reused pid).
  std::ifstream cmdline("/proc/" + std::to_string(a.pid) + "/cmdline");
  std::string argv0;
  if (!std::getline(cmdline, argv0, '\0') || argv0.find("flotilla") == std::string::npos) return std::nullopt;
  return a;
}

namespace {

// Where the options point, and the application file the address came from (if any).
struct Resolved {
  std::string api;
  std::string app;  // the file's `name`: the agent there must run it
  std::string file;
};

Resolved resolve(const Target& target) {
  if (!target.api.empty()) return {target.api, {}, {}};
  std::string path = target.file;
  if (path.empty()) {
    if (const char* env = std::getenv("FLOTILLA_API"); env && *env) return {env, {}, {}};
    path = find_app_file();
    if (path.empty()) return {"127.0.0.1:7700", {}, {}};
  }
  config::File f;
  try {
    f = config::load_file(path);
  } catch (const std::exception& e) {
    // Not a silent fall-back to 127.0.0.1:7700: that may be another application's agent.
    throw UsageError(std::string(e.what()) + (target.file.empty() ? " (fix it, or name the agent with --api)" : ""));
  }
  Resolved r{f.agent.api, f.name, path};
  // The file's agent.api changed while the application runs: its agent is still where it
  // started, as the data dir's pid file says.
  if (auto running = running_agent_of(f.agent.data_dir); running && !running->api.empty() && running->api != r.api) {
    std::cerr << "(the agent of " << f.name << " listens on " << running->api << ", not on " << r.api
              << " as " << path << " now says; flotilla down, then flotilla up moves it)\n";
    r.api = running->api;
  }
  return r;
}

}  // namespace

std::string resolve_api(const Target& target) { return resolve(target).api; }

ApiClient make_client(const Target& target) {
  Resolved r = resolve(target);
  auto make = [&] {
    try {
      return ApiClient(r.api, target.token);
    } catch (const std::exception& e) {
      throw UsageError(e.what());  // an address that is not HOST:PORT
    }
  };
  ApiClient client = make();
  if (!r.app.empty()) {
    // Another application's agent may answer at the same address (two projects left on the
    // default port): commands act on the file's application or on nothing, as compose scopes
    // them by project. Unreachable, or a plain agent: the command itself says so.
    try {
      auto st = client.request("GET", "/v1/flotilla/status", {}, std::chrono::seconds(10));
      if (st.status == 200) {
        auto j = nlohmann::json::parse(st.body, nullptr, false);
        const std::string name = j.is_object() ? j.value("Name", std::string()) : std::string();
        if (!name.empty() && name != r.app)
          throw std::runtime_error("the agent at " + r.api + " runs \"" + name + "\", not \"" + r.app + "\" of " +
                                   r.file + " (another application uses that agent.api)");
      }
    } catch (const AgentUnreachable&) {
    }
  }
  return client;
}

int fail(const std::string& command, const std::string& message, int code) {
  std::cout.flush();
  std::cerr << "flotilla " << command << ": " << message << "\n";
  return code;
}

int run_guarded(const std::string& command, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    return fail(command, e.what(), 2);
  } catch (const std::exception& e) {
    return fail(command, e.what(), 1);
  }
}

bool runs_no_application(const ApiResponse& r) {
  // The registry's API answers paths it does not know with "no such endpoint: PATH"; the
  // supervisor's own 404s name what is missing (a service).
  return r.status == 404 && error_message(r).rfind("no such endpoint", 0) == 0;
}

std::string api_error(const ApiResponse& r) {
  if (runs_no_application(r)) return "this agent runs no application (started with flotilla agent, not flotilla up)";
  return error_message(r);
}

nlohmann::json json_of(const ApiResponse& r) {
  if (r.status != 200) throw std::runtime_error(api_error(r));
  try {
    return nlohmann::json::parse(r.body);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(std::string("the agent's answer is not JSON: ") + e.what());
  }
}

size_t display_width(const std::string& utf8) {
  size_t n = 0;
  for (unsigned char c : utf8)
    if ((c & 0xC0) != 0x80) ++n;
  return n;
}

void Table::print(std::ostream& out) const {
  std::vector<size_t> width;
  for (const auto& row : rows_)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i) width.resize(i + 1, 0);
      width[i] = std::max(width[i], display_width(row[i]));
    }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(width[i] - display_width(row[i]) + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
}

std::string human_duration(double seconds) {
  if (!(seconds >= 0)) seconds = 0;
  auto s = static_cast<long long>(seconds);
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", s / 60, s % 60);
  else if (s < 86400) std::snprintf(buf, sizeof buf, "%lldh%02lldm", s / 3600, s % 3600 / 60);
  else std::snprintf(buf, sizeof buf, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
  return buf;
}

std::string format_number(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  std::string s = buf;
  if (s.find('.') != std::string::npos) {
    while (s.back() == '0') s.pop_back();
    if (s.back() == '.') s.pop_back();
  }
  if (s == "-0") s = "0";
  return s;
}

std::string local_clock(int64_t unix_ms) {
  std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(((unix_ms % 1000) + 1000) % 1000));
  return buf;
}

namespace {
void exit_zero(int) { _exit(0); }
}  // namespace

void exit_zero_on_interrupt() {
  struct sigaction sa {};
  sa.sa_handler = exit_zero;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
}

}  // namespace flotilla::cli
