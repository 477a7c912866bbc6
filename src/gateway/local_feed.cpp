// The in-process registry feed (see registry_feed.h).
#include <spdlog/spdlog.h>

#include "gateway/gateway.h"
#include "gateway/registry_feed.h"
#include "registry/registry.h"

#include <map>
#include <set>

namespace flotilla::gateway {

namespace {
using namespace std::chrono_literals;


std::vector<EndpointSpec> endpoints_of(const registry::State& st, const std::string& service) {
  const char* node_status = "passing";
  for (const auto* c : st.node_checks()) node_status = worse_status(node_status, c->status);
  std::vector<InstanceHealth> list;
  for (const registry::Service* s : st.instances(service)) {
    const char* status = node_status;
    bool checked = false;
    for (const auto* c : st.checks_of_service(s->id)) {
      status = worse_status(status, c->status);
      if (c->id.rfind("_service_maintenance:", 0) != 0) checked = true;
    }
    list.push_back(
        {s->id, s->address, static_cast<uint16_t>(s->port), status, s->weight_passing, s->weight_warning, checked});
  }
  // An instance registered without an Address is on this node, and this gateway runs on this
  // node: loopback reaches it (the node's advertised address is for other hosts, and a service
  // may listen on 127.0.0.1 only).
  return usable_endpoints(list, "127.0.0.1");
}

std::string fingerprint_body(const std::vector<EndpointSpec>& eps) {
  std::string out;
  for (const auto& e : eps)
    out += e.instance_id + '\n' + e.host + '\n' + std::to_string(e.port) + '\n' + std::to_string(e.weight) +
           (e.checked ? "\nchecked\n" : "\n");
  return out;
}
}  // namespace

struct LocalRegistryFeed::Impl : std::enable_shared_from_this<LocalRegistryFeed::Impl> {
  Impl(registry::Registry& r, Gateway& g) : registry(r), gateway(g) {}
  registry::Registry& registry;
  Gateway& gateway;
  std::map<std::string, registry::WatchHub::Handle> handles;  // by service followed
  bool stopped = false;

  registry::QueryResult compute(const std::string& service) {
    registry::QueryResult q;
    q.body = fingerprint_body(endpoints_of(registry.state(), service));
    q.index = registry.state().revision();
    return q;
  }

  void watch(const std::string& service) {
    if (stopped) return;
    auto first = compute(service);
    gateway.set_endpoints(service, endpoints_of(registry.state(), service));
    std::weak_ptr<Impl> weak = shared_from_this();
    handles[service] = registry.watches().park(
        "gateway\n" + service, {"svc:" + service, "node"}, first, 10min,
        [weak, service] {
          auto self = weak.lock();
          return self ? self->compute(service) : registry::QueryResult{};
        },
        [weak, service](registry::QueryResult&&) {
          // Set the new endpoints and wait again, unless the service is no longer followed.
          if (auto self = weak.lock(); self && self->handles.count(service)) self->watch(service);
        });
  }

  void follow(const std::set<std::string>& services) {
    for (auto it = handles.begin(); it != handles.end();) {
      if (services.count(it->first)) {
        ++it;
        continue;
      }
      registry.watches().cancel(it->second);
      it = handles.erase(it);
    }
    for (const auto& s : services)
      if (!handles.count(s)) watch(s);
  }
};

LocalRegistryFeed::LocalRegistryFeed(registry::Registry& registry, Gateway& gateway)
    : impl_(std::make_shared<Impl>(registry, gateway)) {}

LocalRegistryFeed::~LocalRegistryFeed() {
  impl_->stopped = true;
  for (const auto& [service, h] : impl_->handles) impl_->registry.watches().cancel(h);
}

void LocalRegistryFeed::start() { impl_->follow(impl_->gateway.services()); }

void LocalRegistryFeed::follow(const std::set<std::string>& services) { impl_->follow(services); }

}  // namespace flotilla::gateway
