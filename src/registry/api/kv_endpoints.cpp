// /v1/kv/<key>: Consul's key/value API with CAS, recursive reads and deletes, and locks.
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "registry/api/decode.h"
#include "registry/api/encode.h"
#include "registry/api/endpoints.h"

namespace flotilla::registry::api {

namespace {

QueryResult not_found(uint64_t index) {
  QueryResult q;
  q.status = 404;
  q.index = index;
  q.content_type.clear();
  return q;
}

void kv_get(Context& ctx, const ExchangePtr& ex, const std::string& key) {
  const auto& req = ex->request();
  bool recurse = bool_param(req, "recurse", false);
  bool keys = req.has_param("keys");
  bool raw = bool_param(req, "raw", false);
  validate_kv_key(key, recurse || keys);
  std::string separator = req.param("separator") ? *req.param("separator") : "";
  bool prefix = recurse || keys;
  std::string topic = (prefix ? "kvp:" : "kv:") + key;
  serve_read(ctx, ex, {topic}, [&ctx, key, recurse, keys, raw, separator, prefix] {
    const auto& st = ctx.registry.state();
    uint64_t index = st.kv_index(key, prefix);
    const auto& kv = st.kv();
    if (keys) {
      json out = json::array();
      std::string last;
      for (auto it = kv.lower_bound(key); it != kv.end() && it->first.compare(0, key.size(), key) == 0; ++it) {
        std::string k = it->first;
        if (!separator.empty()) {
          auto pos = k.find(separator, key.size());
          if (pos != std::string::npos) k = k.substr(0, pos + separator.size());
        }
        if (k == last) continue;
        last = k;
        out.push_back(k);
      }
      if (out.empty()) return not_found(index);
      return json_result(out, index);
    }
    if (recurse) {
      json out = json::array();
      for (auto it = kv.lower_bound(key); it != kv.end() && it->first.compare(0, key.size(), key) == 0; ++it)
        out.push_back(encode_kv(it->second));
      if (out.empty()) return not_found(index);
      return json_result(out, index);
    }
    const KvEntry* e = st.kv_entry(key);
    if (!e) return not_found(index);
    if (raw) {
      QueryResult q;
      q.body = e->value;
      q.index = index;
      q.content_type = "application/octet-stream";
      return q;
    }
    return json_result(json::array({encode_kv(*e)}), index);
  });
}

void kv_put(Context& ctx, const ExchangePtr& ex, const std::string& key) {
  auto put = decode_kv_put(key, ex->request());
  ctx.registry.kv_put(std::move(put), [ex](const WriteResult& r) { answer_write(ex, r, r.applied ? "true" : "false"); });
}

void kv_delete(Context& ctx, const ExchangePtr& ex, const std::string& key) {
  const auto& req = ex->request();
  bool recurse = bool_param(req, "recurse", false);
  validate_kv_key(key, recurse);
  auto cas = uint_param(req, "cas");
  if (recurse && cas) throw bad_request("cas cannot be used with recurse", "cas");
  ctx.registry.kv_delete(key, recurse, cas,
                         [ex](const WriteResult& r) { answer_write(ex, r, r.applied ? "true" : "false"); });
}

}  // namespace

void add_kv_routes(std::vector<Route>& r) {
  r.push_back({"GET", "/v1/kv/", true, kv_get});
  r.push_back({"PUT", "/v1/kv/", true, kv_put});
  r.push_back({"DELETE", "/v1/kv/", true, kv_delete});
}

}  // namespace flotilla::registry::api
