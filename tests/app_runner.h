// Running the hrnet-* programs from the tests as a user would: a shell command line, with stdout
// and stderr captured to files (removed afterwards) and the exit code.
#pragma once
#include <sys/wait.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "test_util.h"

namespace hr::test {

struct Run {
  int code;  // exit status, -1 when the program did not exit normally
  std::string out, err;
};

// Runs `exe args`; `scratch` is a path prefix for the capture files.
inline Run run_program(const std::string& exe, const std::string& args,
                       const std::string& scratch) {
  const std::string out = scratch + "_stdout.txt", err = scratch + "_stderr.txt";
  const int rc = std::system((exe + " " + args + " >" + out + " 2>" + err).c_str());
  Run r{WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, slurp(out), slurp(err)};
  std::remove(out.c_str());
  std::remove(err.c_str());
  return r;
}

// "key":number from a JSON line (metrics.jsonl); the key must be there.
inline double json_number(const std::string& line, const std::string& key) {
  const std::string k = "\"" + key + "\":";
  const size_t at = line.find(k);
  INFO("no " << k << " in " << line);
  REQUIRE(at != std::string::npos);
  return std::strtod(line.c_str() + at + k.size(), nullptr);
}

}  // namespace hr::test
