// The registry's records: services (instances), health checks, KV entries and sessions, as the
// agent keeps them in memory and in the store. Consul's JSON shapes live in api/, not here.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/duration.h"

namespace flotilla::registry {

namespace status {
inline constexpr const char* passing = "passing";
inline constexpr const char* warning = "warning";
inline constexpr const char* critical = "critical";
inline constexpr const char* maintenance = "maintenance";  // only as a check type
}  // namespace status

bool valid_status(const std::string& s);

struct Service {
  std::string id;
  std::string name;
  std::vector<std::string> tags;
  std::string address;
  int port = 0;
  std::map<std::string, std::string> meta;
  int weight_passing = 1;
  int weight_warning = 1;
  bool enable_tag_override = false;
  // From the store:
  uint64_t create_index = 0;
  uint64_t modify_index = 0;

  bool operator==(const Service& o) const;
};

struct CheckDefinition {
  std::string http;
  std::string method;  // empty: GET
  std::map<std::string, std::vector<std::string>> header;
  std::string body;
  bool tls_skip_verify = false;
  std::string tcp;
  Duration ttl{0};
  Duration interval{0};
  Duration timeout{0};  // 0: the default (10 s)
  int success_before_passing = 0;
  int failures_before_critical = 0;
  Duration deregister_critical_service_after{0};

  bool operator==(const CheckDefinition& o) const = default;
};

struct Check {
  std::string id;
  std::string name;
  std::string service_id;    // empty: a node check
  std::string service_name;
  std::vector<std::string> service_tags;
  std::string status = status::critical;
  std::string notes;
  std::string output;
  std::string kind;  // "http", "tcp", "ttl", "maintenance", "" (status only)
  CheckDefinition definition;
  uint64_t create_index = 0;
  uint64_t modify_index = 0;
};

struct KvEntry {
  std::string key;
  std::string value;
  uint64_t flags = 0;
  uint64_t lock_index = 0;
  std::string session;
  uint64_t create_index = 0;
  uint64_t modify_index = 0;
};

struct Session {
  std::string id;
  std::string name;
  std::string node;
  std::vector<std::string> node_checks;     // check IDs; the node's "serfHealth" by default
  std::vector<std::string> service_checks;  // check IDs of services
  Duration lock_delay = std::chrono::seconds(15);
  std::string behavior = "release";  // release | delete
  Duration ttl{0};
  int64_t lease = 0;
  uint64_t create_index = 0;
  uint64_t modify_index = 0;
};

// Store keys for each kind of record.
namespace keys {
inline constexpr std::string_view service = "svc/";
inline constexpr std::string_view check = "chk/";
inline constexpr std::string_view session = "ses/";
inline constexpr std::string_view kv = "kv/";
inline constexpr std::string_view node = "sys/node";
// The supervisor's own records (desired state, events), kept as opaque JSON values.
inline constexpr std::string_view supervisor = "sup/";
}  // namespace keys

// Storage encoding. Decoders throw std::runtime_error on corrupt records.
std::string encode(const Service& s);
std::string encode(const Check& c);
std::string encode(const KvEntry& e);  // key is not part of the value
std::string encode(const Session& s);
Service decode_service(const std::string& bytes);
Check decode_check(const std::string& bytes);
KvEntry decode_kv(const std::string& bytes);
Session decode_session(const std::string& bytes);

}  // namespace flotilla::registry
