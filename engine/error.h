// Errors. Library code throws hr::Error (a std::runtime_error) whose message names the op or the
// file; apps catch it in main, print the one line and exit non-zero.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace hr {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <class T, class... R>
void format_into(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  format_into(os, rest...);
}
}  // namespace detail

// Concatenate the arguments into a string with operator<<.
template <class... A>
std::string str_cat(const A&... a) {
  std::ostringstream os;
  detail::format_into(os, a...);
  return os.str();
}

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace hr

// HR_CHECK(cond, "op: message ", value, ...) throws hr::Error with the concatenated message.
#define HR_CHECK(cond, ...)                                   \
  do {                                                        \
    if (!(cond)) throw ::hr::Error(::hr::str_cat(__VA_ARGS__)); \
  } while (0)
