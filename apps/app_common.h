// What the hrnet-* programs share: the usage-error type, the one-line error rule and the main()
// wrapper that applies it (bad arguments exit 2, any other error 1, each with one line on stderr).
#pragma once
#include <cstdio>
#include <exception>
#include <string>

#include "engine/dist.h"
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
// UsageError (exit 2), "<name>: <message>\n" for anything else (exit 1). In a data-parallel job
// (engine/dist.h) an error on one rank ends every rank of the job at once (the others would wait
// for it in their next collective), and a normal return ends MPI.
template <class Body>
int app_main(const char* name, const std::string& usage_tail, Body&& body) {
  try {
    const int rc = body();
    dist::finalize();
    return rc;
  } catch (const UsageError& e) {
    if (dist::distributed()) dist::abort_job(str_cat(name, ": ", one_line(e.what())));
    std::fprintf(stderr, "%s: %s%s", name, one_line(e.what()).c_str(), usage_tail.c_str());
    return 2;
  } catch (const std::exception& e) {
    if (dist::distributed()) dist::abort_job(str_cat(name, ": ", one_line(e.what())));
    std::fprintf(stderr, "%s: %s\n", name, one_line(e.what()).c_str());
    return 1;
  }
}

}  // namespace hr::apps
