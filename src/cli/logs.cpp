// `flotilla logs [-f] [SERVICE…]`: the instance logs of the services (all of them without a name)
// merged in time order, each line prefixed with its instance as docker-compose does
// ("web-3f2a | text"); -f follows them.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <unistd.h>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/target.h"
#include "common/duration.h"
#include "config/flotilla_file.h"
#include "supervisor/log_store.h"

namespace flotilla::cli {

namespace {

using nlohmann::json;

struct LogsOptions {
  Target target;
  std::vector<std::string> services;
  bool follow = false;
  std::string since;
  std::string tail;
  bool no_prefix = false;
  bool timestamps = false;
  bool no_color = false;
  bool all = false;
};

constexpr std::chrono::seconds kFollowWait{30};

// --since as the API takes it. A duration (10m) and Unix seconds pass through; an RFC 3339 time
// becomes Unix seconds: with Z or an offset as written, without one in local time (as docker
// does); a date alone is local midnight.
std::string since_param(const std::string& text) {
  if (auto d = parse_duration(text); d && d->count() >= 0) return text;
  {
    char* end = nullptr;
    double secs = std::strtod(text.c_str(), &end);
    if (!text.empty() && end && *end == '\0' && secs >= 0 && std::isdigit(static_cast<unsigned char>(text[0])))
      return text;
  }
  std::tm tm{};
  const char* p = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) p = strptime(text.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
  bool date_only = false;
  if (!p) {
    tm = {};
    p = strptime(text.c_str(), "%Y-%m-%d", &tm);
    date_only = p && *p == '\0';
    if (!date_only) p = nullptr;
  }
  if (!p)
    throw UsageError("--since \"" + text +
                     "\" is not a duration (10m), a time (2026-12-02T08:00:00Z, 2026-12-02T09:00:00+01:00) "
                     "or Unix seconds");
  double fraction = 0;
  if (*p == '.') {
    const char* start = p;
    ++p;
    while (std::isdigit(static_cast<unsigned char>(*p))) ++p;
    fraction = std::strtod(std::string(start, p).c_str(), nullptr);
  }
  double secs;
  if (*p == '\0') {
    tm.tm_isdst = -1;
    secs = static_cast<double>(std::mktime(&tm));
  } else {
    long offset = 0;
    if (*p == 'Z' || *p == 'z') {
      ++p;
    } else if (*p == '+' || *p == '-') {
      int sign = *p == '-' ? -1 : 1;
      int hh = 0, mm = 0, used = 0;
      if (std::sscanf(p + 1, "%2d:%2d%n", &hh, &mm, &used) == 2 ||
          std::sscanf(p + 1, "%2d%2d%n", &hh, &mm, &used) == 2) {
        offset = sign * (hh * 3600L + mm * 60L);
        p += 1 + used;
      } else {
        p = "?";
      }
    }
    if (*p != '\0') throw UsageError("--since \"" + text + "\": unreadable time zone (use Z or +HH:MM)");
    secs = static_cast<double>(timegm(&tm) - offset);
  }
  secs += fraction;
  if (secs < 0) throw UsageError("--since \"" + text + "\" is before 1970");
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6f", secs);
  return buf;
}

std::string utc_timestamp(int64_t us) {
  std::time_t t = static_cast<std::time_t>(us / 1000000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(us % 1000000));
  return buf;
}

// Writes records as docker-compose does: the instance, padded to the longest one seen, then " | ".
class Printer {
 public:
  Printer(const LogsOptions& o, bool colour) : o_(o), colour_(colour) {}

  void widen(const std::string& instance) { width_ = std::max(width_, instance.size()); }

  void print(const json& records) {
    for (const auto& r : records) widen(r.value("Instance", std::string()));
    std::string out;
    for (const auto& r : records) {
      const std::string instance = r.value("Instance", std::string());
      if (!o_.no_prefix) {
        std::string prefix = instance;
        prefix.append(width_ - instance.size(), ' ');
        prefix += " | ";
        if (colour_) out += "\033[" + colour_of(instance) + "m" + prefix + "\033[0m";
        else out += prefix;
      }
      if (o_.timestamps) out += utc_timestamp(r.value("Time", int64_t{0})) + " ";
      out += r.value("Text", std::string());
      out += '\n';
    }
    std::cout << out << std::flush;
  }

 private:
  const std::string& colour_of(const std::string& instance) {
    // docker-compose's: cyan, yellow, green, magenta, blue, then their bright forms.
    static const std::vector<std::string> palette = {"36",   "33",   "32",   "35",   "34",
                                                     "1;36", "1;33", "1;32", "1;35", "1;34"};
    auto it = colours_.find(instance);
    if (it == colours_.end()) it = colours_.emplace(instance, palette[colours_.size() % palette.size()]).first;
    return it->second;
  }

  const LogsOptions& o_;
  bool colour_;
  size_t width_ = 0;
  std::map<std::string, std::string> colours_;
};

// Unix microseconds of --since as since_param() gave it (a duration ago, or Unix seconds).
int64_t since_micros(const std::string& param) {
  if (param.empty()) return 0;
  const int64_t now = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  if (auto d = parse_duration(param); d && d->count() >= 0)
    return now - std::chrono::duration_cast<std::chrono::microseconds>(*d).count();
  return static_cast<int64_t>(std::strtod(param.c_str(), nullptr) * 1e6);
}

// Without an agent: every instance file the data dir holds for the services (all of them when
// none is named), merged as the agent would (--all).
int print_files(const LogsOptions& o, const std::string& dir, bool tail_none, Printer& printer) {
  std::vector<std::string> services = o.services;
  if (services.empty()) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec))
      if (e.is_directory(ec)) services.push_back(e.path().filename().string());
    std::sort(services.begin(), services.end());
  } else {
    for (const auto& s : services)
      if (!std::filesystem::is_directory(std::filesystem::path(dir) / s))
        throw std::runtime_error("no logs of a service \"" + s + "\" in " + dir);
  }
  std::vector<supervisor::LogQuery> queries;
  for (const auto& s : services) {
    auto& q = queries.emplace_back();
    q.service = s;
    q.since_us = o.since.empty() ? 0 : since_micros(since_param(o.since));
  }
  size_t tail = 0;
  if (!o.tail.empty() && o.tail != "all") tail = std::stoul(o.tail);
  auto a = supervisor::read_logs(dir, queries, tail);
  json records = json::array();
  for (const auto& r : a.records)
    records.push_back({{"Time", r.time_us}, {"Instance", r.instance}, {"Stream", r.stream}, {"Text", r.text}});
  std::cerr << "(the application is not running: from the files in " << dir << ")\n";
  if (!tail_none) printer.print(records);
  return 0;
}

int run(const LogsOptions& o) {
  std::string query;
  if (!o.since.empty()) query += "&since=" + url_encode_path(since_param(o.since));
  bool tail_none = false;
  if (!o.tail.empty() && o.tail != "all") {
    bool digits = o.tail.size() <= 9 && o.tail.find_first_not_of("0123456789") == std::string::npos;
    if (!digits) throw UsageError("--tail \"" + o.tail + "\" is not a number of lines (or all)");
    // The API reads tail=0 as "all": for none (-f --tail 0, only new lines) ask for one and
    // print nothing; the cursor still starts after it.
    tail_none = std::stoul(o.tail) == 0;
    query += "&tail=" + (tail_none ? std::string("1") : o.tail);
  }
  if (o.all) query += "&all";
  auto client = make_client(o.target);
  // One service: logs/NAME; several, or all: logs?service=A,B (the agent merges them).
  std::string path = "/v1/flotilla/logs";
  std::string names;
  for (const auto& s : o.services) names += (names.empty() ? "" : ",") + url_encode_path(s);
  if (o.services.size() == 1) path += "/" + names;
  else if (!names.empty()) query = "&service=" + names + query;
  const char* no_color_env = std::getenv("NO_COLOR");
  Printer printer(o, !o.no_color && !(no_color_env && *no_color_env) && isatty(STDOUT_FILENO));
  json answer;
  try {
    answer = json_of(client.request("GET", path + (query.empty() ? "" : "?" + query.substr(1))));
  } catch (const AgentUnreachable& e) {
    // The application is not running (it crashed, or flotilla down ran): its log files are still
    // in the data dir, as pm2 logs reads its files. Following needs the agent.
    if (!e.refused()) throw;
    std::string dir;
    try {
      // The file the address came from; else the application's file here, if it names it.
      std::string file = app_file_of(o.target);
      if (file.empty()) file = find_app_file();
      if (file.empty()) throw e;
      auto f = config::load_file(file);
      if (app_file_of(o.target).empty() && f.agent.api != client.address()) throw e;
      dir = (std::filesystem::path(f.agent.data_dir) / "logs").string();
    } catch (const AgentUnreachable&) {
      throw;
    } catch (const std::exception&) {
      throw e;
    }
    if (o.follow)
      throw std::runtime_error(std::string(e.what()) + "; -f follows a running application (without -f, the files in " +
                               dir + " are read)");
    return print_files(o, dir, tail_none, printer);
  }
  if (o.follow) {
    // Pad to every instance of the services, not only those with lines in this answer.
    auto instances = client.request(
        "GET", "/v1/flotilla/instances" + (o.services.size() == 1 ? "?service=" + names : std::string()));
    if (instances.status == 200)
      for (const auto& i : json::parse(instances.body)) {
        const std::string service = i.value("Service", std::string());
        if (o.services.empty() || std::find(o.services.begin(), o.services.end(), service) != o.services.end())
          printer.widen(i.value("ID", std::string()));
      }
  }
  if (!tail_none) printer.print(answer["Records"]);
  if (!o.follow) return 0;

  exit_zero_on_interrupt();
  std::string cursor = answer.value("Cursor", std::string());
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(kFollowWait + std::chrono::seconds(15));
  for (;;) {
    ApiResponse r;
    try {
      std::string follow = path + "?wait=" + std::to_string(kFollowWait.count()) + "s&after=" + url_encode_path(cursor);
      if (o.all) follow += "&all";
      if (o.services.size() > 1) follow += "&service=" + names;
      r = client.request("GET", follow, {}, timeout);
    } catch (const std::exception& e) {
      throw std::runtime_error("the agent at " + client.address() + " went away (" + e.what() + ")");
    }
    answer = json_of(r);
    printer.print(answer["Records"]);
    if (auto c = answer.value("Cursor", std::string()); !c.empty()) cursor = c;
  }
}

}  // namespace

std::function<int()> add_logs(CLI::App& app) {
  auto o = std::make_shared<LogsOptions>();
  auto* cmd = app.add_subcommand("logs", "Print services' logs (all without a name), every instance merged in time order");
  cmd->footer(
      "Each line starts with its instance (coloured on a terminal); stdout and stderr are merged.\n"
      "With -f, keeps printing new lines (new instances included) until Ctrl-C. --since takes a\n"
      "duration (10m), an RFC 3339 time (local time when it has no zone) or Unix seconds. Here -f\n"
      "means follow: pick the agent by flotilla.yaml with --file.\n\n"
      "Without SERVICE, every service's lines are merged, as docker compose logs does.\n\n"
      "Example: flotilla logs -f --tail 20 web");
  cmd->add_option("SERVICE", o->services, "The services (default: all)");
  cmd->add_flag("-f,--follow", o->follow, "Keep printing new lines");
  cmd->add_option("--since", o->since, "Only lines since then: 10m, 2026-12-02T08:00:00Z or Unix seconds");
  cmd->add_option("-n,--tail", o->tail, "Only the last N lines (all: every line)");
  cmd->add_flag("--no-prefix", o->no_prefix, "Print lines without their instance");
  cmd->add_flag("-t,--timestamps", o->timestamps, "Show each line's time (UTC)");
  cmd->add_flag("--all", o->all, "Also the instances of earlier runs of the agent (their files are kept in the data dir)");
  cmd->add_flag("--no-color", o->no_color, "No colours, even on a terminal (also $NO_COLOR)");
  add_target_options(cmd, o->target, false);
  return [o] { return run_guarded("logs", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
