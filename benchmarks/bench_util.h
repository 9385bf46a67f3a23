// Shared by the benchmarks that run a PyTorch peer in the same run.
#pragma once
#include <cstdlib>
#include <string>

namespace hr::bench {

inline bool python_has_torch(const std::string& py) {
  const std::string cmd = py + " -c \"import torch\" >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// The command that runs the PyTorch peer: $HR_PYTHON, else the first of python3 and
// /usr/bin/python3 (Debian's python3-torch) that imports torch; "" when none does. The peer runs
// with its own default settings: our OMP_WAIT_POLICY=PASSIVE (scripts/test.sh) would slow
// oneDNN's threads by a third, so it is taken out of the peer's environment.
inline std::string torch_python() {
  const std::string env = "env -u OMP_WAIT_POLICY ";
  if (const char* e = std::getenv("HR_PYTHON"))
    return python_has_torch(env + e) ? env + e : "";
  for (const char* cand : {"python3", "/usr/bin/python3"})
    if (python_has_torch(env + cand)) return env + cand;
  return "";
}

}  // namespace hr::bench
