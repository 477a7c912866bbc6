// What the supervisor's subcommands (status, ps, logs, events, scale, deploy, promote, rollback,
// down) share: which agent they talk to, how they fail, and small formatting helpers.
//
// The agent is picked, first match wins, by --api; by agent.api of -f/--file FILE; by
// $FLOTILLA_API; by agent.api of flotilla.yaml in the working directory or the nearest parent
// that has one, when it loads (as docker compose finds its project); else 127.0.0.1:7700.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "cli/api_client.h"

namespace CLI {
class App;
}

namespace flotilla::cli {

struct Target {
  std::string api;    // --api
  std::string token;  // --token
  std::string file;   // -f/--file
};

// Adds --api, --token and --file (also -f unless the command uses -f for "follow").
void add_target_options(CLI::App* cmd, Target& target, bool short_file = true);

// flotilla.yaml of the working directory, else of the nearest parent directory that has one (as
// docker compose finds its file): "flotilla.yaml" or a path to it; empty when there is none.
std::string find_app_file();

// The file the options take the agent's address from: --file, else (without --api and
// $FLOTILLA_API) the one find_app_file() finds; empty when the address comes from elsewhere.
std::string app_file_of(const Target& target);

// The agent `flotilla up` started on a data dir, from its pid file ("PID API"), when that process
// still runs: its pid and API address.
struct DataDirAgent {
  int pid = 0;
  std::string api;
};
std::optional<DataDirAgent> running_agent_of(const std::string& data_dir);

// The address the options pick (see the top of this file). Throws UsageError when --file does not
// load.
std::string resolve_api(const Target& target);
ApiClient make_client(const Target& target);

// A mistake in the command line: the command prints it and exits 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Runs `body`; an exception becomes one line "flotilla COMMAND: message" on stderr and exit status
// 2 (UsageError) or 1 (anything else).
int run_guarded(const std::string& command, const std::function<int()>& body);
// Prints "flotilla COMMAND: message" and returns `code`.
int fail(const std::string& command, const std::string& message, int code = 1);

// The readable message of a failed answer. An agent started by `flotilla agent` has no supervisor:
// its 404 for /v1/flotilla/… becomes "this agent runs no application (…)".
std::string api_error(const ApiResponse& r);
bool runs_no_application(const ApiResponse& r);
// The body of a 200 answer, parsed; throws std::runtime_error(api_error(r)) otherwise.
nlohmann::json json_of(const ApiResponse& r);

// A plain-text table: columns two spaces apart, the last one unpadded; widths count UTF-8
// characters, not bytes.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};
size_t display_width(const std::string& utf8);

// 45s, 3m12s, 2h05m, 3d04h.
std::string human_duration(double seconds);
// "3.2" style: a number with at most `decimals` decimals, trailing zeros dropped.
std::string format_number(double value, int decimals = 1);
// Local wall-clock time of a Unix time in milliseconds: "08:32:27.123".
std::string local_clock(int64_t unix_ms);

// For -f: SIGINT (and SIGTERM) end the command with exit status 0. Call after stdout is flushed
// at every step: the handler only exits.
void exit_zero_on_interrupt();

}  // namespace flotilla::cli
