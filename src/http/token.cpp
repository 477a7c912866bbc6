#include "http/token.h"

#include <strings.h>

namespace flotilla::http {

namespace {
// Compares without an early exit, so the time taken says nothing about where a guess went wrong.
bool constant_time_equal(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}
}  // namespace

namespace {
// The token the request presents (X-Consul-Token, Authorization: Bearer, ?token=), or null.
const std::string* presented(const Request& req, std::string& bearer) {
  const std::string* t = req.header("x-consul-token");
  if (!t) {
    // "<scheme> <value>", the scheme case-insensitive (RFC 9110 §11.1), the value trimmed: as
    // Consul reads it.
    if (const std::string* a = req.header("authorization"); a && a->size() > 7 && (*a)[6] == ' ' &&
                                                            strncasecmp(a->c_str(), "bearer", 6) == 0) {
      size_t b = a->find_first_not_of(' ', 7), e = a->find_last_not_of(' ');
      if (b != std::string::npos) bearer = a->substr(b, e - b + 1);
      t = &bearer;
    }
  }
  if (!t) t = req.param("token");
  // An empty token is none (Consul: anonymous), as `X-Consul-Token: $UNSET_VARIABLE` sends.
  return t && !t->empty() ? t : nullptr;
}
}  // namespace

bool token_allows(const Request& req, const std::string& token, bool protect_reads, bool write) {
  if (token.empty()) return true;
  std::string bearer;
  // A wrong token is refused even for an open read, as Consul refuses an unknown one ("ACL not
  // found"): a client (a gateway, a script) set up with a stale token learns it now, not the day
  // reads are protected.
  if (const std::string* t = presented(req, bearer)) return constant_time_equal(*t, token);
  return !write && !protect_reads;
}

std::string token_refusal(const Request& req, bool write) {
  std::string bearer;
  if (presented(req, bearer)) return "Permission denied: the token presented is not this agent's";
  return write ? "Permission denied: writes to this agent need its token (X-Consul-Token)"
               : "Permission denied: this agent needs a token for reads";
}

}  // namespace flotilla::http
