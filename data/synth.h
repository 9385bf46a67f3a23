// The built-in synthetic pose dataset (hrnet-synth): a COCO 2017 layout (images/train2017,
// images/val2017, annotations/person_keypoints_{train2017,val2017}.json) of real JPEG files
// showing articulated human-like figures with the 17 COCO joints in plausible poses, varied in
// scale, rotation, colour and background texture, several per image, with occlusion and
// truncation marked in the visibility flags. Deterministic in the seed.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/coco.h"
#include "data/image.h"

namespace hr::data {

struct SynthOptions {
  int train_images = 2000, val_images = 200;
  int width = 320, height = 240;  // image size
  int max_people = 3;             // people per image: 1..max_people
  uint64_t seed = 1;
  int jpeg_quality = 92;
  int threads = 0;  // 0: hardware threads (output identical for any count)
};

// One image and its person annotations (ids filled by the caller's numbering).
struct SynthImage {
  Image image;
  std::vector<CocoPersonAnn> people;
  // Who is seen at each pixel (row-major, width * height): 0 background, i + 1 the visible
  // silhouette of people[i] (coverage >= 1/2, later-drawn on top), 255 an occluding object. The
  // annotations derive from it: area, bbox, and v = 2 where a joint's pixel is the person's own.
  std::vector<uint8_t> owner;
};
SynthImage render_synthetic_image(uint64_t seed, int width, int height, int max_people);

// The seed of image `index` (0-based over train then val) in a dataset made with `seed`:
// generate_synthetic_coco renders image i as render_synthetic_image(synthetic_image_seed(seed, i),
// ...) and names it with id i + 1.
uint64_t synthetic_image_seed(uint64_t seed, int64_t index);

// Writes the whole dataset under `out_dir` (created); the annotation files are written last and
// atomically, so a directory with both files is complete. Prints progress to stderr if `progress`.
void generate_synthetic_coco(const std::string& out_dir, const SynthOptions& opt, bool progress);

}  // namespace hr::data
