// What segmentation datasets name and colour their classes: the 19 Cityscapes train ids (names
// and colours of cityscapesScripts' labels.py, the class weights of the official
// HRNet-Semantic-Segmentation cityscapes.py), and the official get_palette() colours for datasets
// without a palette of their own (PASCAL-Context, LIP).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace hr::data {

struct SegClass {
  const char* name;
  uint8_t r, g, b;
};

// Train ids 0..18 in order.
inline constexpr std::array<SegClass, 19> kCityscapesClasses{{
    {"road", 128, 64, 128},      {"sidewalk", 244, 35, 232}, {"building", 70, 70, 70},
    {"wall", 102, 102, 156},     {"fence", 190, 153, 153},   {"pole", 153, 153, 153},
    {"traffic light", 250, 170, 30}, {"traffic sign", 220, 220, 0},
    {"vegetation", 107, 142, 35}, {"terrain", 152, 251, 152}, {"sky", 70, 130, 180},
    {"person", 220, 20, 60},     {"rider", 255, 0, 0},       {"car", 0, 0, 142},
    {"truck", 0, 0, 70},         {"bus", 0, 60, 100},        {"train", 0, 80, 100},
    {"motorcycle", 0, 0, 230},   {"bicycle", 119, 11, 32},
}};

// The official cross-entropy class weights for the 19 train ids (cityscapes.py class_weights).
inline constexpr std::array<float, 19> kCityscapesClassWeights{
    0.8373f, 0.918f,  0.866f,  1.0345f, 1.0166f, 0.9969f, 0.9754f, 1.0489f, 0.8786f, 1.0023f,
    0.9539f, 0.9843f, 1.1116f, 0.9037f, 1.0865f, 1.0955f, 1.0865f, 1.1529f, 1.0507f};

// The official get_palette(n) colour of class j (the PASCAL VOC bit pattern).
inline std::array<uint8_t, 3> voc_palette_colour(int j) {
  std::array<uint8_t, 3> c{0, 0, 0};
  for (int i = 0, lab = j; lab; ++i, lab >>= 3) {
    c[0] |= static_cast<uint8_t>(((lab >> 0) & 1) << (7 - i));
    c[1] |= static_cast<uint8_t>(((lab >> 1) & 1) << (7 - i));
    c[2] |= static_cast<uint8_t>(((lab >> 2) & 1) << (7 - i));
  }
  return c;
}

// Names and colours of a dataset's classes: Cityscapes' own for "cityscapes" with 19 classes,
// else "class <k>" and the official palette.
struct SegClassTable {
  std::vector<std::string> names;
  std::vector<std::array<uint8_t, 3>> colours;
};
inline SegClassTable seg_class_table(const std::string& dataset, int64_t classes) {
  SegClassTable t;
  const bool cs = dataset == "cityscapes" && classes == 19;
  for (int64_t k = 0; k < classes; ++k) {
    if (cs) {
      const SegClass& c = kCityscapesClasses[static_cast<size_t>(k)];
      t.names.emplace_back(c.name);
      t.colours.push_back({c.r, c.g, c.b});
    } else {
      t.names.push_back("class " + std::to_string(k));
      t.colours.push_back(voc_palette_colour(static_cast<int>(k)));
    }
  }
  return t;
}

}  // namespace hr::data
