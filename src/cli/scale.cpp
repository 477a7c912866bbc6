// `flotilla scale SERVICE=N…`: sets how many instances of a service run (until the next
// `flotilla up` with a changed `replicas`, or `flotilla down`).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iostream>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/target.h"

namespace flotilla::cli {

namespace {

struct ScaleOptions {
  Target target;
  std::vector<std::string> args;
};

bool whole_number(const std::string& s) {
  return !s.empty() && s.size() <= 9 && s.find_first_not_of("0123456789") == std::string::npos;
}

// SERVICE=N pairs, or a single "SERVICE N"; every one checked before anything is sent.
std::vector<std::pair<std::string, int>> parse_targets(const std::vector<std::string>& args) {
  const std::string usage = "usage: flotilla scale SERVICE=N [SERVICE=N…]";
  if (args.empty()) throw UsageError("which service, to how many instances? " + usage);
  std::vector<std::pair<std::string, int>> out;
  if (args.size() == 2 && args[0].find('=') == std::string::npos && args[1].find('=') == std::string::npos) {
    if (!whole_number(args[1]))
      throw UsageError("\"" + args[1] + "\" is not a number of instances (a whole number, 0 stops the service)");
    out.emplace_back(args[0], std::stoi(args[1]));
    return out;
  }
  for (const auto& a : args) {
    auto eq = a.find('=');
    if (eq == std::string::npos) throw UsageError("\"" + a + "\" is not SERVICE=N; " + usage);
    if (eq == 0) throw UsageError("\"" + a + "\" names no service; " + usage);
    const std::string n = a.substr(eq + 1);
    if (!whole_number(n))
      throw UsageError("\"" + a + "\": \"" + n +
                       "\" is not a number of instances (a whole number, 0 stops the service)");
    out.emplace_back(a.substr(0, eq), std::stoi(n));
  }
  return out;
}

int run(const ScaleOptions& o) {
  auto targets = parse_targets(o.args);
  auto client = make_client(o.target);
  int status = 0;
  for (const auto& [service, n] : targets) {
    auto r = client.request("POST", "/v1/flotilla/services/" + url_encode_path(service) + "/scale",
                            nlohmann::json{{"replicas", n}}.dump());
    if (r.status != 200) {
      if (runs_no_application(r)) return fail("scale", api_error(r));
      status = fail("scale", service + ": " + api_error(r));
      continue;
    }
    std::cout << service << ": scaled to " << n << "\n";
  }
  return status;
}

}  // namespace

std::function<int()> add_scale(CLI::App& app) {
  auto o = std::make_shared<ScaleOptions>();
  auto* cmd = app.add_subcommand("scale", "Set how many instances of a service run");
  cmd->footer(
      "Answers once the new count is recorded; instances then start (or drain and stop) in the\n"
      "background: see flotilla ps. The count holds until flotilla down, or flotilla up with a\n"
      "changed replicas. An autoscaled service is refused: change its autoscale range instead.\n\n"
      "Example: flotilla scale web=3 worker=0");
  cmd->add_option("SERVICE=N", o->args, "SERVICE=N (or SERVICE N)");
  add_target_options(cmd, o->target);
  return [o] { return run_guarded("scale", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
