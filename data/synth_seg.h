// The built-in synthetic segmentation dataset (hrnet-synth --task seg) in the real Cityscapes
// layout: leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png (RGB PNG),
// gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png (8-bit grey PNG of Cityscapes
// label IDS, not train ids: the reader's mapping is exercised) and list/cityscapes/{train,val}.lst
// as the official lists are (image<TAB>label, relative to the root), so DATASET.ROOT = the output
// folder with the official TRAIN_SET / TEST_SET defaults reads it.
//
// Each image is a street seen from a car: sky, a road in perspective with lane marks, sidewalks
// with tiles, facades with windows along the street, and, in front, walls (bricks), fences
// (lattice), hedges and trees (vegetation), grass strips (terrain), poles with traffic lights and
// traffic signs, pedestrians (person), cyclists and motorcyclists (rider on bicycle / motorcycle),
// cars, trucks, buses and trams (train, on a rail bed). Every one of the 19 train classes has its
// own colour family and texture or shape; objects are sized by their depth with a minimum (poles
// at least 3 pixels wide at 256x128). Void ids are present too: the ego vehicle's bonnet (1),
// static clutter boxes (4) and the rail bed (10), all ignored in training. Per-image colour jitter,
// value noise and sensor noise keep it from being trivial. Image k of a split features one of
// fifteen classes (k mod 15, in the order wall, fence, pole, traffic light, traffic sign, terrain,
// person, rider, car, truck, bus, train, motorcycle, bicycle, vegetation), so each is present in at
// least every fifteenth image (road, sidewalk, building and sky are in every image).
// Deterministic in the seed.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "data/image.h"

namespace hr::data {

struct SynthSegOptions {
  int train_images = 600, val_images = 100;
  int width = 256, height = 128;  // 2:1 as Cityscapes; any size from 64x32 to 4096x4096
  uint64_t seed = 1;
  int threads = 0;  // 0: hardware threads (output identical for any count)
};

struct SynthSegImage {
  Image image;   // RGB
  Image labels;  // 1 channel, Cityscapes label ids
};
// One street scene; `featured` (0..14, or -1 for none) is the class made sure to appear.
SynthSegImage render_synthetic_street(uint64_t seed, int width, int height, int featured);

// The seed of image `index` of split 0 (train) or 1 (val) in a dataset made with `seed`.
uint64_t synthetic_street_seed(uint64_t seed, int split, int64_t index);

// The relative paths of image `index` of a split: {image, label}, as the list files give them.
std::array<std::string, 2> synthetic_street_paths(int split, int64_t index, int64_t count);

// Writes the dataset under out_dir (created): images and labels, then list/cityscapes/train.lst
// and val.lst last and atomically (a folder holding val.lst is complete). Images of an earlier,
// larger run in the synthetic cities' folders are removed. Progress on stderr if `progress`.
void generate_synthetic_cityscapes(const std::string& out_dir, const SynthSegOptions& opt,
                                   bool progress);

}  // namespace hr::data
