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

bool token_allows(const Request& req, const std::string& token, bool protect_reads, bool write) {
  if (token.empty()) return true;
  if (!write && !protect_reads) return true;
  const std::string* t = req.header("x-consul-token");
  std::string bearer;
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
  return t && constant_time_equal(*t, token);
}

}  // namespace flotilla::http
