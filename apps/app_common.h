// What the hrnet-* programs share: the usage-error type, the one-line error rule and the main()
// wrapper that applies it (bad arguments exit 2, any other error 1, each with one line on stderr).
#pragma once
#include <cstdio>
#include <exception>
#include <string>

#include "engine/error.h"

namespace hr::apps {

struct UsageError : Error {
  using Error::Error;
};

// Errors are printed on one line: embedded newlines become "; ".
inline std::string one_line(std::string m) {
  for (auto& c : m)
    if (c == '\n') c = ';';
  return m;
}

// Runs body() and maps exceptions to the exit codes: "<name>: <message><usage_tail>" for a
// UsageError (exit 2), "<name>: <message>\n" for anything else (exit 1).
template <class Body>
int app_main(const char* name, const std::string& usage_tail, Body&& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s%s", name, one_line(e.what()).c_str(), usage_tail.c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", name, one_line(e.what()).c_str());
    return 1;
  }
}

}  // namespace hr::apps
