// Helpers for reading JSON request bodies the way Consul does: keys match case-insensitively
// (real clients send both "ID" and "id"), and a wrong type is an ApiError naming the field.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/duration.h"

namespace flotilla::json {

using Json = nlohmann::json;

// Parses a request body; malformed JSON or invalid UTF-8 is a 400 that says where.
Json parse_body(std::string_view body);

// Case-insensitive member lookup; nullptr when absent or JSON null.
const Json* find(const Json& object, std::string_view key);

// Typed getters. `path` names the field in errors ("Check.Interval").
std::optional<std::string> get_string(const Json& o, std::string_view key, std::string_view path);
std::optional<bool> get_bool(const Json& o, std::string_view key, std::string_view path);
std::optional<int64_t> get_int(const Json& o, std::string_view key, std::string_view path,
                               int64_t min, int64_t max);
std::optional<uint64_t> get_uint(const Json& o, std::string_view key, std::string_view path);
std::optional<std::vector<std::string>> get_string_list(const Json& o, std::string_view key,
                                                        std::string_view path);
std::optional<std::map<std::string, std::string>> get_string_map(const Json& o, std::string_view key,
                                                                 std::string_view path);
// A duration given as a Go string ("10s") or a number of nanoseconds, as Consul accepts.
std::optional<Duration> get_duration(const Json& o, std::string_view key, std::string_view path);

bool iequals(std::string_view a, std::string_view b);
bool valid_utf8(std::string_view s);

}  // namespace flotilla::json
