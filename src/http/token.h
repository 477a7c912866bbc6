// The agent's one access rule, for every API that serves on its address (Consul's endpoints, the
// supervisor's, the gateway's admin view): with a token set, writes — and reads too when reads
// are protected — must present it as X-Consul-Token, `Authorization: Bearer`, or ?token=.
#pragma once

#include <string>

#include "http/message.h"

namespace flotilla::http {

// True when `request` may do what it asks. An empty token allows everything (loopback only).
bool token_allows(const Request& request, const std::string& token, bool protect_reads, bool write);

}  // namespace flotilla::http
