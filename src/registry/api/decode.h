// Decoding of Consul-shaped request bodies and parameters into registry records. Every problem is
// an ApiError that names the field; nothing here touches state, so the fuzz target drives it freely.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "http/message.h"
#include "registry/registry.h"
#include "registry/types.h"

namespace flotilla::registry::api {

struct ServiceRegistration {
  Service service;
  std::vector<Check> checks;
};

// PUT /v1/agent/service/register
ServiceRegistration decode_service_registration(std::string_view body);
// PUT /v1/agent/check/register
Check decode_check_registration(std::string_view body);
// PUT /v1/session/create (body may be empty)
Session decode_session_create(std::string_view body);
// PUT /v1/kv/<key>?flags=&cas=&acquire=&release= with the raw value as body.
KvPut decode_kv_put(const std::string& key, const http::Request& request);
// PUT /v1/agent/check/update/:id body: {"Status": ..., "Output": ...}
std::pair<std::string, std::string> decode_check_update(std::string_view body);

// A KV key from the URL: valid UTF-8, no NUL, at most 2 KiB.
void validate_kv_key(const std::string& key, bool allow_empty);
// Query parameter helpers: a malformed number is a 400 naming the parameter.
std::optional<uint64_t> uint_param(const http::Request& request, std::string_view name);
bool bool_param(const http::Request& request, std::string_view name, bool absent_value);
// A text parameter stored as written (a TTL check's ?note=, maintenance's ?reason=): at most
// 64 KiB and no NUL, as the same text in a JSON body. Empty when absent.
std::string text_param(const http::Request& request, std::string_view name);

}  // namespace flotilla::registry::api
