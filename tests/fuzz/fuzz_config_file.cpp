// Feeds arbitrary text to the flotilla.yaml parser, as `flotilla up` and the standalone
// `flotilla gateway` read it, and to the warnings it gives. Each must either return or throw
// ConfigError (a message with FILE:LINE:COL); anything else (another exception, a crash, a
// sanitizer report) is a bug: a typo in a file must never crash the agent.
#include <cstdint>
#include <string>

#include "config/flotilla_file.h"

using namespace flotilla;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (auto use : {config::Use::agent, config::Use::gateway_alone}) {
    try {
      auto file = config::parse(text, "/nonexistent/flotilla.yaml", use);
      config::warnings(file);
    } catch (const config::ConfigError&) {
    }
  }
  return 0;
}
