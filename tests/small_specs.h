// Small HRNet configurations shared by the model tests: those of tools/gen_model_reference.py
// (small(head, tiny)), whose PyTorch reference data is committed under tests/data/.
#pragma once
#include <string>
#include <vector>

#include "models/config.h"

namespace hr::test {

// The small configurations of tools/gen_model_reference.py (small(head, tiny)).
inline models::ModelSpec small_spec(models::Head head, bool tiny) {
  using namespace hr::models;
  const std::vector<int64_t> w =
      tiny ? std::vector<int64_t>{2, 4, 6, 8} : std::vector<int64_t>{4, 8, 12, 16};
  models::ModelSpec s;
  s.name = std::string("small_") + head_name(head);
  s.head = head;
  s.stem_channels = tiny ? 8 : 16;
  s.stage1.block = Block::Bottleneck;
  s.stage1.num_blocks = {1};
  s.stage1.num_channels = {tiny ? 4 : 8};
  const int64_t modules[3] = {1, tiny ? 1 : 2, 1};
  for (int st = 0; st < 3; ++st) {
    s.stages[st].num_modules = modules[st];
    s.stages[st].block = Block::Basic;
    s.stages[st].num_blocks.assign(st + 2, 1);
    s.stages[st].num_channels.assign(w.begin(), w.begin() + st + 2);
  }
  s.fuse = head == Head::Seg ? FuseUpsample::Bilinear : FuseUpsample::Nearest;
  s.align_corners = false;
  s.num_joints = 17;
  s.final_conv_kernel = 1;
  if (head == Head::Seg) s.num_classes = 5;
  if (head == Head::Cls) {
    s.num_classes = 10;
    s.cls_head_channels = {2, 2, 4, 4};
    s.cls_features = 16;
  }
  // HRNet-FCOS: the towers' GroupNorm(32) needs 32 channels; three levels keep every level of a
  // 64x64 input larger than 1x1 (a 1x1 map normalised over one value per group has no gradient)
  if (head == Head::Det) {
    s.det_channels = 32;
    s.det_levels = 3;
    s.det_conv_stride = 2;
    s.fcos_num_convs = 1;
    s.num_classes = 3;
  }
  return s;
}

}  // namespace hr::test
