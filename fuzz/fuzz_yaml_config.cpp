// Experiment configs (models/config.cpp): the YAML text through models::Config::from_yaml (yaml-cpp
// plus the yacs decoding and merge/type checks), then what a run does with a config: the model
// description (spec_from_config + validate), the input size, the dump and a re-parse of it.
#include "fuzz_common.h"
#include "models/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  HR_FUZZ_EXPECT_ERRORS({
    const hr::models::Config c = hr::models::Config::from_yaml(text, "fuzz.yaml");
    const std::string dumped = c.dump();
    HR_FUZZ_EXPECT_ERRORS({ (void)hr::models::Config::from_yaml(dumped, "fuzz-dump.yaml"); })
    HR_FUZZ_EXPECT_ERRORS({ (void)hr::models::config_input_hw(c); })
    HR_FUZZ_EXPECT_ERRORS({
      const hr::models::ModelSpec s = hr::models::spec_from_config(c);
      s.validate("fuzz.yaml");
    })
  })
  return 0;
}
