// safetensors reader (engine/safetensors.cpp, hr::io::SafetensorsReader): header JSON, dtypes,
// shapes, offsets, metadata. The reader maps a file, so the input goes through a temp file; every
// tensor's bytes are then read (ASan catches a view that points outside the mapping).
#include "engine/checkpoint_io.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = hr_fuzz::write_input(data, size, "in.safetensors");
  HR_FUZZ_EXPECT_ERRORS({
    hr::io::SafetensorsReader r(path);
    unsigned sum = 0;
    for (const auto& t : r.tensors()) {
      if (t.nbytes) sum += t.data[0] + t.data[t.nbytes - 1];
      (void)r.find(t.name);
      (void)t.numel();
    }
    for (const auto& kv : r.metadata()) sum += kv.first.size() + kv.second.size();
    (void)r.find("");
    volatile unsigned sink = sum;
    (void)sink;
  })
  return 0;
}
