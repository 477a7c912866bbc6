#include "supervisor/supervisor_impl.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <map>

#include "common/random.h"

namespace flotilla::supervisor {

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string random_suffix() {
  static Random rng;
  char buf[8];
  std::snprintf(buf, sizeof buf, "%06x", static_cast<unsigned>(rng() & 0xffffff));
  return buf;
}

// A free port on 127.0.0.1 (the kernel's choice), avoiding ones handed out recently.
int pick_port(const std::set<int>& avoid) {
  for (int attempt = 0; attempt < 20; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) break;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
      port = ntohs(a.sin_port);
    ::close(fd);
    if (port && !avoid.count(port)) return port;
  }
  throw std::runtime_error("no free port on 127.0.0.1");
}

void Supervisor::Impl::commit(std::vector<store::Op> ops, std::function<void(const std::string&)> done) {
  store::Txn txn;
  txn.ops = std::move(ops);
  store.commit(std::move(txn), [alive = alive, done = std::move(done)](const store::TxnResult& r) {
    if (!r.error.empty()) spdlog::error("supervisor: store write failed: {}", r.error);
    if (*alive && done) done(r.error);
  });
}

json Supervisor::Impl::service_record(const ServiceRuntime& s) const {
  json j = {{"spec", s.spec->to_json()},
            {"file_version", s.file_version},
            {"file_replicas", s.file_replicas},
            {"deployed_version", s.deployed_version}};
  j["previous"] = s.previous ? s.previous->to_json() : json(nullptr);
  j["replicas"] = s.replicas_override ? json(*s.replicas_override) : json(nullptr);
  j["canary"] = s.canary ? json{{"percent", s.canary->percent}, {"spec", s.canary->spec->to_json()}} : json(nullptr);
  return j;
}

void Supervisor::Impl::persist(const ServiceRuntime& s, std::function<void(const std::string&)> done) {
  commit({store::Op::put(service_key(s.name), service_record(s).dump())}, std::move(done));
}

void Supervisor::Impl::event(const std::string& service, const std::string& instance, const std::string& kind,
                             const std::string& message, json data) {
  json e = {{"Seq", next_seq++}, {"Time", wall_ms()}, {"Service", service}, {"Instance", instance},
            {"Kind", kind},     {"Message", message}, {"Data", std::move(data)}};
  // Events of the whole application (no service) log as the supervisor's, as other components do.
  spdlog::info("{}{}{}: {}", service.empty() ? "supervisor" : service, instance.empty() ? "" : " ", instance, message);
  char key[40];
  std::snprintf(key, sizeof key, "sup/ev/%020llu", static_cast<unsigned long long>(e["Seq"].get<uint64_t>()));
  // Messages carry what services said (a probe's answer, an exit text): bytes that are not
  // UTF-8 are replaced, not a reason to throw out of the loop.
  std::vector<store::Op> ops{store::Op::put(key, e.dump(-1, ' ', false, json::error_handler_t::replace))};
  events.push_back(std::move(e));
  while (events.size() > kEventsKept) {
    char old[40];
    std::snprintf(old, sizeof old, "sup/ev/%020llu", static_cast<unsigned long long>(events.front()["Seq"].get<uint64_t>()));
    ops.push_back(store::Op::del(old));
    events.pop_front();
  }
  commit(std::move(ops));
  notify();
}

void Supervisor::Impl::notify() {
  if (waiters.empty()) return;
  auto w = std::move(waiters);
  waiters.clear();
  for (auto& [id, fn] : w) loop.post(std::move(fn));
}

ServiceRuntime* Supervisor::Impl::find(const std::string& name) {
  auto it = services.find(name);
  return it == services.end() ? nullptr : it->second.get();
}

ServiceRuntime& Supervisor::Impl::must(const std::string& name) {
  auto* s = find(name);
  if (!s) throw ApiError(404, "no supervised service \"" + name + "\" (services with a command in flotilla.yaml)", "service");
  return *s;
}

Instance* Supervisor::Impl::instance(ServiceRuntime& s, const std::string& id) {
  for (auto& i : s.instances)
    if (i->id == id) return i.get();
  return nullptr;
}

json Supervisor::Impl::instance_json(const ServiceRuntime& s, const Instance& i) const {
  auto now = Clock::now();
  json j = {{"ID", i.id},
            {"Service", s.name},
            {"Pid", i.pid},
            {"Port", i.port},
            {"State", state_name(i.state)},
            {"Version", i.version},
            {"Canary", i.canary},
            {"Health", i.state == Instance::State::ready ? "passing"
                       : i.state == Instance::State::starting ? (i.failures ? "failing" : "starting")
                                                              : "-"},
            {"LastCheck", i.last_probe},
            {"UptimeSeconds", i.state == Instance::State::exited ? 0.0 : seconds(now - i.started_at)},
            {"StartedAt", i.started_wall_ms},
            {"CpuPercent", std::round(i.cpu_percent * 10) / 10},
            {"MemoryBytes", i.rss},
            {"Exit", i.exit_text}};
  return j;
}

json Supervisor::Impl::service_json(const ServiceRuntime& s) const {
  // Ready and Total count the service's own instances; a canary instance is reported apart.
  // Completed and Failed count instances of this version that exited and stay so (restart:
  // on-failure after a 0, or no): a one-shot job's end, not an instance still to come.
  int ready = 0, total = 0, canary_ready = 0;
  for (const auto& i : s.instances) {
    if (i->canary) {
      if (i->state == Instance::State::ready) ++canary_ready;
      continue;
    }
    if (i->state != Instance::State::exited) ++total;
    if (i->state == Instance::State::ready) ++ready;
  }
  const auto [completed, failed] = finished(s);
  const int desired = s.desired();
  const bool settled = ready + completed + failed >= desired;
  std::vector<std::string> waiting_for;
  if (!s.started_once) waiting_for = unmet_dependencies(s);
  auto r = rates(s, 10s);
  std::string state = "running";
  if (s.removing) state = "removing";
  else if (s.rollout) state = s.rollout->restart ? "restarting" : s.rollout->rollback ? "rolling back" : "deploying";
  else if (s.canary) state = "canary";
  else if (desired > 0 && settled && failed > 0) state = "failed";
  else if (desired > 0 && settled && ready == 0 && completed > 0) state = "completed";
  else if (!waiting_for.empty()) state = "waiting";
  else if (s.crash_count >= 3 && ready < desired) state = "crash-looping";
  else if (!settled) state = "starting";
  else if (desired == 0) state = "stopped";
  json j = {{"Name", s.name},
            {"Version", s.spec->version()},
            {"PreviousVersion", s.previous ? s.previous->version() : ""},
            {"State", state},
            {"Desired", desired},
            {"Ready", ready},
            {"Total", total},
            {"Completed", completed},
            {"Failed", failed},
            {"Restarts", s.restarts_version == s.spec->version() ? s.restarts : 0},
            {"RequestsPerSecond", std::round(r.rps * 10) / 10},
            {"ErrorRatio", std::round(r.error_ratio * 10000) / 10000},
            {"P95Ms", std::round(r.p95_ms * 10) / 10},
            {"Port", gateway ? gateway->service_port(s.name) : 0}};
  if (!waiting_for.empty()) j["WaitingFor"] = waiting_for;
  if (s.crash_count > 0 && !s.last_failure.empty()) j["LastFailure"] = s.last_failure;
  if (s.crash_count > 0 && Clock::now() < s.next_start_at)
    j["NextRestartInSeconds"] = std::round(seconds(s.next_start_at - Clock::now()) * 10) / 10;
  if (s.autoscaler) {
    const auto& a = s.autoscaler->settings();
    j["Autoscale"] = {{"Min", a.min}, {"Max", a.max}, {"Metric", a.metric}, {"Target", a.target},
                      {"Desired", s.autoscale_desired}, {"Reason", s.autoscale_reason},
                      {"Overridden", s.replicas_override.has_value()}};
  }
  if (s.rollout)
    j["Rollout"] = {{"From", s.rollout->from}, {"To", s.rollout->to}, {"Rollback", s.rollout->rollback},
                    {"Restart", s.rollout->restart}, {"Seconds", std::round(seconds(Clock::now() - s.rollout->started_at))}};
  if (s.probation && !s.rollout && s.probation->version == s.spec->version() && Clock::now() < s.probation->until)
    j["Probation"] = {{"Version", s.probation->version},
                      {"SecondsLeft", std::round(seconds(s.probation->until - Clock::now()) * 10) / 10},
                      {"Crashes", s.probation->crashes}};
  if (s.canary)
    j["Canary"] = {{"Percent", s.canary->percent}, {"Version", s.canary->spec->version()},
                   {"Passed", s.canary->passed}, {"LastCheck", s.canary->last_check},
                   {"Iterations", s.section.deploy.canary_analysis ? s.section.deploy.canary_analysis->iterations : 0},
                   {"Analysis", s.section.deploy.canary_analysis.has_value()}, {"Ready", canary_ready}};
  return j;
}

void Supervisor::Impl::add_service(const config::ServiceSection& section, const json* record) {
  auto s = std::make_unique<ServiceRuntime>();
  s->name = section.name;
  s->section = section;
  auto file_spec = std::make_shared<const RunSpec>(run_spec(section));
  s->file_version = file_spec->version();
  s->file_replicas = section.replicas;
  s->spec = file_spec;
  if (record) {
    try {
      // A spec stored before dependencies were part of a version has none: it gets the file's
      // (its instances need their <NAME>_URL), and its file version is the one computed without.
      auto stored = [&](const json& j) {
        RunSpec r = RunSpec::from_json(j);
        if (!j.contains("dependencies")) r.dependencies = file_spec->dependencies;
        return std::make_shared<const RunSpec>(std::move(r));
      };
      RunSpec without = *file_spec;
      without.dependencies.clear();
      const auto recorded = record->at("file_version").get<std::string>();
      if (recorded == s->file_version || (!record->at("spec").contains("dependencies") && recorded == without.version())) {
        // The file did not change this service: what was deployed, scaled or canaried stays.
        s->spec = stored(record->at("spec"));
        s->deployed_version = record->value("deployed_version", std::string());
        if (!record->at("previous").is_null()) s->previous = stored(record->at("previous"));
        if (!record->at("replicas").is_null() && record->value("file_replicas", section.replicas) == section.replicas)
          s->replicas_override = record->at("replicas").get<int>();
        if (!record->at("canary").is_null()) {
          Canary c;
          c.percent = record->at("canary").at("percent").get<int>();
          c.spec = stored(record->at("canary").at("spec"));
          s->canary = c;
        }
      } else {
        s->previous = stored(record->at("spec"));
      }
    } catch (const std::exception& e) {
      spdlog::warn("supervisor: the stored state of {} is unreadable ({}); starting from the file", s->name, e.what());
      s->spec = file_spec;
    }
  }
  if (section.autoscale) {
    s->autoscaler = std::make_unique<Autoscaler>(*section.autoscale, 0.1, section.autoscale->scale_down_window);
    s->autoscale_desired = std::clamp(section.replicas, section.autoscale->min, section.autoscale->max);
  }
  persist(*s);
  services[s->name] = std::move(s);
}

void Supervisor::Impl::set_up_cgroups() {
  if (cgroups_tried) return;
  cgroups_tried = true;
  std::string why;
  if (cgroup_v2_available(why)) {
    try {
      cgroups = CgroupTree::set_up();
      spdlog::info("supervisor: instances run in cgroup v2 groups under {}", cgroups->path());
    } catch (const std::exception& e) {
      spdlog::info("supervisor: no cgroups ({}); process trees are kept by the shim (PR_SET_PDEATHSIG, subreaper)", e.what());
    }
  } else {
    spdlog::info("supervisor: cgroup v2 not usable ({}); memory/cpus limits are not enforced, process trees are kept by "
                 "the shim (PR_SET_PDEATHSIG, subreaper)",
                 why);
  }
}

void Supervisor::Impl::kill_leftovers() {
  std::vector<store::Op> ops;
  for (const auto& [key, value] : registry.state().supervisor_records()) {
    if (key.rfind("sup/inst/", 0) != 0) continue;
    ops.push_back(store::Op::del(key));
    try {
      auto j = json::parse(value);
      pid_t shim = j.at("shim").get<pid_t>();
      if (shim > 0 && is_shim(shim, j.at("start").get<uint64_t>())) {
        spdlog::warn("supervisor: killing instance {} left by a previous agent (shim pid {})", key.substr(9), shim);
        kill_instance(shim);
      }
      auto cg = j.value("cgroup", std::string());
      if (!cg.empty()) {
        cgroup_kill(cg);
        cgroup_remove(cg);
      }
    } catch (const std::exception&) {
    }
  }
  // Instances a previous agent registered are gone: out of the registry before anything routes.
  for (const auto& [id, svc] : registry.state().services()) {
    auto it = svc.meta.find("flotilla-instance");
    if (it != svc.meta.end()) registry.deregister_service(id, [](const registry::WriteResult&) {});
  }
  if (!ops.empty()) commit(std::move(ops));
}

// ---------------------------------------------------------------------------------------------

Supervisor::Supervisor(EventLoop& loop, registry::Registry& registry, store::Store& store, gateway::Gateway* gateway,
                       metrics::Registry& metrics, Options options)
    : impl_(std::make_unique<Impl>(loop, registry, store, gateway, metrics, std::move(options))) {}

Supervisor::~Supervisor() {
  *impl_->alive = false;
  // Whatever still runs dies with its shim when the agent exits (PR_SET_PDEATHSIG); kill it now
  // so an agent that stops without stop_all leaves nothing behind.
  for (auto& [pid, who] : impl_->by_shim) kill_instance(pid);
}

std::vector<std::string> Supervisor::dependency_targets(const config::File& file) {
  // A dependency with `port: none` (a one-shot job, a queue worker) serves nothing: no listener,
  // no <NAME>_URL.
  std::set<std::string> out;
  for (const auto& s : file.services)
    for (const auto& d : s.depends_on)
      if (const auto* t = file.service(d.service); t && t->port_mode != config::ServiceSection::PortMode::none)
        out.insert(d.service);
  return {out.begin(), out.end()};
}

void Supervisor::start(const config::File& file) {
  auto& im = *impl_;
  im.app = file.name;
  if (!file.start_order().empty()) im.set_up_cgroups();
  im.restarts_metric = &im.metrics.counter("flotilla_supervisor_restarts_total",
                                           "Instances that exited or failed without being asked to, all services.");
  im.reaper = std::make_unique<Reaper>(im.loop, [&im](pid_t pid, ExitStatus st) { im.on_exit(pid, st); });
  im.kill_leftovers();
  // Events kept by the store, oldest first.
  for (const auto& [key, value] : im.registry.state().supervisor_records()) {
    if (key.rfind("sup/ev/", 0) != 0) continue;
    try {
      auto e = json::parse(value);
      im.next_seq = std::max(im.next_seq, e.at("Seq").get<uint64_t>() + 1);
      im.events.push_back(std::move(e));
    } catch (const std::exception&) {
    }
  }
  std::vector<store::Op> stale;
  std::set<std::string> in_file;
  for (const auto* s : file.start_order()) {
    in_file.insert(s->name);
    const json* record = nullptr;
    json parsed;
    auto it = im.registry.state().supervisor_records().find(im.service_key(s->name));
    if (it != im.registry.state().supervisor_records().end()) {
      try {
        parsed = json::parse(it->second);
        record = &parsed;
      } catch (const std::exception&) {
      }
    }
    im.add_service(*s, record);
    im.order.push_back(s->name);
  }
  for (const auto& [key, value] : im.registry.state().supervisor_records())
    if (key.rfind("sup/svc/", 0) == 0 && !in_file.count(key.substr(8))) stale.push_back(store::Op::del(key));
  if (!stale.empty()) im.commit(std::move(stale));
  im.event("", "", "agent-started", "supervising " + std::to_string(im.order.size()) + " service(s) of " + file.name);
  for (const auto& name : im.order) im.reconcile(*im.services[name]);
  im.tick = std::make_unique<Timer>(im.loop);
  im.tick->arm(1s, [&im] { im.on_tick(); });
}

void Supervisor::check_apply(const config::File& file) const {
  const auto& im = *impl_;
  if (im.stopping_all) throw ApiError(409, "the application is stopping");
  if (file.name != im.app)
    throw ApiError(409, "this agent runs \"" + im.app + "\", not \"" + file.name + "\" (each application has its own agent)", "name");
}

Supervisor::ApplyResult Supervisor::apply(const config::File& file) {
  auto& im = *impl_;
  check_apply(file);
  ApplyResult out;
  std::set<std::string> in_file;
  std::vector<std::string> reconcile_after;
  for (const auto* section : file.start_order()) {
    in_file.insert(section->name);
    auto* s = im.find(section->name);
    if (!s) {
      im.set_up_cgroups();
      im.add_service(*section, nullptr);
      im.order.push_back(section->name);
      out.added.push_back(section->name);
      im.event(section->name, "", "added", "added to the application");
      reconcile_after.push_back(section->name);
      continue;
    }
    auto file_spec = std::make_shared<const RunSpec>(run_spec(*section));
    const bool spec_changed = file_spec->version() != s->file_version;
    const int desired_before = s->desired();
    const bool replicas_changed = section->replicas != s->file_replicas;
    auto conditions = [](const config::ServiceSection& sec) {
      std::map<std::string, std::string> out;
      for (const auto& d : sec.depends_on) out[d.service] = d.condition;
      return out;
    };
    const bool other_changed = !(section->autoscale == s->section.autoscale) || !(section->deploy == s->section.deploy) ||
                               conditions(*section) != conditions(s->section);
    s->removing = false;
    s->section = *section;
    if (replicas_changed) {
      s->replicas_override.reset();
      s->file_replicas = section->replicas;
    }
    if (section->autoscale && (!s->autoscaler || !(s->autoscaler->settings() == *section->autoscale))) {
      s->autoscaler = std::make_unique<Autoscaler>(*section->autoscale, 0.1, section->autoscale->scale_down_window);
      s->autoscale_desired = std::clamp(s->autoscale_desired ? s->autoscale_desired : section->replicas,
                                        section->autoscale->min, section->autoscale->max);
    } else if (!section->autoscale) {
      s->autoscaler.reset();
    }
    if (!s->autoscaler && s->desired() != desired_before)
      im.event(s->name, "", "scaled",
               "flotilla.yaml: scaled from " + std::to_string(desired_before) + " to " + std::to_string(s->desired()),
               {{"from", desired_before}, {"to", s->desired()}});
    const bool runs_file_version = s->spec->version() == file_spec->version();
    // The file's version is not what runs although the file did not change: `flotilla deploy`
    // put another there (kept, and said), or the file's version was rolled back (it failed):
    // `flotilla up` again tries it again, as compose recreates what differs from the file.
    const bool cli_version = !runs_file_version && s->spec->version() == s->deployed_version;
    const bool retry = !spec_changed && !runs_file_version && !cli_version && !s->rollout && !s->canary;
    if (!spec_changed && cli_version) out.deployed.push_back(s->name);
    if ((spec_changed || retry) && runs_file_version) {
      // The file changed back to what runs (after a failed version was rolled back, say).
      s->file_version = file_spec->version();
      s->deployed_version.clear();
      if (replicas_changed || other_changed) out.reconfigured.push_back(s->name);
      else out.unchanged.push_back(s->name);
    } else if (spec_changed || retry) {
      if (s->rollout && s->rollout->restart)
        im.event(s->name, "", "restart-superseded",
                 "the restart gives way to the rollout of version " + file_spec->version() + " (flotilla.yaml changed)");
      s->previous = s->spec;
      s->spec = file_spec;
      s->file_version = file_spec->version();
      s->deployed_version.clear();
      s->canary.reset();
      s->rollout.reset();
      s->crash_count = 0;
      s->next_start_at = {};
      if (s->start_timer) s->start_timer->cancel();
      im.event(s->name, "", "deploy-started",
               (retry ? "flotilla up again: version " + s->spec->version() +
                            " of flotilla.yaml does not run (it was rolled back): rolling it out again"
                      : "flotilla.yaml changed: rolling out version " + s->spec->version()),
               {{"from", s->previous->version()}, {"to", s->spec->version()}});
      out.changed.push_back(s->name);
    } else if (replicas_changed || other_changed) {
      out.reconfigured.push_back(s->name);
    } else {
      out.unchanged.push_back(s->name);
    }
    // A one-shot job of this version that failed runs again (`docker compose up` starts exited
    // containers): the usual next step after fixing what made it fail.
    const size_t before = s->instances.size();
    s->instances.erase(std::remove_if(s->instances.begin(), s->instances.end(),
                                      [&](const auto& i) {
                                        return i->state == Instance::State::exited && i->no_restart && !i->exit_ok &&
                                               !i->canary && i->version == s->spec->version();
                                      }),
                       s->instances.end());
    if (s->instances.size() != before && !spec_changed) {
      out.unchanged.erase(std::remove(out.unchanged.begin(), out.unchanged.end(), s->name), out.unchanged.end());
      out.rerun.push_back(s->name);
      im.event(s->name, "", "rerun", "flotilla up: the one-shot job that failed runs again");
    }
    im.persist(*s);
    reconcile_after.push_back(s->name);
  }
  // Instances start once this call is over: after the gateway took the same file (its routes,
  // and the listeners behind <NAME>_URL), so a new instance never calls a route not there yet.
  for (const auto& name : reconcile_after)
    im.loop.post([&im, alive = im.alive, name] {
      if (!*alive) return;
      if (auto* s = im.find(name)) im.reconcile(*s);
    });
  for (auto& [name, s] : im.services) {
    if (in_file.count(name) || s->removing) continue;
    s->removing = true;
    out.removed.push_back(name);
    im.event(name, "", "removed", "gone from flotilla.yaml: stopping its instances");
  }
  for (const auto& name : out.removed) {
    auto* s = im.find(name);
    if (!s) continue;
    if (s->instances.empty()) {
      im.commit({store::Op::del(im.service_key(name))});
      im.services.erase(name);
      im.order.erase(std::remove(im.order.begin(), im.order.end(), name), im.order.end());
    } else {
      im.reconcile(*s);
    }
  }
  // Keep start order for new services.
  std::vector<std::string> order;
  for (const auto* section : file.start_order())
    if (im.find(section->name)) order.push_back(section->name);
  for (const auto& n : im.order)
    if (std::find(order.begin(), order.end(), n) == order.end()) order.push_back(n);
  im.order = order;
  return out;
}

void Supervisor::scale(const std::string& service, int replicas, Done done) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (replicas < 0 || replicas > 1000) throw ApiError(400, "replicas must be from 0 to 1000", "replicas");
  if (im.stopping_all) throw ApiError(409, "the application is stopping");
  if (s.autoscaler)
    throw ApiError(409, service + " is autoscaled (" + std::to_string(s.autoscaler->settings().min) + ".." +
                            std::to_string(s.autoscaler->settings().max) +
                            "); change autoscale in flotilla.yaml to change its range",
                   "replicas");
  // As the file's rule (and compose's "port is already allocated"): a second process could not
  // bind the port, and its TCP health check would reach the first one and call it healthy.
  if (replicas > 1 && s.spec->port_mode == config::ServiceSection::PortMode::fixed)
    throw ApiError(400, service + " has a fixed port (" + std::to_string(s.spec->port) +
                            "), so it runs at most 1 replica; give it port: auto to scale it", "replicas");
  const int from = s.desired();
  s.replicas_override = replicas;
  im.event(service, "", "scaled", "scaled from " + std::to_string(from) + " to " + std::to_string(replicas),
           {{"from", from}, {"to", replicas}});
  im.persist(s, [done = std::move(done)](const std::string& error) { done(error); });
  im.reconcile(s);
}

void Supervisor::deploy(const std::string& service, const std::vector<std::string>& sets, int canary_percent, Done done) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (im.stopping_all) throw ApiError(409, "the application is stopping");
  if (canary_percent < 0 || canary_percent >= 100) throw ApiError(400, "canary must be a percentage from 1 to 99", "canary");
  RunSpec next = *s.spec;
  for (const auto& a : sets) {
    try {
      apply_set(next, a);
    } catch (const std::invalid_argument& e) {
      throw ApiError(400, e.what(), "set");
    }
  }
  auto spec = std::make_shared<const RunSpec>(std::move(next));
  if (s.canary) throw ApiError(409, "a canary of " + service + " is running: promote or roll it back first", "canary");
  // A canary of the running version would compare the version with itself (and promoting it
  // would replace nothing).
  if (spec->version() == s.spec->version())
    throw ApiError(400, sets.empty() ? "nothing to deploy: give --set KEY=VALUE (or change flotilla.yaml and run flotilla up)"
                                     : "nothing changes: version " + spec->version() + " already runs",
                   "set");
  if (canary_percent > 0) {
    if (s.rollout) throw ApiError(409, "a rollout of " + service + " is in progress", "canary");
    Canary c;
    c.percent = canary_percent;
    c.spec = spec;
    s.canary = c;
    im.event(service, "", "canary-started",
             "canary of version " + spec->version() + " takes " + std::to_string(canary_percent) + "% of the traffic",
             {{"version", spec->version()}, {"percent", canary_percent}});
  } else {
    if (s.rollout && s.rollout->restart)
      im.event(service, "", "restart-superseded", "the restart gives way to the rollout of version " + spec->version());
    s.previous = s.spec;
    s.spec = spec;
    s.deployed_version = spec->version();
    s.rollout.reset();
    s.crash_count = 0;
    s.next_start_at = {};
    if (s.start_timer) s.start_timer->cancel();
    im.event(service, "", "deploy-started", "rolling out version " + spec->version(),
             {{"from", s.previous->version()}, {"to", spec->version()}});
  }
  im.persist(s, [done = std::move(done)](const std::string& error) { done(error); });
  im.reconcile(s);
}

Supervisor::Restart Supervisor::restart(const std::string& service) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (im.stopping_all) throw ApiError(409, "the application is stopping");
  if (s.removing) throw ApiError(409, service + " is being removed (gone from flotilla.yaml)", "service");
  if (s.canary) throw ApiError(409, "a canary of " + service + " is running: promote or roll it back first", "service");
  if (s.rollout)
    throw ApiError(409, "a " + std::string(s.rollout->restart ? "restart" : s.rollout->rollback ? "rollback" : "rollout") +
                            " of " + service + " is in progress: wait for it to finish",
                   "service");
  if (s.desired() == 0) throw ApiError(409, service + " is scaled to 0: nothing to restart", "service");
  if (!s.started_once) {
    auto unmet = im.unmet_dependencies(s);
    if (!unmet.empty()) {
      std::string list;
      for (const auto& d : unmet) list += (list.empty() ? "" : ", ") + d;
      throw ApiError(409, service + " has not started yet: it waits for " + list, "service");
    }
  }
  int live = 0, ended = 0;
  for (const auto& i : s.instances) {
    if (i->live() && !i->canary) ++live;
    if (i->state == Instance::State::exited && !i->canary) ++ended;
  }
  ++s.generation;
  // One-shot jobs of this version that ran (completed or failed) run again.
  s.instances.erase(std::remove_if(s.instances.begin(), s.instances.end(),
                                   [](const auto& i) { return i->state == Instance::State::exited && !i->canary; }),
                    s.instances.end());
  // A service waiting out a crash backoff starts now.
  s.crash_count = 0;
  s.next_start_at = {};
  if (s.start_timer) s.start_timer->cancel();
  // A rollout even with nothing running (a crash loop, a job run again): its crashes are counted
  // and end it with restart-failed, and it is over once the new instances are all up.
  s.rollout = Rollout{s.spec->version(), s.spec->version(), Clock::now()};
  s.rollout->restart = true;
  // Crashes from here on are the restart's (the files on disk changed, say), not the last
  // deploy's: they must not roll that back.
  s.probation.reset();
  im.event(service, "", "restart-started",
           live > 0 ? "restarting " + std::to_string(live) + " instance(s) of version " + s.spec->version() +
                          ", one at a time"
                    : "starting version " + s.spec->version() + " again",
           {{"version", s.spec->version()}, {"instances", live}, {"rerun", ended}});
  im.reconcile(s);
  return {live, ended};
}

void Supervisor::promote(const std::string& service, Done done) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (!s.canary) throw ApiError(409, service + " has no canary to promote", "service");
  im.event(service, "", "canary-promoted", "canary version " + s.canary->spec->version() + " promoted");
  im.end_canary(s, true);
  im.persist(s, [done = std::move(done)](const std::string& error) { done(error); });
}

void Supervisor::rollback(const std::string& service, Done done) {
  auto& im = *impl_;
  auto& s = im.must(service);
  if (s.canary) {
    im.event(service, "", "canary-rolled-back", "canary version " + s.canary->spec->version() + " rolled back");
    im.end_canary(s, false);
  } else {
    if (!s.previous) throw ApiError(409, service + " has no previous version to roll back to", "service");
    std::swap(s.spec, s.previous);
    s.rollout = Rollout{s.previous->version(), s.spec->version(), Clock::now(), 0, true};
    s.crash_count = 0;
    s.next_start_at = {};
    if (s.start_timer) s.start_timer->cancel();
    im.event(service, "", "rollback", "rolling back to version " + s.spec->version(),
             {{"from", s.previous->version()}, {"to", s.spec->version()}});
    im.reconcile(s);
  }
  im.persist(s, [done = std::move(done)](const std::string& error) { done(error); });
}

void Supervisor::stop_all(bool forget, std::function<void()> done, const std::string& why) {
  auto& im = *impl_;
  im.stop_done.push_back(std::move(done));
  if (!im.stopping_all) {
    im.stopping_all = true;
    im.event("", "", "stopping",
             !why.empty() ? why : forget ? "flotilla down: stopping every service" : "agent stopping: stopping every service");
    if (forget) {
      std::vector<store::Op> ops;
      for (auto& [name, s] : im.services) {
        s->replicas_override.reset();
        s->canary.reset();
        ops.push_back(store::Op::del(im.service_key(name)));
      }
      im.commit(std::move(ops));
    }
  }
  im.maybe_finish_stop_all();
}

json Supervisor::status() const {
  const auto& im = *impl_;
  json services = json::array();
  for (const auto& name : im.order)
    if (auto it = im.services.find(name); it != im.services.end()) services.push_back(im.service_json(*it->second));
  return {{"Name", im.app}, {"Stopping", im.stopping_all}, {"Services", services}};
}

json Supervisor::instances(const std::string& service, bool crashed) const {
  const auto& im = *impl_;
  json out = json::array();
  for (const auto& name : im.order) {
    if (!service.empty() && name != service) continue;
    auto it = im.services.find(name);
    if (it == im.services.end()) continue;
    const auto& s = *it->second;
    int live = 0;
    for (const auto& i : s.instances) {
      out.push_back(im.instance_json(s, *i));
      if (i->live() && !i->canary) ++live;
    }
    const auto done = im.finished(s);
    if (crashed && !s.last_crash.is_null() && live + done.completed + done.failed < s.desired())
      out.push_back(s.last_crash);
  }
  return out;
}

bool Supervisor::has_service(const std::string& service) const { return impl_->services.count(service) > 0; }

std::vector<std::string> Supervisor::service_names() const {
  std::vector<std::string> out;
  for (const auto& n : impl_->order)
    if (impl_->services.count(n)) out.push_back(n);
  for (const auto& [n, s] : impl_->services)
    if (std::find(out.begin(), out.end(), n) == out.end()) out.push_back(n);
  return out;
}

json Supervisor::events(uint64_t after, size_t limit, const std::string& service) const {
  json out = json::array();
  for (const auto& e : impl_->events) {
    if (e["Seq"].get<uint64_t>() <= after) continue;
    if (!service.empty() && e["Service"].get<std::string>() != service) continue;
    out.push_back(e);
    if (out.size() >= limit) break;
  }
  return out;
}

uint64_t Supervisor::last_event() const { return impl_->next_seq - 1; }

uint64_t Supervisor::wait(std::function<void()> wake) {
  auto id = impl_->next_waiter++;
  impl_->waiters[id] = std::move(wake);
  return id;
}

void Supervisor::cancel_wait(uint64_t handle) { impl_->waiters.erase(handle); }

const std::string& Supervisor::log_dir() const { return impl_->log_dir; }
EventLoop& Supervisor::loop() { return impl_->loop; }

std::vector<std::string> Supervisor::log_instances(const std::string& service) const {
  auto it = impl_->services.find(service);
  if (it == impl_->services.end()) return {};
  return {it->second->run_instances.begin(), it->second->run_instances.end()};
}
const std::string& Supervisor::app_name() const { return impl_->app; }

}  // namespace flotilla::supervisor
