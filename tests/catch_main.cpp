// Catch2 main shared by all test executables. Executables whose name starts with "test_cuda"
// (the gpu label) exit 77 -- "skipped" for ctest -- when no CUDA device is usable.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstring>

#include "kernels/cuda/cuda_kernels.h"

int main(int argc, char** argv) {
  const char* exe = std::strrchr(argv[0], '/');
  exe = exe ? exe + 1 : argv[0];
  if (std::strncmp(exe, "test_cuda", 9) == 0 && !hr::cuda::available()) {
    std::printf("SKIPPED: %s needs a CUDA device and none is usable here\n", exe);
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
