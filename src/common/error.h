// The one error type the API layers throw for bad input: an HTTP status, a message a person can
// act on, and the offending field when there is one. Rendered as {"error": "...", "field": "..."}.
#pragma once

#include <stdexcept>
#include <string>

namespace flotilla {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string field = {})
      : std::runtime_error(message), status_(status), field_(std::move(field)) {}
  int status() const { return status_; }
  const std::string& field() const { return field_; }

 private:
  int status_;
  std::string field_;
};

inline ApiError bad_request(std::string message, std::string field = {}) {
  return ApiError(400, std::move(message), std::move(field));
}

}  // namespace flotilla
