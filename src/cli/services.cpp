// `flotilla services`: every registered service with its instances and their health.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <iomanip>
#include <iostream>

#include "cli/api_client.h"
#include "cli/commands.h"
#include "cli/target.h"

namespace flotilla::cli {

std::function<int()> add_services(CLI::App& app) {
  auto target = std::make_shared<Target>();
  auto json_out = std::make_shared<bool>(false);
  auto* cmd = app.add_subcommand("services", "List registered services, their instances and health");
  add_target_options(cmd, *target);
  cmd->add_flag("--json", *json_out, "Print JSON instead of a table");
  return [target, json_out]() -> int {
    try {
      ApiClient client = make_client(*target);
      auto r = client.request("GET", "/v1/catalog/services");
      if (r.status != 200) {
        std::cerr << "flotilla services: " << error_message(r) << "\n";
        return 1;
      }
      auto names = nlohmann::json::parse(r.body);
      nlohmann::json all = nlohmann::json::array();
      for (auto it = names.begin(); it != names.end(); ++it) {
        auto h = client.request("GET", "/v1/health/service/" + url_encode_path(it.key()));
        if (h.status != 200) continue;
        for (const auto& e : nlohmann::json::parse(h.body)) {
          std::string status = "passing";
          for (const auto& c : e["Checks"]) {
            auto s = c["Status"].get<std::string>();
            if (s == "critical" || (s == "warning" && status == "passing")) status = s;
          }
          const auto& s = e["Service"];
          std::string addr = s["Address"].get<std::string>();
          if (addr.empty()) addr = e["Node"]["Address"].get<std::string>();
          bool maintenance = false;
          for (const auto& c : e["Checks"])
            if (c["CheckID"].get<std::string>().rfind("_service_maintenance:", 0) == 0) maintenance = true;
          all.push_back({{"service", it.key()},
                         {"id", s["ID"]},
                         {"address", addr + ":" + std::to_string(s["Port"].get<int>())},
                         {"health", maintenance ? "maintenance" : status},
                         {"tags", s["Tags"]}});
        }
      }
      if (*json_out) {
        std::cout << all.dump(2) << "\n";
        return 0;
      }
      std::cout << std::left << std::setw(20) << "SERVICE" << std::setw(28) << "INSTANCE" << std::setw(24)
                << "ADDRESS" << std::setw(13) << "HEALTH" << "TAGS\n";
      for (const auto& e : all) {
        std::string tags;
        for (const auto& t : e["tags"]) tags += (tags.empty() ? "" : ",") + t.get<std::string>();
        std::cout << std::left << std::setw(20) << e["service"].get<std::string>() << std::setw(28)
                  << e["id"].get<std::string>() << std::setw(24) << e["address"].get<std::string>() << std::setw(13)
                  << e["health"].get<std::string>() << tags << "\n";
      }
      return 0;
    } catch (const UsageError& e) {
      return fail("services", e.what(), 2);
    } catch (const std::exception& e) {
      return fail("services", e.what(), 1);
    }
  };
}

}  // namespace flotilla::cli
