#include "common/json.h"

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace flotilla::json {
namespace {
std::string join(std::string_view path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return std::string(path) + "." + std::string(key);
}
}  // namespace

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
    else return false;
    if (i + n >= s.size()) return false;
    for (size_t k = 1; k <= n; ++k) {
      auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

Json parse_body(std::string_view body) {
  try {
    return Json::parse(body);
  } catch (const Json::exception& e) {  // parse_error, and out_of_range for numbers like 1e999
    std::string what = e.what();
    // nlohmann prefixes "[json.exception.parse_error.101] "; keep the readable part.
    if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    throw bad_request("request body is not valid JSON: " + what);
  }
}

const Json* find(const Json& o, std::string_view key) {
  if (!o.is_object()) return nullptr;
  if (auto it = o.find(std::string(key)); it != o.end()) return it->is_null() ? nullptr : &*it;
  for (auto it = o.begin(); it != o.end(); ++it) {
    if (iequals(it.key(), key)) return it->is_null() ? nullptr : &*it;
  }
  return nullptr;
}

std::optional<std::string> get_string(const Json& o, std::string_view key, std::string_view path) {
  const Json* v = find(o, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw bad_request(join(path, key) + " must be a string", join(path, key));
  return v->get<std::string>();
}

std::optional<bool> get_bool(const Json& o, std::string_view key, std::string_view path) {
  const Json* v = find(o, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) throw bad_request(join(path, key) + " must be true or false", join(path, key));
  return v->get<bool>();
}

std::optional<int64_t> get_int(const Json& o, std::string_view key, std::string_view path, int64_t min,
                               int64_t max) {
  const Json* v = find(o, key);
  if (!v) return std::nullopt;
  int64_t n;
  if (v->is_number_integer()) {
    if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      throw bad_request(join(path, key) + " is out of range", join(path, key));
    n = v->get<int64_t>();
  } else if (v->is_number_float() && v->get<double>() == static_cast<double>(static_cast<int64_t>(v->get<double>()))) {
    n = static_cast<int64_t>(v->get<double>());
  } else {
    throw bad_request(join(path, key) + " must be an integer", join(path, key));
  }
  if (n < min || n > max)
    throw bad_request(join(path, key) + " must be between " + std::to_string(min) + " and " + std::to_string(max),
                      join(path, key));
  return n;
}

std::optional<uint64_t> get_uint(const Json& o, std::string_view key, std::string_view path) {
  const Json* v = find(o, key);
  if (!v) return std::nullopt;
  if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<int64_t>() >= 0))
    throw bad_request(join(path, key) + " must be a non-negative integer", join(path, key));
  return v->get<uint64_t>();
}

std::optional<std::vector<std::string>> get_string_list(const Json& o, std::string_view key,
                                                        std::string_view path) {
  const Json* v = find(o, key);
  if (!v) return std::nullopt;
  if (!v->is_array()) throw bad_request(join(path, key) + " must be a list of strings", join(path, key));
  std::vector<std::string> out;
  for (const auto& e : *v) {
    if (!e.is_string()) throw bad_request(join(path, key) + " must be a list of strings", join(path, key));
    out.push_back(e.get<std::string>());
  }
  return out;
}

std::optional<std::map<std::string, std::string>> get_string_map(const Json& o, std::string_view key,
                                                                 std::string_view path) {
  const Json* v = find(o, key);
  if (!v) return std::nullopt;
  if (!v->is_object()) throw bad_request(join(path, key) + " must be an object of strings", join(path, key));
  std::map<std::string, std::string> out;
  for (auto it = v->begin(); it != v->end(); ++it) {
    if (!it->is_string())
      throw bad_request(join(path, key) + "." + it.key() + " must be a string", join(path, key));
    out[it.key()] = it->get<std::string>();
  }
  return out;
}

std::optional<Duration> get_duration(const Json& o, std::string_view key, std::string_view path) {
  const Json* v = find(o, key);
  if (!v) return std::nullopt;
  if (v->is_number_integer()) return Duration(v->get<int64_t>());
  if (v->is_string()) {
    auto s = v->get<std::string>();
    if (s.empty()) return std::nullopt;
    if (auto d = parse_duration(s)) return d;
    throw bad_request(join(path, key) + ": invalid duration \"" + s + "\" (examples: 500ms, 10s, 1m30s)",
                      join(path, key));
  }
  throw bad_request(join(path, key) + " must be a duration string such as \"10s\"", join(path, key));
}

}  // namespace flotilla::json
