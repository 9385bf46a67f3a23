// COCO result files (data/coco.cpp): the keypoint results ([{image_id, category_id, keypoints[51],
// score}]), the person detection files ([{image_id, category_id, bbox[4], score}]) and box
// results (data/boxes.cpp load_box_results: every category); the same input goes to the three
// readers. Input through a temp file.
#include "data/boxes.h"
#include "data/coco.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = hr_fuzz::write_input(data, size, "results.json");
  HR_FUZZ_EXPECT_ERRORS({ (void)hr::data::load_keypoint_results(path); })
  HR_FUZZ_EXPECT_ERRORS({ (void)hr::data::load_detections(path); })
  HR_FUZZ_EXPECT_ERRORS({ (void)hr::data::load_box_results(path); })
  return 0;
}
