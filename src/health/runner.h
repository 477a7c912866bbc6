// Runs every HTTP and TCP check on its interval, keeps every TTL check's deadline, applies
// SuccessBeforePassing / FailuresBeforeCritical, and reaps services whose check stayed critical
// longer than DeregisterCriticalServiceAfter. Lives on the control thread; follows the registry.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "registry/registry.h"

namespace flotilla {
class EventLoop;
class Timer;
namespace metrics {
class Registry;
class Counter;
}  // namespace metrics
}  // namespace flotilla

namespace flotilla::health {

class Runner {
 public:
  Runner(EventLoop& loop, registry::Registry& registry, metrics::Registry& metrics);
  ~Runner();

  // Schedules the checks already in the registry and follows its changes.
  void start();
  // A TTL check's pass/warn/fail/update from the API. Throws ApiError (404 unknown, 400 not TTL).
  void ttl_update(const std::string& id, const std::string& status, const std::string& output,
                  registry::Registry::Done done);

 private:
  struct Job;
  void on_check(const std::string& id, const registry::Check* check);
  void schedule(Job& job, Duration delay);
  void arm_ttl(Job& job);
  void run_probe(const std::string& id);
  void on_result(const std::string& id, const std::string& status, std::string output);
  void reap();

  EventLoop& loop_;
  registry::Registry& registry_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;
  std::unique_ptr<Timer> reaper_;
  uint64_t next_generation_ = 0;
  metrics::Counter* probes_;
  metrics::Counter* reaped_;
};

}  // namespace flotilla::health
