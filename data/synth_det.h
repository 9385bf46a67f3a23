// The built-in synthetic detection dataset in the COCO 2017 instances layout that HRNet-FCOS
// (maskrcnn-benchmark's paths_catalog) reads: train2017/<id:012>.jpg, val2017/<id:012>.jpg and
// annotations/instances_{train2017,val2017}.json, with five real COCO categories drawn so that
// each is recognisable: person (1, the articulated figures of the pose dataset, data/synth.cpp),
// car (3, side views with wheels and windows), stop sign (13, a red octagon with a white rim and
// letters, on a pole that is not part of the box), sports ball (37, soccer, basket or tennis
// balls) and kite (38, a two-coloured diamond with spars and a tail with bows). Up to
// max_objects per image (some images have none), from ~16 pixels to most of the image, some
// overlapping or cut by the border, over the pose dataset's textured backgrounds with clutter
// and sensor noise. Boxes and areas come from the pixels each object owns in the final picture
// (coverage >= 1/2, later objects on top): bbox [x0, y0, x1 - x0 + 1, y1 - y0 + 1] of its visible
// pixels, area their count. Deterministic in the seed whatever the thread count.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/boxes.h"
#include "data/image.h"

namespace hr::data {

struct SynthDetOptions {
  int train_images = 1000, val_images = 200;
  int width = 320, height = 256;  // any size from 64x64 to 4096x4096
  int max_objects = 6;            // per image: 0 (one image in sixteen) or 1..max_objects
  uint64_t seed = 1;
  int jpeg_quality = 92;
  int threads = 0;  // 0: hardware threads (output identical for any count)
};

// The five categories, ascending ids (person 1, car 3, stop sign 13, sports ball 37, kite 38),
// with their COCO names and supercategories.
const std::vector<CocoCategory>& synthetic_detection_categories();

struct SynthDetObject {
  int64_t category_id = 0;
  std::array<double, 4> bbox{};  // x, y, w, h of the visible pixels
  double area = 0;               // visible pixels
};
struct SynthDetImage {
  Image image;                          // RGB
  std::vector<SynthDetObject> objects;  // drawing order
  // Who is seen at each pixel (row-major): 0 background, i + 1 objects[i], 255 a part that
  // belongs to no object (a stop sign's pole).
  std::vector<uint8_t> owner;
  Image background;  // the picture before any object (with keep_background only)
};
SynthDetImage render_synthetic_detection(uint64_t seed, int width, int height, int max_objects,
                                         bool keep_background = false);

// The seed of image `index` (0-based over train then val; image id index + 1) in a dataset made
// with `seed`.
uint64_t synthetic_detection_seed(uint64_t seed, int64_t index);

// Writes the dataset under out_dir (created): the images (JPEG, atomically), then the two
// annotation files last and atomically (a folder holding both is complete; earlier ones are
// removed first). Progress on stderr if `progress`.
void generate_synthetic_detection(const std::string& out_dir, const SynthDetOptions& opt,
                                  bool progress = false);

}  // namespace hr::data
