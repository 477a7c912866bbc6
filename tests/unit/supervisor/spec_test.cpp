// A service's run spec: what makes a new version, its JSON round trip, and deploy's --set.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "supervisor/spec.h"

using namespace flotilla;
using namespace flotilla::supervisor;

namespace {
config::ServiceSection section_with(std::vector<std::string> deps) {
  config::ServiceSection s;
  s.name = "web";
  s.command = {"python3", "app.py"};
  s.working_dir = "/srv/web";
  s.environment = {{"B", "2"}, {"A", "1"}};
  for (auto& d : deps) s.depends_on.push_back({d, "service_started", 1});
  return s;
}
}  // namespace

TEST(RunSpec, DependenciesAreAVersionWithoutChangingThoseOfServicesWithout) {
  const RunSpec none = run_spec(section_with({}));
  EXPECT_FALSE(none.to_json().contains("dependencies")) << "versions of services without dependencies stay as they were";
  const RunSpec one = run_spec(section_with({"quotes"}));
  const RunSpec two = run_spec(section_with({"users", "quotes"}));
  EXPECT_NE(none.version(), one.version()) << "a new dependency is a new <NAME>_URL: a rollout";
  EXPECT_NE(one.version(), two.version());
  EXPECT_EQ(two.dependencies, (std::vector<std::string>{"quotes", "users"}));
  EXPECT_EQ(two.version(), run_spec(section_with({"quotes", "users"})).version()) << "order does not matter";
  // The condition orders the first start only: not part of what runs.
  auto healthy = section_with({"quotes"});
  healthy.depends_on[0].condition = "service_healthy";
  EXPECT_EQ(run_spec(healthy).version(), one.version());
}

TEST(RunSpec, JsonRoundTripKeepsEverything) {
  auto s = section_with({"quotes", "users"});
  s.port_mode = config::ServiceSection::PortMode::fixed;
  s.port = 8080;
  s.restart = "on-failure";
  const RunSpec a = run_spec(s);
  const RunSpec b = RunSpec::from_json(a.to_json());
  EXPECT_EQ(b.to_json(), a.to_json());
  EXPECT_EQ(b.version(), a.version());
  EXPECT_EQ(b.dependencies, a.dependencies);
  // A record written by an earlier version (no "dependencies") reads as none.
  auto old = a.to_json();
  old.erase("dependencies");
  EXPECT_TRUE(RunSpec::from_json(old).dependencies.empty());
  old["dependencies"] = "quotes";
  EXPECT_THROW(RunSpec::from_json(old), std::runtime_error);
}

TEST(RunSpec, SetKeepsDependencies) {
  RunSpec r = run_spec(section_with({"quotes"}));
  const auto before = r.version();
  apply_set(r, "environment.A=9");
  EXPECT_NE(r.version(), before);
  EXPECT_EQ(r.dependencies, (std::vector<std::string>{"quotes"}));
  EXPECT_THROW(apply_set(r, "environment.9A=1"), std::invalid_argument);
  EXPECT_THROW(apply_set(r, "nothing"), std::invalid_argument);
}
