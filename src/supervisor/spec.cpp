#include "supervisor/spec.h"

#include <xxhash.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace flotilla::supervisor {

using nlohmann::json;
using config::Healthcheck;
using PortMode = config::ServiceSection::PortMode;

namespace {

const char* port_mode_name(PortMode m) {
  switch (m) {
    case PortMode::automatic: return "auto";
    case PortMode::fixed: return "fixed";
    case PortMode::none: return "none";
  }
  return "auto";
}

const char* check_kind_name(Healthcheck::Kind k) {
  switch (k) {
    case Healthcheck::Kind::tcp: return "tcp";
    case Healthcheck::Kind::http: return "http";
    case Healthcheck::Kind::none: return "none";
  }
  return "tcp";
}

}  // namespace

RunSpec run_spec(const config::ServiceSection& s) {
  RunSpec r;
  r.command = s.command;
  r.working_dir = s.working_dir;
  r.environment = s.environment;
  std::sort(r.environment.begin(), r.environment.end());
  r.port_mode = s.port_mode;
  r.port = s.port;
  r.healthcheck = s.healthcheck;
  r.restart = s.restart;
  r.stop_signal = s.stop_signal;
  r.stop_grace_period = s.stop_grace_period;
  r.memory_bytes = s.memory_bytes;
  r.cpus = s.cpus;
  for (const auto& d : s.depends_on) r.dependencies.push_back(d.service);
  std::sort(r.dependencies.begin(), r.dependencies.end());
  return r;
}

json RunSpec::to_json() const {
  json env = json::object();
  for (const auto& [k, v] : environment) env[k] = v;
  json j = {{"command", command},
            {"working_dir", working_dir},
            {"environment", env},
            {"port_mode", port_mode_name(port_mode)},
            {"port", port},
            {"healthcheck",
             {{"kind", check_kind_name(healthcheck.kind)},
              {"http", healthcheck.http_path},
              {"interval_ns", healthcheck.interval.count()},
              {"timeout_ns", healthcheck.timeout.count()},
              {"retries", healthcheck.retries},
              {"start_period_ns", healthcheck.start_period.count()}}},
            {"restart", restart},
            {"stop_signal", stop_signal},
            {"stop_grace_period_ns", stop_grace_period.count()},
            {"memory_bytes", memory_bytes},
            {"cpus", cpus}};
  if (!dependencies.empty()) j["dependencies"] = dependencies;
  return j;
}

RunSpec RunSpec::from_json(const json& j) {
  try {
    RunSpec r;
    r.command = j.at("command").get<std::vector<std::string>>();
    if (r.command.empty()) throw std::runtime_error("empty command");
    r.working_dir = j.at("working_dir").get<std::string>();
    for (const auto& [k, v] : j.at("environment").items()) r.environment.emplace_back(k, v.get<std::string>());
    std::sort(r.environment.begin(), r.environment.end());
    const auto pm = j.at("port_mode").get<std::string>();
    r.port_mode = pm == "fixed" ? PortMode::fixed : pm == "none" ? PortMode::none : PortMode::automatic;
    r.port = j.at("port").get<int>();
    const auto& h = j.at("healthcheck");
    const auto kind = h.at("kind").get<std::string>();
    r.healthcheck.kind = kind == "http" ? Healthcheck::Kind::http : kind == "none" ? Healthcheck::Kind::none
                                                                                  : Healthcheck::Kind::tcp;
    r.healthcheck.http_path = h.at("http").get<std::string>();
    r.healthcheck.interval = Duration(h.at("interval_ns").get<int64_t>());
    r.healthcheck.timeout = Duration(h.at("timeout_ns").get<int64_t>());
    r.healthcheck.retries = h.at("retries").get<int>();
    r.healthcheck.start_period = Duration(h.at("start_period_ns").get<int64_t>());
    r.restart = j.at("restart").get<std::string>();
    r.stop_signal = j.at("stop_signal").get<std::string>();
    r.stop_grace_period = Duration(j.at("stop_grace_period_ns").get<int64_t>());
    r.memory_bytes = j.at("memory_bytes").get<uint64_t>();
    r.cpus = j.at("cpus").get<double>();
    if (j.contains("dependencies")) r.dependencies = j.at("dependencies").get<std::vector<std::string>>();
    return r;
  } catch (const json::exception& e) {
    throw std::runtime_error(std::string("unreadable service spec: ") + e.what());
  }
}

std::string RunSpec::version() const {
  const std::string text = to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(XXH64(text.data(), text.size(), 0)));
  return std::string(buf, 8);
}

void apply_set(RunSpec& spec, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw std::invalid_argument("--set " + assignment + ": expected KEY=VALUE, such as environment.LOG_LEVEL=debug");
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  if (key.rfind("environment.", 0) == 0) {
    const std::string name = key.substr(12);
    bool ok = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0]));
    for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
    if (!ok) throw std::invalid_argument("--set " + key + ": \"" + name + "\" is not a variable name");
    auto it = std::find_if(spec.environment.begin(), spec.environment.end(), [&](const auto& kv) { return kv.first == name; });
    if (it != spec.environment.end()) it->second = value;
    else spec.environment.emplace_back(name, value);
    std::sort(spec.environment.begin(), spec.environment.end());
  } else if (key == "command") {
    if (value.empty()) throw std::invalid_argument("--set command= needs a command");
    spec.command = {"/bin/sh", "-c", value};
  } else if (key == "working_dir") {
    if (!std::filesystem::path(value).is_absolute() || !std::filesystem::is_directory(value))
      throw std::invalid_argument("--set working_dir: " + value + " is not an absolute path to a directory");
    spec.working_dir = value;
  } else if (key == "stop_grace_period") {
    auto d = parse_duration(value);
    if (!d || d->count() < 0) throw std::invalid_argument("--set stop_grace_period: " + value + " is not a duration such as 10s");
    spec.stop_grace_period = *d;
  } else {
    throw std::invalid_argument("--set " + key +
                                ": only environment.NAME, command, working_dir and stop_grace_period can be set "
                                "(change anything else in flotilla.yaml and run flotilla up again)");
  }
}

std::string url_variable(const std::string& service) {
  std::string out;
  for (char c : service) out += std::isalnum(static_cast<unsigned char>(c)) ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : '_';
  return out + "_URL";
}

}  // namespace flotilla::supervisor
