// COCO annotation files: data/coco.cpp load_coco_keypoints (person_keypoints_*.json and
// instances_*.json alike: other categories are dropped, segmentations skipped) and data/boxes.cpp
// load_coco_instances (every category, the contiguous labels), each then index()ed (duplicate
// ids, annotations of unknown images or categories). Input through a temp file.
#include "data/boxes.h"
#include "data/coco.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = hr_fuzz::write_input(data, size, "annotations.json");
  HR_FUZZ_EXPECT_ERRORS({
    hr::data::CocoKeypoints c = hr::data::load_coco_keypoints(path);
    c.index();
  })
  HR_FUZZ_EXPECT_ERRORS({ (void)hr::data::load_coco_instances(path); })
  return 0;
}
