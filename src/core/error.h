// Errors a user can cause end in one mamba::Error whose message names the file, tensor or
// option involved and what was expected. Programming errors use the same type, so the
// command-line tool can always print one line and exit non-zero instead of crashing.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mamba {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}
}  // namespace detail

// fail("tensor ", name, ": expected ", n, " rows") throws mamba::Error with the joined text.
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  throw Error(detail::concat(parts...));
}

}  // namespace mamba

// MAMBA_CHECK(cond, parts...) throws mamba::Error(parts...) when cond is false.
#define MAMBA_CHECK(cond, ...)          \
  do {                                  \
    if (!(cond)) ::mamba::fail(__VA_ARGS__); \
  } while (0)
