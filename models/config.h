// HRNet experiment configs: the official YAML files (pose, seg and cls repositories) as a
// generic key->value tree with yacs-style checked overrides, and the model description
// (ModelSpec) read from that tree or from a built-in variant name.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace hr::models {

// ---------------------------------------------------------------------------------------------
// Generic config tree
// ---------------------------------------------------------------------------------------------

// One value of the tree. Scalars are typed the way yacs sees them after YAML loading and
// literal_eval: "(0,1,2,3)" is a list of ints, "1e-3" a float, quoted text a string.
struct CfgNode {
  enum class Kind { Null, Bool, Int, Float, Str, List, Map };
  Kind kind = Kind::Null;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<CfgNode> items;                            // List
  std::vector<std::pair<std::string, CfgNode>> entries;  // Map, in file order
  bool new_allowed = false;  // Map: merging may add keys absent here (yacs new_allowed)

  const CfgNode* find(const std::string& key) const;  // direct child of a Map
  CfgNode* find(const std::string& key);
  std::string str() const;  // flow-style text ("[1, 2]", "0.001", "'abc'")
};

const char* kind_name(CfgNode::Kind k);

// Parses one value the way yacs decodes it (YAML 1.1 scalar, then Python literal): used for
// override values; `quoted` text is a string unless it reads as a Python literal.
CfgNode parse_value(const std::string& text, bool quoted = false);

class Config {
 public:
  Config() { root_.kind = CfgNode::Kind::Map; }

  // The pose repository's default config (lib/config/default.py): every key it defines, with
  // MODEL.EXTRA open to new keys. Pose files merge into it and are checked against it.
  static Config pose_defaults();
  // Reads an experiment file. MODEL.NAME picks the family: seg_* and cls_* files are kept as
  // written (their repositories' default tables are not reproduced); anything else is a pose
  // file, merged into pose_defaults() with yacs's checks (unknown keys outside MODEL.EXTRA and
  // type mismatches are errors naming the file and the key).
  static Config load(const std::string& path);
  static Config from_yaml(const std::string& text, const std::string& source = "<yaml>");

  const std::string& source() const { return source_; }
  const CfgNode& root() const { return root_; }

  bool has(const std::string& key) const;           // dotted key, "MODEL.EXTRA.STAGE2"
  const CfgNode& at(const std::string& key) const;  // throws "[config] <source>: missing KEY"
  const CfgNode* find(const std::string& key) const;

  // Typed reads; errors name the source and the key. An int is accepted where a float is read.
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  std::string get_str(const std::string& key) const;
  std::vector<int64_t> get_int_list(const std::string& key) const;
  std::vector<double> get_float_list(const std::string& key) const;
  std::vector<std::string> get_str_list(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_float(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_str(const std::string& key, const std::string& fallback) const;

  // yacs merge_from_list: the key must already exist (after the file merge, so keys under
  // MODEL.EXTRA that the file wrote can be set, new ones cannot); the value is decoded with
  // parse_value and must have the existing value's type (int into float is allowed; null
  // either way, as yacs allows).
  void set(const std::string& key, const std::string& value);
  void merge_from_list(const std::vector<std::string>& key_value_pairs);
  // yacs merge_from_file semantics onto this tree (checked against what is already there).
  void merge_yaml(const std::string& text, const std::string& source);

  std::string dump() const;  // block-style YAML of the whole tree

 private:
  CfgNode root_;
  std::string source_ = "<defaults>";
};

// ---------------------------------------------------------------------------------------------
// Model description
// ---------------------------------------------------------------------------------------------

enum class Block { Basic, Bottleneck };
enum class Head { Pose, Seg, Det, Cls };
enum class FuseUpsample { Nearest, Bilinear };

const char* head_name(Head h);
Head parse_head(const std::string& name);  // pose | seg | det | cls

struct StageSpec {
  int64_t num_modules = 1;
  Block block = Block::Basic;
  std::vector<int64_t> num_blocks;    // per branch
  std::vector<int64_t> num_channels;  // per branch, before block expansion
  int64_t num_branches() const { return static_cast<int64_t>(num_channels.size()); }
};

struct ModelSpec {
  std::string name;  // built-in name or the experiment file's name
  Head head = Head::Pose;
  int64_t stem_channels = 64;                 // conv1/conv2 width (64 in every official model)
  StageSpec stage1;                           // one branch: layer1 (planes = num_channels[0])
  std::array<StageSpec, 3> stages;            // stage2..stage4
  FuseUpsample fuse = FuseUpsample::Nearest;  // j > i fuse upsampling (seg: bilinear)
  bool align_corners = false;                 // bilinear fuse and seg/det head upsampling
  // pose: final_layer on branch 0; seg: last_layer's final conv kernel
  int64_t num_joints = 17;
  int64_t final_conv_kernel = 1;
  int64_t num_classes = 1000;  // seg: DATASET.NUM_CLASSES, cls: classifier outputs
  std::vector<int64_t> cls_head_channels = {32, 64, 128, 256};  // incre_modules planes
  int64_t cls_features = 2048;                                  // final_layer width
  // seg: the OCR head (MODEL.NAME seg_hrnet_ocr: aux_head, conv3x3_ocr, ocr_gather_head,
  // ocr_distri_head, cls_head) instead of last_layer; MODEL.OCR.{MID,KEY}_CHANNELS, DROPOUT
  // (the official code fixes the dropout at 0.05, the key's default)
  bool ocr = false;
  int64_t ocr_mid_channels = 512;
  int64_t ocr_key_channels = 256;
  double ocr_dropout = 0.05;
  int64_t num_outputs = 1;  // MODEL.NUM_OUTPUTS: the outputs forward_all gives (OCR: 2)
  // det: HRNet-FCOS (HRNetV2p's HRFPN neck + the FCOS head). num_classes is the number of
  // foreground classes (MODEL.FCOS.NUM_CLASSES - 1: the official count includes the background).
  int64_t det_channels = 256;   // MODEL.HRNET.FPN.OUT_CHANNEL: reduction conv width
  int64_t det_levels = 5;       // len(MODEL.FCOS.FPN_STRIDES)
  int64_t det_conv_stride = 2;  // MODEL.HRNET.FPN.CONV_STRIDE of the pyramid's 3x3 convs
  int64_t fcos_num_convs = 4;   // MODEL.FCOS.NUM_CONVS: conv + GroupNorm(32) + ReLU per tower
  double fcos_prior_prob = 0.01;  // MODEL.FCOS.PRIOR_PROB: the classifier's initial bias
  // Backbone batch norm kept in inference mode while training (running statistics used and
  // not updated; affine parameters still trained): HRNet-FCOS's HighResolutionNet(norm_eval=
  // True). Engine key MODEL.HRNET.NORM_EVAL (True when absent) turns it off for training from
  // scratch.
  bool norm_eval = false;
  // det: the stride of pyramid level l (4 * 2^l * det_conv_stride).
  int64_t det_stride(int64_t l) const { return (int64_t(4) << l) * det_conv_stride; }
  // From the experiment file; zero / empty when unknown.
  std::array<int64_t, 2> image_size{0, 0};    // [W, H] as the configs write it
  std::array<int64_t, 2> heatmap_size{0, 0};  // [W, H]
  std::vector<std::string> pretrained_layers;

  // The pose head's last module builds only output 0 (multi_scale_output false).
  bool last_module_single_output() const { return head == Head::Pose; }
  // Throws hr::Error naming `where` and the field on any inconsistency.
  void validate(const std::string& where) const;
};

// Reads the model fields of an experiment config. Required keys are those the official code
// reads unconditionally (MODEL.EXTRA.STAGE{2,3,4}.{NUM_MODULES,NUM_BRANCHES,BLOCK,NUM_BLOCKS,
// NUM_CHANNELS,FUSE_METHOD}, FINAL_CONV_KERNEL, pose PRETRAINED_LAYERS, seg/cls STAGE1);
// everything else keeps the repository's default. Errors name the file and the field.
ModelSpec spec_from_config(const Config& cfg);

// Built-in variants: w18_small_v1, w18_small_v2, w18, w30, w32, w40, w44, w48, w64 (cls
// repository's rows; pose/seg/det use the same backbone rows). "pose_w32", "seg_w48",
// "cls_w18_small_v2" and "w32:pose" forms are accepted by builtin_spec(name).
ModelSpec builtin_spec(const std::string& variant, Head head);
ModelSpec builtin_spec(const std::string& qualified_name);
std::vector<std::string> builtin_variants();

// Input size the config trains/tests at, as [H, W] (pose/cls MODEL.IMAGE_SIZE, seg
// TEST.IMAGE_SIZE); {0,0} when the config does not say.
std::array<int64_t, 2> config_input_hw(const Config& cfg);

}  // namespace hr::models
