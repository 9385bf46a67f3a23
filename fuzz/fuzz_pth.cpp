// PyTorch .pth reader (engine/pth.cpp, hr::io::PthReader): the zip container (local and central
// headers, zip64, stored entries) and the restricted unpickler (opcodes, allow-listed globals,
// persistent ids, storages, strides). Input through a temp file; every tensor's bytes are read.
#include "engine/checkpoint_io.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = hr_fuzz::write_input(data, size, "in.pth");
  HR_FUZZ_EXPECT_ERRORS({
    hr::io::PthReader r(path);
    unsigned sum = 0;
    for (const auto& t : r.tensors()) {
      if (t.nbytes) sum += t.data[0] + t.data[t.nbytes - 1];
      (void)r.find(t.name);
      (void)t.numel();
    }
    sum += r.state_dict_key().size();
    volatile unsigned sink = sum;
    (void)sink;
  })
  return 0;
}
