// `flotilla events [-f]`: what the supervisor did and saw — instances started, healthy, crashed,
// restarted; scaling, rollouts, canaries, rollbacks — oldest first; -f follows.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <iostream>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/target.h"

namespace flotilla::cli {

namespace {

using nlohmann::json;

struct EventsOptions {
  Target target;
  bool follow = false;
  std::string service;
  bool json = false;
};

constexpr std::chrono::seconds kEventsFollowWait{30};
constexpr int kPage = 1000;  // the API's largest `limit`

class EventPrinter {
 public:
  explicit EventPrinter(const EventsOptions& o) : o_(o) {}

  void print(const json& events) {
    std::string out;
    for (const auto& e : events) {
      if (!o_.service.empty() && e.value("Service", std::string()) != o_.service) continue;
      if (o_.json) {
        out += e.dump() + "\n";
        continue;
      }
      if (!header_done_) {
        // Widths from the first lines; later ones may push a column out, never truncate it.
        for (const auto& f : events) {
          service_w_ = std::max(service_w_, cell(f, "Service").size());
          instance_w_ = std::max(instance_w_, cell(f, "Instance").size());
        }
        out += line("TIME", "SERVICE", "INSTANCE", "KIND", "MESSAGE");
        header_done_ = true;
      }
      out += line(local_clock(e.value("Time", int64_t{0})), cell(e, "Service"), cell(e, "Instance"), cell(e, "Kind"),
                  e.value("Message", std::string()));
    }
    std::cout << out << std::flush;
  }

 private:
  static std::string cell(const json& e, const char* key) {
    std::string v = e.value(key, std::string());
    return v.empty() ? "-" : v;
  }
  std::string line(const std::string& time, const std::string& service, const std::string& instance,
                   const std::string& kind, const std::string& message) const {
    auto pad = [](std::string s, size_t w) {
      if (s.size() < w) s.append(w - s.size(), ' ');
      return s;
    };
    return pad(time, 12) + "  " + pad(service, service_w_) + "  " + pad(instance, instance_w_) + "  " + pad(kind, 18) +
           "  " + message + "\n";
  }

  const EventsOptions& o_;
  bool header_done_ = false;
  size_t service_w_ = 7, instance_w_ = 8;
};

int run(const EventsOptions& o) {
  auto client = make_client(o.target);
  EventPrinter printer(o);
  uint64_t after = 0;
  json all = json::array();
  for (;;) {
    auto answer = json_of(client.request("GET", "/v1/flotilla/events?after=" + std::to_string(after) +
                                                    "&limit=" + std::to_string(kPage)));
    const auto& events = answer["Events"];
    for (const auto& e : events) {
      all.push_back(e);
      after = std::max(after, e.value("Seq", uint64_t{0}));
    }
    if (events.size() < static_cast<size_t>(kPage)) {
      after = std::max(after, answer.value("Last", uint64_t{0}));
      break;
    }
  }
  if (!o.service.empty()) {
    bool known =
        std::any_of(all.begin(), all.end(), [&](const json& e) { return e.value("Service", "") == o.service; });
    if (!known) {
      auto status = json_of(client.request("GET", "/v1/flotilla/status"));
      for (const auto& s : status["Services"])
        if (s.value("Name", "") == o.service) known = true;
    }
    if (!known) throw std::runtime_error("no supervised service \"" + o.service + "\"");
  }
  printer.print(all);
  if (!o.follow) return 0;

  exit_zero_on_interrupt();
  const auto timeout = std::chrono::duration_cast<std::chrono::milliseconds>(kEventsFollowWait + std::chrono::seconds(15));
  for (;;) {
    ApiResponse r;
    try {
      r = client.request("GET",
                         "/v1/flotilla/events?after=" + std::to_string(after) + "&limit=" + std::to_string(kPage) +
                             "&wait=" + std::to_string(kEventsFollowWait.count()) + "s",
                         {}, timeout);
    } catch (const std::exception& e) {
      throw std::runtime_error("the agent at " + client.address() + " went away (" + e.what() + ")");
    }
    auto answer = json_of(r);
    const auto& events = answer["Events"];
    printer.print(events);
    for (const auto& e : events) after = std::max(after, e.value("Seq", uint64_t{0}));
  }
}

}  // namespace

std::function<int()> add_events(CLI::App& app) {
  auto o = std::make_shared<EventsOptions>();
  auto* cmd = app.add_subcommand("events", "Print what the supervisor did: starts, health, crashes, scaling, rollouts");
  cmd->footer(
      "The agent keeps the last 1000 events, across restarts. TIME is local. With -f, keeps printing\n"
      "new events until Ctrl-C; --json prints one JSON object per line (Seq, Time in Unix ms, Service,\n"
      "Instance, Kind, Message, Data). Here -f means follow: pick the agent by flotilla.yaml with --file.\n\n"
      "Example: flotilla events -f --service web");
  cmd->add_flag("-f,--follow", o->follow, "Keep printing new events");
  cmd->add_option("--service", o->service, "Only this service's events");
  cmd->add_flag("--json", o->json, "One JSON object per line");
  add_target_options(cmd, o->target, false);
  return [o] { return run_guarded("events", [&] { return run(*o); }); };
}

}  // namespace flotilla::cli
