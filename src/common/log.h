// Logging: spdlog to stderr. One call at start-up; everything else uses spdlog's free functions.
#pragma once

#include <string>

namespace flotilla {

// level: trace|debug|info|warn|error. Returns false for an unknown level.
bool init_logging(const std::string& level);

}  // namespace flotilla
