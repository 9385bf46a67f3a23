// Segmentation list files (data/segmentation.cpp read_seg_list): "image label" or "image" lines,
// blank lines, spaces/tabs, mixed labelled/unlabelled lists. Input through a temp file.
#include "data/segmentation.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  hr_fuzz::write_input(data, size, "list.lst");
  HR_FUZZ_EXPECT_ERRORS({
    const hr::data::SegList l = hr::data::read_seg_list(hr_fuzz::scratch_dir(), "list.lst");
    size_t n = 0;
    for (const auto& it : l.items) n += it.image.size() + it.label.size() + it.name.size();
    volatile size_t sink = n;
    (void)sink;
  })
  return 0;
}
