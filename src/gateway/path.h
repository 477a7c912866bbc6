// Request-path normalisation for routing (the gateway issue's rule: `/api/../admin` can never match
// a route that `/admin` does not). Applied before matching; the normalised path is also what is
// forwarded, so the upstream sees exactly what was routed.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace flotilla::gateway {

// Normalises the path part of an origin-form target (no query):
// - percent-escapes of unreserved characters (A-Z a-z 0-9 - . _ ~) are decoded; other escapes keep
//   their meaning and are upper-cased (%2f -> %2F), so an encoded '/' never becomes a separator;
// - visible characters a URI cannot hold raw (" < > \ ^ ` { | }) are %-escaped, so that "/{id}"
//   (curl -g) and "/%7Bid%7D" (a browser) are one path;
// - runs of '/' become one;
// - "." and ".." segments are removed (RFC 3986 §5.2.4); ".." above the root stays at the root.
// Returns nullopt for a path that does not start with '/', a malformed escape, or an escape of a
// control character (%00-%1F, %7F).
std::optional<std::string> normalize_path(std::string_view path);

}  // namespace flotilla::gateway
