// Feeds arbitrary bytes to every decoder of registration, check, session and KV requests.
// Each must either return a record or throw ApiError with a 4xx status; anything else (another
// exception, a crash, a sanitizer report) is a bug. The first byte picks the decoder.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "registry/api/decode.h"

using namespace flotilla;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view input(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    switch (data[0] % 6) {
      case 0: {
        auto r = registry::api::decode_service_registration(input);
        if (r.service.name.empty() || r.service.id.empty()) std::abort();
        for (auto& c : r.checks)
          if (c.id.empty() || c.kind.empty()) std::abort();
        break;
      }
      case 1:
        registry::api::decode_check_registration(input);
        break;
      case 2:
        registry::api::decode_session_create(input);
        break;
      case 3:
        registry::api::decode_check_update(input);
        break;
      case 4: {
        // A KV PUT: the target (key and query) up to the first newline, the body after it.
        auto nl = input.find('\n');
        http::Request req;
        req.method = "PUT";
        req.target = std::string(input.substr(0, nl));
        if (!http::parse_target(req.target, req.path, req.query)) break;
        if (nl != std::string_view::npos) req.body = std::string(input.substr(nl + 1));
        registry::api::decode_kv_put(req.path, req);
        break;
      }
      case 5: {
        // The stored forms must round-trip whatever a registration decoded to.
        auto r = registry::api::decode_service_registration(input);
        auto back = registry::decode_service(registry::encode(r.service));
        if (!(back == r.service)) std::abort();
        for (auto& c : r.checks) {
          auto cb = registry::decode_check(registry::encode(c));
          if (!(cb.definition == c.definition) || cb.id != c.id) std::abort();
        }
        break;
      }
    }
  } catch (const ApiError& e) {
    if (e.status() < 400 || e.status() >= 500) std::abort();
  }
  return 0;
}
