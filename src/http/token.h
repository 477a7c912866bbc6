// The agent's one access rule, for every API that serves on its address (Consul's endpoints, the
// supervisor's, the gateway's admin view): with a token set, writes — and reads too when reads
// are protected — must present it as X-Consul-Token, `Authorization: Bearer`, or ?token=.
#pragma once

#include <string>

#include "http/message.h"

namespace flotilla::http {

// True when `request` may do what it asks. An empty token allows everything (loopback only);
// otherwise a request that presents a token must present this one, even for an open read.
bool token_allows(const Request& request, const std::string& token, bool protect_reads, bool write);
// The 403 message for a request token_allows refused: a wrong token is not a missing one.
std::string token_refusal(const Request& request, bool write);

}  // namespace flotilla::http
