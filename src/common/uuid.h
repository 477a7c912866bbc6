#pragma once
#include <string>
namespace flotilla {
// A random (version 4) UUID in its canonical 36-character form.
std::string make_uuid();
}  // namespace flotilla
