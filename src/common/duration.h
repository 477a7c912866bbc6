// Durations as users write them: Go's syntax ("250ms", "10s", "1m30s", "1.5h"), which is
// what Consul's API and docker-compose files use.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace flotilla {

using Duration = std::chrono::nanoseconds;

// Parses "300ms", "-1.5h", "2h45m", "0". Units: ns, us (µs), ms, s, m, h. A bare number other
// than 0 is rejected: "10" is ambiguous, and Consul rejects it too. Returns nullopt on error.
std::optional<Duration> parse_duration(std::string_view text);

// Formats like Go's time.Duration.String(): "1m30s", "250ms", "0s".
std::string format_duration(Duration d);

}  // namespace flotilla
