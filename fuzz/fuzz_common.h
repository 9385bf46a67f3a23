// Shared by the libFuzzer harnesses (fuzz/fuzz_*.cpp). A harness feeds the input to one parser;
// hr::Error is the expected outcome of a bad file (caught); anything else (a crash, another
// exception escaping LLVMFuzzerTestOneInput, an ASan/UBSan report) is a finding.
#pragma once
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/error.h"

namespace hr_fuzz {

// A per-process scratch directory ($TMPDIR or /tmp, hr_fuzz.<pid>): parsers that only read
// from a path get the input through a file in it, rewritten on every run.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* t = std::getenv("TMPDIR");
    std::string d = std::string(t && *t ? t : "/tmp") + "/hr_fuzz." + std::to_string(getpid());
    if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) std::abort();
    return d;
  }();
  return dir;
}

// Writes the input to scratch_dir()/name and returns the path.
inline std::string write_input(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = scratch_dir() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  if (std::fclose(f) != 0) std::abort();
  return path;
}

}  // namespace hr_fuzz

// The body runs with hr::Error caught; other exceptions propagate (libFuzzer reports them as a
// crash: "uncaught exception"), as do crashes and sanitizer reports.
#define HR_FUZZ_EXPECT_ERRORS(...) \
  try {                            \
    __VA_ARGS__                    \
  } catch (const hr::Error&) {     \
  }
