// Feeds a Gateway with the endpoints of the services its routes use, from a registry: the
// in-process one (`flotilla up`: straight from the catalog, woken by the watch hub only when a
// service's usable endpoints really change), or a remote agent followed through Consul-style
// blocking queries (`flotilla gateway --registry URL`). Both run on the control thread.
#pragma once

#include <memory>
#include <set>
#include <vector>
#include <string>

#include "common/duration.h"

namespace flotilla {
class EventLoop;
namespace registry {
class Registry;
}
namespace metrics {
class Registry;
}
}  // namespace flotilla

namespace flotilla::gateway {

class Gateway;

class LocalRegistryFeed {
 public:
  LocalRegistryFeed(registry::Registry& registry, Gateway& gateway);
  ~LocalRegistryFeed();
  void start();  // follows gateway.services()
  // Follows exactly these services from now on (their endpoints are set before this returns).
  void follow(const std::set<std::string>& services);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

class RemoteRegistryFeed {
 public:
  // registry_url: http://HOST:PORT (an IP address or localhost). token: sent as X-Consul-Token.
  RemoteRegistryFeed(EventLoop& loop, std::string registry_url, std::string token, Gateway& gateway);
  ~RemoteRegistryFeed();
  void start();  // follows gateway.services()
  // Follows exactly these services from now on: new ones get a blocking query each, and the
  // queries of the others end at once.
  void follow(const std::set<std::string>& services);
  // Whether every service followed has had its first answer (the gateway routes nothing before).
  bool synced() const;
  // Whether each of these services (those followed) has had its first answer.
  bool synced(const std::set<std::string>& services) const;
  // The followed services the registry has not answered about yet.
  std::vector<std::string> unsynced() const;
  // flotilla_gateway_registry_answer_age_seconds: how long ago the registry last answered about
  // the followed service it answered longest ago (since it was first followed, for one never
  // answered).
  // Read on the loop's thread (the admin server's).
  void register_metrics(metrics::Registry& registry);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace flotilla::gateway
