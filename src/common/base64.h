// Standard base64 (RFC 4648, with padding), as Consul uses for KV values.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace flotilla {

std::string base64_encode(std::string_view bytes);
// Accepts padded or unpadded input; returns nullopt for any other character.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace flotilla
