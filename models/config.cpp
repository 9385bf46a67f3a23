// Experiment configs: YAML (yaml-cpp) to a typed tree with yacs semantics, the pose
// repository's default table, and ModelSpec from a config or a built-in variant row.
#include "models/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>

#include "engine/error.h"

namespace hr::models {

namespace {

using Kind = CfgNode::Kind;

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::string base_name(const std::string& path) {
  size_t p = path.find_last_of('/');
  return p == std::string::npos ? path : path.substr(p + 1);
}

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : key) {
    if (c == '.') {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  parts.push_back(cur);
  return parts;
}

bool is_in(const std::string& s, std::initializer_list<const char*> set) {
  for (const char* x : set)
    if (s == x) return true;
  return false;
}

const std::regex& int_re() {
  static const std::regex r("[-+]?[0-9]+");
  return r;
}
const std::regex& float_re() {
  static const std::regex r(
      "[-+]?(([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+)");
  return r;
}

// Splits "a, [b, c], 'd,e'" at top-level commas.
std::vector<std::string> split_items(const std::string& body) {
  std::vector<std::string> out;
  std::string cur;
  int depth = 0;
  char quote = 0;
  for (char c : body) {
    if (quote) {
      if (c == quote) quote = 0;
      cur += c;
      continue;
    }
    if (c == '\'' || c == '"') quote = c;
    if (c == '[' || c == '(' || c == '{') ++depth;
    if (c == ']' || c == ')' || c == '}') --depth;
    if (c == ',' && depth == 0) {
      out.push_back(cur);
      cur.clear();
      continue;
    }
    cur += c;
  }
  if (!trim(cur).empty() || !out.empty()) out.push_back(cur);
  // "(0,)" leaves a trailing empty item
  if (!out.empty() && trim(out.back()).empty()) out.pop_back();
  return out;
}

CfgNode make_str(const std::string& s) {
  CfgNode n;
  n.kind = Kind::Str;
  n.s = s;
  return n;
}

// Python literal (what yacs's literal_eval accepts): numbers, True/False/None, quoted text,
// lists and tuples of those. Returns false when `t` is not one.
bool python_literal(const std::string& t, CfgNode& out) {
  if (t.empty()) return false;
  if (t == "True" || t == "False") {
    out.kind = Kind::Bool;
    out.b = t == "True";
    return true;
  }
  if (t == "None") {
    out.kind = Kind::Null;
    return true;
  }
  // (std::stoll / std::stod threw a bare std::out_of_range "stoll" / "stod" here, naming
  // neither the key nor the file: the callers add those to this error)
  if (std::regex_match(t, int_re())) {
    out.kind = Kind::Int;
    errno = 0;
    out.i = std::strtoll(t.c_str(), nullptr, 10);
    HR_CHECK(errno != ERANGE, "the integer ", t, " is out of the 64-bit range");
    return true;
  }
  if (std::regex_match(t, float_re())) {
    out.kind = Kind::Float;
    out.f = std::strtod(t.c_str(), nullptr);  // underflow gives 0 or a denormal, as Python
    HR_CHECK(std::isfinite(out.f), "the number ", t, " is out of the double range");
    return true;
  }
  if (t.size() >= 2 && (t[0] == '\'' || t[0] == '"') && t.back() == t[0]) {
    out = make_str(t.substr(1, t.size() - 2));
    return true;
  }
  if (t.size() >= 2 && ((t[0] == '[' && t.back() == ']') || (t[0] == '(' && t.back() == ')'))) {
    CfgNode list;
    list.kind = Kind::List;
    for (const auto& item : split_items(t.substr(1, t.size() - 2))) {
      CfgNode v;
      if (!python_literal(trim(item), v)) return false;
      list.items.push_back(v);
    }
    out = list;
    return true;
  }
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// CfgNode
// ---------------------------------------------------------------------------------------------
const char* kind_name(CfgNode::Kind k) {
  switch (k) {
    case Kind::Null:
      return "null";
    case Kind::Bool:
      return "a boolean";
    case Kind::Int:
      return "an integer";
    case Kind::Float:
      return "a float";
    case Kind::Str:
      return "a string";
    case Kind::List:
      return "a list";
    case Kind::Map:
      return "a mapping";
  }
  return "?";
}

const CfgNode* CfgNode::find(const std::string& key) const {
  if (kind != Kind::Map) return nullptr;
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

CfgNode* CfgNode::find(const std::string& key) {
  return const_cast<CfgNode*>(static_cast<const CfgNode*>(this)->find(key));
}

std::string CfgNode::str() const {
  switch (kind) {
    case Kind::Null:
      return "null";
    case Kind::Bool:
      return b ? "true" : "false";
    case Kind::Int:
      return std::to_string(i);
    case Kind::Float: {
      std::ostringstream os;
      os.precision(17);
      os << f;
      std::string t = os.str();
      if (t.find_first_of(".eEn") == std::string::npos) t += ".0";
      return t;
    }
    case Kind::Str:
      return "'" + s + "'";
    case Kind::List: {
      std::string r = "[";
      for (size_t k = 0; k < items.size(); ++k) r += (k ? ", " : "") + items[k].str();
      return r + "]";
    }
    case Kind::Map: {
      std::string r = "{";
      for (size_t k = 0; k < entries.size(); ++k)
        r += (k ? ", " : "") + entries[k].first + ": " + entries[k].second.str();
      return r + "}";
    }
  }
  return "?";
}

CfgNode parse_value(const std::string& text, bool quoted) {
  const std::string t = trim(text);
  CfgNode n;
  if (quoted) {
    // yacs literal_evals every string; text that is no literal stays a string
    if (python_literal(t, n)) return n;
    return make_str(text);
  }
  if (t.empty() || is_in(t, {"~", "null", "Null", "NULL", "None"})) return n;
  if (is_in(t, {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"})) {
    n.kind = Kind::Bool;
    n.b = true;
    return n;
  }
  if (is_in(t, {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"})) {
    n.kind = Kind::Bool;
    return n;
  }
  if (python_literal(t, n)) return n;
  return make_str(t);
}

// ---------------------------------------------------------------------------------------------
// YAML -> CfgNode
// ---------------------------------------------------------------------------------------------
namespace {

// Limits on what one YAML text may expand to. yaml-cpp keeps an alias as a reference to its
// anchor's node, so a 1.5 KB file of nested aliases ("billion laughs") is small in memory until
// it is copied into the CfgNode tree below: there every alias is expanded. No config comes near
// either limit (the largest official one has a few hundred nodes, 5 levels).
constexpr int64_t kMaxConfigNodes = 1000000;
constexpr int kMaxConfigDepth = 64;

struct YamlWalk {
  const std::string& source;
  int64_t nodes = 0;

  CfgNode convert(const YAML::Node& y, const std::string& key, int depth) {
    if (++nodes > kMaxConfigNodes)
      throw Error(str_cat("[config] ", source, ": more than ", kMaxConfigNodes,
                          " nodes once aliases are expanded (near ", key.empty() ? "the top" : key,
                          "): refusing what looks like an alias bomb"));
    if (depth > kMaxConfigDepth)
      throw Error(str_cat("[config] ", source, ": ", key.empty() ? "" : key + ": ",
                          "nested deeper than ", kMaxConfigDepth, " levels"));
    CfgNode n;
    switch (y.Type()) {
      case YAML::NodeType::Undefined:
      case YAML::NodeType::Null:
        return n;
      case YAML::NodeType::Scalar:
        try {
          return parse_value(y.Scalar(), y.Tag() == "!");
        } catch (const Error& e) {
          throw Error(str_cat("[config] ", source, ": ", key.empty() ? "" : key + ": ", e.what()));
        }
      case YAML::NodeType::Sequence:
        n.kind = Kind::List;
        for (const auto& item : y) n.items.push_back(convert(item, key, depth + 1));
        return n;
      case YAML::NodeType::Map:
        n.kind = Kind::Map;
        for (const auto& kv : y) {
          if (!kv.first.IsScalar())
            throw Error(str_cat("[config] ", source, ": ", key.empty() ? "" : key + ": ",
                                "a key that is not a plain name (line ", kv.first.Mark().line + 1,
                                ")"));
          std::string k = kv.first.Scalar();
          CfgNode v = convert(kv.second, key.empty() ? k : key + "." + k, depth + 1);
          if (CfgNode* old = n.find(k))
            *old = std::move(v);  // PyYAML keeps the last of duplicate keys
          else
            n.entries.emplace_back(k, std::move(v));
        }
        return n;
    }
    return n;
  }
};

CfgNode parse_yaml_text(const std::string& text, const std::string& source) {
  YAML::Node doc;
  try {
    doc = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(str_cat("[config] ", source, ": YAML error at line ", e.mark.line + 1, ", column ",
                        e.mark.column + 1, ": ", e.msg));
  }
  CfgNode root;
  try {
    YamlWalk walk{source};
    root = walk.convert(doc, "", 0);
  } catch (const YAML::Exception& e) {
    throw Error(str_cat("[config] ", source, ": YAML error at line ", e.mark.line + 1, ", column ",
                        e.mark.column + 1, ": ", e.msg));
  }
  if (root.kind == Kind::Null) root.kind = Kind::Map;
  HR_CHECK(root.kind == Kind::Map, "[config] ", source,
           ": the top level must be a mapping of keys, got ", kind_name(root.kind));
  return root;
}

// yacs _check_and_coerce_cfg_value_type, with int accepted for a float.
void coerce(CfgNode& v, const CfgNode& old, const std::string& key, const std::string& source) {
  if (v.kind == old.kind || v.kind == Kind::Null || old.kind == Kind::Null) return;
  if (v.kind == Kind::Int && old.kind == Kind::Float) {
    v.kind = Kind::Float;
    v.f = static_cast<double>(v.i);
    return;
  }
  throw Error(str_cat("[config] ", source, ": type mismatch for ", key, ": expected ",
                      kind_name(old.kind), " (default ", old.str(), "), got ", kind_name(v.kind),
                      " (", v.str(), ")"));
}

// yacs _merge_a_into_b.
void merge_into(CfgNode& dst, const CfgNode& src, const std::string& prefix,
                const std::string& source) {
  for (const auto& [k, v] : src.entries) {
    const std::string full = prefix + k;
    CfgNode* d = dst.find(k);
    if (!d) {
      HR_CHECK(dst.new_allowed, "[config] ", source, ": unknown key ", full,
               " (not in the default config)");
      dst.entries.emplace_back(k, v);
      continue;
    }
    if (v.kind == Kind::Map && d->kind == Kind::Map) {
      merge_into(*d, v, full + ".", source);
      continue;
    }
    CfgNode nv = v;
    coerce(nv, *d, full, source);
    const bool keep_open = d->new_allowed;
    *d = nv;
    d->new_allowed = keep_open;
  }
}

void dump_node(const CfgNode& n, int indent, std::ostringstream& os) {
  for (const auto& [k, v] : n.entries) {
    os << std::string(indent, ' ') << k << ":";
    if (v.kind == Kind::Map) {
      if (v.entries.empty()) {
        os << " {}\n";
      } else {
        os << "\n";
        dump_node(v, indent + 2, os);
      }
    } else {
      os << " " << v.str() << "\n";
    }
  }
}

// The pose repository's lib/config/default.py, as (key, Python literal) rows.
struct DefaultRow {
  const char* key;
  const char* value;  // Python literal; "{}" is a section, "{new}" a section open to new keys
};
const DefaultRow kPoseDefaults[] = {
    {"OUTPUT_DIR", "''"},
    {"LOG_DIR", "''"},
    {"DATA_DIR", "''"},
    {"GPUS", "(0,)"},
    {"WORKERS", "4"},
    {"PRINT_FREQ", "20"},
    {"AUTO_RESUME", "False"},
    {"PIN_MEMORY", "True"},
    {"RANK", "0"},
    {"CUDNN", "{}"},
    {"CUDNN.BENCHMARK", "True"},
    {"CUDNN.DETERMINISTIC", "False"},
    {"CUDNN.ENABLED", "True"},
    {"MODEL", "{}"},
    {"MODEL.NAME", "'pose_hrnet'"},
    {"MODEL.INIT_WEIGHTS", "True"},
    {"MODEL.PRETRAINED", "''"},
    {"MODEL.NUM_JOINTS", "17"},
    {"MODEL.TAG_PER_JOINT", "True"},
    {"MODEL.TARGET_TYPE", "'gaussian'"},
    {"MODEL.IMAGE_SIZE", "[256, 256]"},
    {"MODEL.HEATMAP_SIZE", "[64, 64]"},
    {"MODEL.SIGMA", "2"},
    {"MODEL.EXTRA", "{new}"},
    {"LOSS", "{}"},
    {"LOSS.USE_OHKM", "False"},
    {"LOSS.TOPK", "8"},
    {"LOSS.USE_TARGET_WEIGHT", "True"},
    {"LOSS.USE_DIFFERENT_JOINTS_WEIGHT", "False"},
    {"DATASET", "{}"},
    {"DATASET.ROOT", "''"},
    {"DATASET.DATASET", "'mpii'"},
    {"DATASET.TRAIN_SET", "'train'"},
    {"DATASET.TEST_SET", "'valid'"},
    {"DATASET.DATA_FORMAT", "'jpg'"},
    {"DATASET.HYBRID_JOINTS_TYPE", "''"},
    {"DATASET.SELECT_DATA", "False"},
    {"DATASET.FLIP", "True"},
    {"DATASET.SCALE_FACTOR", "0.25"},
    {"DATASET.ROT_FACTOR", "30"},
    {"DATASET.PROB_HALF_BODY", "0.0"},
    {"DATASET.NUM_JOINTS_HALF_BODY", "8"},
    {"DATASET.COLOR_RGB", "False"},
    {"TRAIN", "{}"},
    {"TRAIN.LR_FACTOR", "0.1"},
    {"TRAIN.LR_STEP", "[90, 110]"},
    {"TRAIN.LR", "0.001"},
    {"TRAIN.OPTIMIZER", "'adam'"},
    {"TRAIN.MOMENTUM", "0.9"},
    {"TRAIN.WD", "0.0001"},
    {"TRAIN.NESTEROV", "False"},
    {"TRAIN.GAMMA1", "0.99"},
    {"TRAIN.GAMMA2", "0.0"},
    {"TRAIN.BEGIN_EPOCH", "0"},
    {"TRAIN.END_EPOCH", "140"},
    {"TRAIN.RESUME", "False"},
    {"TRAIN.CHECKPOINT", "''"},
    {"TRAIN.BATCH_SIZE_PER_GPU", "32"},
    {"TRAIN.SHUFFLE", "True"},
    {"TEST", "{}"},
    {"TEST.BATCH_SIZE_PER_GPU", "32"},
    {"TEST.FLIP_TEST", "False"},
    {"TEST.POST_PROCESS", "False"},
    {"TEST.SHIFT_HEATMAP", "False"},
    {"TEST.USE_GT_BBOX", "False"},
    {"TEST.IMAGE_THRE", "0.1"},
    {"TEST.NMS_THRE", "0.6"},
    {"TEST.SOFT_NMS", "False"},
    {"TEST.OKS_THRE", "0.5"},
    {"TEST.IN_VIS_THRE", "0.0"},
    {"TEST.COCO_BBOX_FILE", "''"},
    {"TEST.BBOX_THRE", "1.0"},
    {"TEST.MODEL_FILE", "''"},
    {"DEBUG", "{}"},
    {"DEBUG.DEBUG", "False"},
    {"DEBUG.SAVE_BATCH_IMAGES_GT", "False"},
    {"DEBUG.SAVE_BATCH_IMAGES_PRED", "False"},
    {"DEBUG.SAVE_HEATMAPS_GT", "False"},
    {"DEBUG.SAVE_HEATMAPS_PRED", "False"},
};

// This engine's own section (official files do not have it, so they keep these values): where
// and how hrnet-train / hrnet-eval run, for every family. See tasks/task.h.
const DefaultRow kEngineDefaults[] = {
    {"ENGINE", "{}"},
    {"ENGINE.DEVICE", "'cpu'"},         // cpu | cuda
    {"ENGINE.PRECISION", "'fp32'"},     // fp32 | bf16 | fp16 (autocast on CUDA)
    {"ENGINE.SEED", "0"},               // weights init, sample order and augmentation
    {"ENGINE.SKIP_CORRUPT", "True"},    // unreadable images: skip and count, or stop
    {"ENGINE.EVAL_EVERY", "1"},         // evaluate every N epochs (and after the last)
    {"ENGINE.MAX_VAL_IMAGES", "0"},     // evaluate on the first N val images (0: all)
    {"ENGINE.THREADS", "0"},            // CPU threads for the model (0: all cores)
    {"ENGINE.GRAPH", "True"},           // training step as a compiled static graph (False: eager)
    {"ENGINE.LR_SCHEDULE", "''"},  // '': the family's official (multistep; seg poly) | cosine
    {"ENGINE.LABEL_SMOOTHING", "0.0"},  // classification: cross-entropy label smoothing
    {"ENGINE.FAST_DECODE", "True"},     // classification training: JPEGs decoded at 1/2..1/8
    {"ENGINE.CROP_SCALE_MIN", "0.08"},  // classification training: RandomResizedCrop's smallest area
    {"ENGINE.ACCUMULATE_STEPS", "1"},   // the batch as N micro-batches, gradients summed
    {"ENGINE.SYNC_BN", "None"},  // data-parallel batch norm over all ranks: None the family's official
                                 // (seg True; det MODEL.SYNCBN; pose, cls False) | True | False
    {"ENGINE.DIST_TIMEOUT", "600"},     // seconds a collective may wait for the other ranks
    {"ENGINE.DIST_EVAL_TIMEOUT", "14400"},  // seconds the other ranks wait for rank 0's evaluation
    {"ENGINE.SYNTHETIC", "False"},      // the built-in synthetic data (cached) as DATASET.ROOT
    {"ENGINE.DET_CANVAS", "[0, 0]"},    // det training input [W, H] (0: the largest resize, square)
};

// HRNet-FCOS's maskrcnn_benchmark/config/defaults.py: the rows this engine reads (the files
// set only what differs from these). MODEL.NAME 'fcos_hrnet' and DATASET.ROOT are this engine's:
// the family's name, and the folder the DATASETS names are found in (paths_catalog.py's layout).
const DefaultRow kDetDefaults[] = {
    {"MODEL", "{}"},
    {"MODEL.NAME", "'fcos_hrnet'"},
    {"MODEL.META_ARCHITECTURE", "'GeneralizedRCNN'"},
    {"MODEL.RPN_ONLY", "False"},
    {"MODEL.FCOS_ON", "True"},
    {"MODEL.WEIGHT", "''"},
    {"MODEL.SYNCBN", "False"},
    {"MODEL.BACKBONE", "{}"},
    {"MODEL.BACKBONE.CONV_BODY", "'HRNET-W32'"},
    {"MODEL.HRNET", "{}"},
    {"MODEL.HRNET.NORM_EVAL", "True"},
    {"MODEL.HRNET.FPN", "{}"},
    {"MODEL.HRNET.FPN.TYPE", "'HRFPN'"},
    {"MODEL.HRNET.FPN.OUT_CHANNEL", "256"},
    {"MODEL.HRNET.FPN.CONV_STRIDE", "2"},
    {"MODEL.FCOS", "{}"},
    {"MODEL.FCOS.NUM_CLASSES", "81"},
    {"MODEL.FCOS.FPN_STRIDES", "[8, 16, 32, 64, 128]"},
    {"MODEL.FCOS.TARGET_ASSIGN",
     "[[-1, 64], [64, 128], [128, 256], [256, 512], [512, 100000000]]"},
    {"MODEL.FCOS.PRIOR_PROB", "0.01"},
    {"MODEL.FCOS.INFERENCE_TH", "0.05"},
    {"MODEL.FCOS.NMS_TH", "0.6"},
    {"MODEL.FCOS.PRE_NMS_TOP_N", "1000"},
    {"MODEL.FCOS.LOSS_ALPHA", "0.25"},
    {"MODEL.FCOS.LOSS_GAMMA", "2.0"},
    {"MODEL.FCOS.NUM_CONVS", "4"},
    {"INPUT", "{}"},
    {"INPUT.MIN_SIZE_TRAIN", "(800,)"},
    {"INPUT.MIN_SIZE_RANGE_TRAIN", "(-1, -1)"},
    {"INPUT.MAX_SIZE_TRAIN", "1333"},
    {"INPUT.MIN_SIZE_TEST", "800"},
    {"INPUT.MAX_SIZE_TEST", "1333"},
    {"INPUT.PIXEL_MEAN", "[102.9801, 115.9465, 122.7717]"},
    {"INPUT.PIXEL_STD", "[1., 1., 1.]"},
    {"INPUT.TO_BGR255", "True"},
    {"DATASET", "{}"},
    {"DATASET.ROOT", "''"},
    {"DATASETS", "{}"},
    {"DATASETS.TRAIN", "()"},
    {"DATASETS.TEST", "()"},
    {"DATALOADER", "{}"},
    {"DATALOADER.NUM_WORKERS", "4"},
    {"DATALOADER.SIZE_DIVISIBILITY", "0"},
    {"DATALOADER.ASPECT_RATIO_GROUPING", "True"},
    {"SOLVER", "{}"},
    {"SOLVER.MAX_ITER", "40000"},
    {"SOLVER.BASE_LR", "0.001"},
    {"SOLVER.BIAS_LR_FACTOR", "2"},
    {"SOLVER.MOMENTUM", "0.9"},
    {"SOLVER.WEIGHT_DECAY", "0.0005"},
    {"SOLVER.WEIGHT_DECAY_BIAS", "0"},
    {"SOLVER.GAMMA", "0.1"},
    {"SOLVER.STEPS", "(30000,)"},
    {"SOLVER.WARMUP_FACTOR", "0.3333333333333333"},
    {"SOLVER.WARMUP_ITERS", "500"},
    {"SOLVER.WARMUP_METHOD", "'linear'"},
    {"SOLVER.CHECKPOINT_PERIOD", "2500"},
    {"SOLVER.IMS_PER_BATCH", "16"},
    {"TEST", "{}"},
    {"TEST.IMS_PER_BATCH", "8"},
    {"TEST.DETECTIONS_PER_IMG", "100"},
    {"OUTPUT_DIR", "'.'"},
    // this engine's, as the pose files have them: the log's interval (the official trainer logs
    // every 20 iterations) and resuming from OUTPUT_DIR's checkpoint (its Checkpointer always
    // does)
    {"PRINT_FREQ", "20"},
    {"AUTO_RESUME", "True"},
};

// Adds the rows' keys to `root` where they are missing (rows in parent-first order). A section
// the file leaves empty (`HRNET:` with nothing under it) is a section without keys; a section the
// file gives a value (`HRNET: 5`) is an error naming `source` and the key.
void add_defaults(CfgNode& root, const DefaultRow* rows, size_t n, const std::string& source) {
  for (size_t r = 0; r < n; ++r) {
    const auto parts = split_key(rows[r].key);
    CfgNode* node = &root;
    std::string path;
    for (size_t k = 0; k + 1 < parts.size(); ++k) {
      node = node->find(parts[k]);
      path += (k ? "." : "") + parts[k];
      HR_CHECK(node, "[config] bad default row ", rows[r].key);  // rows are parent-first
      if (node->kind == Kind::Null) node->kind = Kind::Map;
      HR_CHECK(node->kind == Kind::Map, "[config] ", source, ": ", path,
               " must be a section of keys, got ", node->str());
    }
    if (node->find(parts.back())) continue;
    CfgNode v;
    const std::string lit = rows[r].value;
    if (lit == "{}" || lit == "{new}") {
      v.kind = Kind::Map;
      v.new_allowed = lit == "{new}";
    } else {
      HR_CHECK(python_literal(lit, v), "[config] bad default literal for ", rows[r].key);
    }
    node->entries.emplace_back(parts.back(), v);
  }
}

// A maskrcnn-benchmark detection file: MODEL.NAME fcos_hrnet, or (the official files, which
// have no MODEL.NAME) MODEL.FCOS_ON / MODEL.META_ARCHITECTURE.
bool is_det_file(const CfgNode& file, const std::string& family) {
  if (family == "fcos_hrnet") return true;
  if (!family.empty()) return false;
  const CfgNode* model = file.find("MODEL");
  return model && (model->find("FCOS_ON") || model->find("META_ARCHITECTURE"));
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  HR_CHECK(!std::filesystem::is_directory(path, ec), "[config] ", path,
           ": is a directory, not a config file");
  std::ifstream f(path, std::ios::binary);
  HR_CHECK(f.good(), "[config] cannot open ", path);
  std::ostringstream os;
  os << f.rdbuf();
  HR_CHECK(!f.bad(), "[config] ", path, ": read error");
  return os.str();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------
Config Config::pose_defaults() {
  Config c;
  c.source_ = "<pose defaults>";
  add_defaults(c.root_, kPoseDefaults, std::size(kPoseDefaults), c.source_);
  add_defaults(c.root_, kEngineDefaults, std::size(kEngineDefaults), c.source_);
  return c;
}

Config Config::from_yaml(const std::string& text, const std::string& source) {
  CfgNode file = parse_yaml_text(text, source);
  const CfgNode* model = file.find("MODEL");
  const CfgNode* name = model ? model->find("NAME") : nullptr;
  const std::string family = name && name->kind == Kind::Str ? name->s : "";
  Config c;
  if (is_det_file(file, family)) {
    // maskrcnn-benchmark files (HRNet-FCOS): kept as written, with the keys they omit at that
    // repository's defaults
    c.root_ = file;
    add_defaults(c.root_, kDetDefaults, std::size(kDetDefaults), source);
    add_defaults(c.root_, kEngineDefaults, std::size(kEngineDefaults), source);
  } else if (family.rfind("seg_", 0) == 0 || family.rfind("cls_", 0) == 0) {
    c.root_ = file;
    // the engine's section, where the file has none of it (or lacks some of its keys)
    add_defaults(c.root_, kEngineDefaults, std::size(kEngineDefaults), source);
  } else {
    c = pose_defaults();
    merge_into(c.root_, file, "", source);
  }
  c.source_ = source;
  return c;
}

Config Config::load(const std::string& path) {
  const std::string text = read_file(path);
  // an empty file (or one of comments only) would silently be the defaults
  HR_CHECK(!parse_yaml_text(text, path).entries.empty(), "[config] ", path,
           ": the file is empty (no keys): not an experiment config");
  return from_yaml(text, path);
}

void Config::merge_yaml(const std::string& text, const std::string& source) {
  merge_into(root_, parse_yaml_text(text, source), "", source);
}

const CfgNode* Config::find(const std::string& key) const {
  const CfgNode* n = &root_;
  for (const auto& part : split_key(key)) {
    n = n->find(part);
    if (!n) return nullptr;
  }
  return n;
}

bool Config::has(const std::string& key) const { return find(key) != nullptr; }

const CfgNode& Config::at(const std::string& key) const {
  const CfgNode* n = find(key);
  HR_CHECK(n, "[config] ", source_, ": missing required key ", key);
  return *n;
}

namespace {
[[noreturn]] void wrong(const std::string& source, const std::string& key, const char* want,
                        const CfgNode& n) {
  throw Error(str_cat("[config] ", source, ": ", key, " must be ", want, ", got ", n.str()));
}
}  // namespace

int64_t Config::get_int(const std::string& key) const {
  const CfgNode& n = at(key);
  if (n.kind != Kind::Int) wrong(source_, key, "an integer", n);
  return n.i;
}

double Config::get_float(const std::string& key) const {
  const CfgNode& n = at(key);
  if (n.kind == Kind::Int) return static_cast<double>(n.i);
  if (n.kind != Kind::Float) wrong(source_, key, "a number", n);
  return n.f;
}

bool Config::get_bool(const std::string& key) const {
  const CfgNode& n = at(key);
  if (n.kind != Kind::Bool) wrong(source_, key, "a boolean", n);
  return n.b;
}

std::string Config::get_str(const std::string& key) const {
  const CfgNode& n = at(key);
  if (n.kind != Kind::Str) wrong(source_, key, "a string", n);
  return n.s;
}

std::vector<int64_t> Config::get_int_list(const std::string& key) const {
  const CfgNode& n = at(key);
  if (n.kind != Kind::List) wrong(source_, key, "a list of integers", n);
  std::vector<int64_t> r;
  for (const auto& it : n.items) {
    if (it.kind != Kind::Int) wrong(source_, key, "a list of integers", n);
    r.push_back(it.i);
  }
  return r;
}

std::vector<double> Config::get_float_list(const std::string& key) const {
  const CfgNode& n = at(key);
  if (n.kind != Kind::List) wrong(source_, key, "a list of numbers", n);
  std::vector<double> r;
  for (const auto& it : n.items) {
    if (it.kind == Kind::Int)
      r.push_back(static_cast<double>(it.i));
    else if (it.kind == Kind::Float)
      r.push_back(it.f);
    else
      wrong(source_, key, "a list of numbers", n);
  }
  return r;
}

std::vector<std::string> Config::get_str_list(const std::string& key) const {
  const CfgNode& n = at(key);
  if (n.kind != Kind::List) wrong(source_, key, "a list of strings", n);
  std::vector<std::string> r;
  for (const auto& it : n.items) {
    if (it.kind != Kind::Str) wrong(source_, key, "a list of strings", n);
    r.push_back(it.s);
  }
  return r;
}

int64_t Config::get_int(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}
double Config::get_float(const std::string& key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}
bool Config::get_bool(const std::string& key, bool fallback) const {
  return has(key) ? get_bool(key) : fallback;
}
std::string Config::get_str(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_str(key) : fallback;
}

void Config::set(const std::string& key, const std::string& value) {
  auto parts = split_key(key);
  CfgNode* n = &root_;
  for (const auto& part : parts) {
    n = n->find(part);
    HR_CHECK(n, "[config] ", source_, ": cannot set ", key, ": no such key");
  }
  CfgNode v;
  try {
    v = parse_value(value);
  } catch (const Error& e) {
    throw Error(str_cat("[config] ", source_, ": cannot set ", key, ": ", e.what()));
  }
  HR_CHECK(!(n->kind == Kind::Map && v.kind != Kind::Map), "[config] ", source_, ": cannot set ",
           key, ": it is a section, not a value");
  coerce(v, *n, key, source_);
  *n = v;
}

void Config::merge_from_list(const std::vector<std::string>& kv) {
  HR_CHECK(kv.size() % 2 == 0, "[config] overrides must be KEY VALUE pairs, got ", kv.size(),
           " items");
  for (size_t k = 0; k < kv.size(); k += 2) set(kv[k], kv[k + 1]);
}

std::string Config::dump() const {
  std::ostringstream os;
  dump_node(root_, 0, os);
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// ModelSpec
// ---------------------------------------------------------------------------------------------
const char* head_name(Head h) {
  switch (h) {
    case Head::Pose:
      return "pose";
    case Head::Seg:
      return "seg";
    case Head::Det:
      return "det";
    case Head::Cls:
      return "cls";
  }
  return "?";
}

Head parse_head(const std::string& name) {
  if (name == "pose") return Head::Pose;
  if (name == "seg") return Head::Seg;
  if (name == "det") return Head::Det;
  if (name == "cls") return Head::Cls;
  throw Error("[hrnet] unknown head '" + name + "' (expected pose, seg, det or cls)");
}

void ModelSpec::validate(const std::string& where) const {
  auto fail = [&](const std::string& field, const std::string& msg) {
    throw Error(str_cat("[config] ", where, ": ", field, " ", msg));
  };
  auto positive = [&](const std::string& field, int64_t v) {
    if (v <= 0) fail(field, str_cat("must be positive, got ", v));
  };
  positive("stem channels", stem_channels);
  if (stage1.num_channels.size() != 1 || stage1.num_blocks.size() != 1)
    fail("STAGE1", "must have exactly one branch");
  positive("STAGE1.NUM_CHANNELS", stage1.num_channels[0]);
  positive("STAGE1.NUM_BLOCKS", stage1.num_blocks[0]);
  for (int s = 0; s < 3; ++s) {
    const StageSpec& st = stages[s];
    const std::string p = str_cat("STAGE", s + 2, ".");
    positive(p + "NUM_MODULES", st.num_modules);
    if (st.num_channels.empty()) fail(p + "NUM_CHANNELS", "is empty");
    if (st.num_blocks.size() != st.num_channels.size())
      fail(p + "NUM_BLOCKS", str_cat("has ", st.num_blocks.size(), " entries but NUM_CHANNELS has ",
                                     st.num_channels.size()));
    for (size_t b = 0; b < st.num_channels.size(); ++b) {
      positive(str_cat(p, "NUM_CHANNELS[", b, "]"), st.num_channels[b]);
      positive(str_cat(p, "NUM_BLOCKS[", b, "]"), st.num_blocks[b]);
    }
  }
  const int64_t branches = stages[2].num_branches();
  if (ocr && head != Head::Seg)
    fail("OCR head", str_cat("needs the seg head, not ", head_name(head)));
  if (head != Head::Seg && num_outputs != 1)
    fail("MODEL.NUM_OUTPUTS", str_cat("is ", num_outputs, " but the ", head_name(head),
                                      " head is described by one output"));
  if (final_conv_kernel != 1 && final_conv_kernel != 3)
    fail("FINAL_CONV_KERNEL", str_cat("must be 1 or 3, got ", final_conv_kernel));
  switch (head) {
    case Head::Pose:
      positive("NUM_JOINTS", num_joints);
      break;
    case Head::Seg:
      positive("NUM_CLASSES", num_classes);
      if (ocr) {
        positive("MODEL.OCR.MID_CHANNELS", ocr_mid_channels);
        positive("MODEL.OCR.KEY_CHANNELS", ocr_key_channels);
        if (!(ocr_dropout >= 0 && ocr_dropout <= 1))
          fail("MODEL.OCR.DROPOUT", str_cat("must be in [0, 1], got ", ocr_dropout));
      }
      if (num_outputs != (ocr ? 2 : 1))
        fail("MODEL.NUM_OUTPUTS", str_cat("is ", num_outputs, " but the ", ocr ? "OCR" : "seg",
                                          " head gives ", ocr ? 2 : 1, " output(s)"));
      break;
    case Head::Cls:
      positive("NUM_CLASSES", num_classes);
      positive("classifier features", cls_features);
      if (static_cast<int64_t>(cls_head_channels.size()) < branches)
        fail("STAGE4.NUM_BRANCHES", str_cat("is ", branches, " but the classification head has ",
                                            cls_head_channels.size(), " incre_modules"));
      for (int64_t c : cls_head_channels) positive("cls head channels", c);
      break;
    case Head::Det:
      positive("det channels", det_channels);
      positive("det levels", det_levels);
      positive("NUM_CLASSES", num_classes);
      if (det_channels % 32 != 0)
        fail("MODEL.HRNET.FPN.OUT_CHANNEL", str_cat("must be a multiple of 32 (the FCOS towers' "
                                                    "GroupNorm(32)), got ", det_channels));
      if (det_conv_stride != 1 && det_conv_stride != 2)
        fail("MODEL.HRNET.FPN.CONV_STRIDE", str_cat("must be 1 or 2, got ", det_conv_stride));
      break;
  }
}

namespace {

StageSpec read_stage(const Config& cfg, int s) {
  const std::string p = str_cat("MODEL.EXTRA.STAGE", s, ".");
  const std::string& src = cfg.source();
  StageSpec st;
  st.num_modules = cfg.get_int(p + "NUM_MODULES");
  const int64_t branches = cfg.get_int(p + "NUM_BRANCHES");
  const std::string block = cfg.get_str(p + "BLOCK");
  if (block == "BASIC")
    st.block = Block::Basic;
  else if (block == "BOTTLENECK")
    st.block = Block::Bottleneck;
  else
    throw Error(
        str_cat("[config] ", src, ": ", p, "BLOCK must be BASIC or BOTTLENECK, got '", block, "'"));
  st.num_blocks = cfg.get_int_list(p + "NUM_BLOCKS");
  st.num_channels = cfg.get_int_list(p + "NUM_CHANNELS");
  const std::string fuse = cfg.get_str(p + "FUSE_METHOD");
  HR_CHECK(fuse == "SUM", "[config] ", src, ": ", p, "FUSE_METHOD must be SUM, got '", fuse, "'");
  HR_CHECK(st.num_modules > 0, "[config] ", src, ": ", p, "NUM_MODULES must be positive, got ",
           st.num_modules);
  HR_CHECK(branches > 0, "[config] ", src, ": ", p, "NUM_BRANCHES must be positive, got ",
           branches);
  HR_CHECK(static_cast<int64_t>(st.num_blocks.size()) == branches, "[config] ", src, ": ", p,
           "NUM_BLOCKS has ", st.num_blocks.size(), " entries but NUM_BRANCHES is ", branches);
  HR_CHECK(static_cast<int64_t>(st.num_channels.size()) == branches, "[config] ", src, ": ", p,
           "NUM_CHANNELS has ", st.num_channels.size(), " entries but NUM_BRANCHES is ", branches);
  return st;
}

// STAGE1 as the cls repository reads it: BLOCK, NUM_BLOCKS[0], NUM_CHANNELS[0] (NUM_BRANCHES,
// misspelt NUM_RANCHES in the official files, is never read).
StageSpec read_stage1(const Config& cfg) {
  const std::string p = "MODEL.EXTRA.STAGE1.";
  const std::string& src = cfg.source();
  StageSpec st;
  const std::string block = cfg.get_str(p + "BLOCK");
  if (block == "BASIC")
    st.block = Block::Basic;
  else if (block == "BOTTLENECK")
    st.block = Block::Bottleneck;
  else
    throw Error(
        str_cat("[config] ", src, ": ", p, "BLOCK must be BASIC or BOTTLENECK, got '", block, "'"));
  auto blocks = cfg.get_int_list(p + "NUM_BLOCKS");
  auto channels = cfg.get_int_list(p + "NUM_CHANNELS");
  HR_CHECK(!blocks.empty(), "[config] ", src, ": ", p, "NUM_BLOCKS is empty");
  HR_CHECK(!channels.empty(), "[config] ", src, ": ", p, "NUM_CHANNELS is empty");
  st.num_blocks = {blocks[0]};
  st.num_channels = {channels[0]};
  return st;
}

StageSpec default_stage1() {
  StageSpec st;
  st.block = Block::Bottleneck;
  st.num_blocks = {4};
  st.num_channels = {64};
  return st;
}

std::array<int64_t, 2> read_wh(const Config& cfg, const std::string& key) {
  auto v = cfg.get_int_list(key);
  HR_CHECK(v.size() == 2, "[config] ", cfg.source(), ": ", key, " must be [width, height], got ",
           cfg.at(key).str());
  return {v[0], v[1]};
}

}  // namespace

namespace {
// HRNet-FCOS (maskrcnn-benchmark format): the backbone by MODEL.BACKBONE.CONV_BODY (HRNET-W18,
// -W32, -W40 as backbone.py builds them: the cls repository's rows; any other built-in variant
// as HRNET-<NAME>, e.g. HRNET-W18-SMALL-V2, is an engine extension), HRFPN and the FCOS head.
ModelSpec det_spec_from_config(const Config& cfg, const std::string& name) {
  const std::string& src = cfg.source();
  const std::string body = cfg.get_str("MODEL.BACKBONE.CONV_BODY");
  HR_CHECK(body.rfind("HRNET-", 0) == 0 && body.size() > 6, "[config] ", src,
           ": MODEL.BACKBONE.CONV_BODY must name an HRNet (HRNET-W18, HRNET-W32, HRNET-W40), got '",
           body, "'");
  std::string variant = body.substr(6);
  for (char& ch : variant) ch = ch == '-' ? '_' : static_cast<char>(std::tolower(ch));
  ModelSpec spec;
  try {
    spec = builtin_spec(variant, Head::Det);
  } catch (const Error&) {
    throw Error(str_cat("[config] ", src, ": MODEL.BACKBONE.CONV_BODY '", body,
                        "' is not a known HRNet (HRNET-W18, HRNET-W32, HRNET-W40)"));
  }
  spec.name = name;
  const std::string fpn = cfg.get_str("MODEL.HRNET.FPN.TYPE");
  HR_CHECK(fpn == "HRFPN", "[config] ", src, ": MODEL.HRNET.FPN.TYPE must be HRFPN, got '", fpn,
           "'");
  spec.det_channels = cfg.get_int("MODEL.HRNET.FPN.OUT_CHANNEL");
  spec.det_conv_stride = cfg.get_int("MODEL.HRNET.FPN.CONV_STRIDE");
  HR_CHECK(spec.det_conv_stride == 1 || spec.det_conv_stride == 2, "[config] ", src,
           ": MODEL.HRNET.FPN.CONV_STRIDE must be 1 or 2, got ", spec.det_conv_stride);
  const std::vector<int64_t> strides = cfg.get_int_list("MODEL.FCOS.FPN_STRIDES");
  HR_CHECK(!strides.empty() && strides.size() <= 8, "[config] ", src,
           ": MODEL.FCOS.FPN_STRIDES must have 1 to 8 levels, got ", strides.size());
  spec.det_levels = static_cast<int64_t>(strides.size());
  for (int64_t l = 0; l < spec.det_levels; ++l)
    HR_CHECK(strides[l] == spec.det_stride(l), "[config] ", src, ": MODEL.FCOS.FPN_STRIDES[", l,
             "] is ", strides[l], " but HRFPN with CONV_STRIDE ", spec.det_conv_stride,
             " puts level ", l, " at stride ", spec.det_stride(l));
  spec.num_classes = cfg.get_int("MODEL.FCOS.NUM_CLASSES") - 1;
  HR_CHECK(spec.num_classes >= 1, "[config] ", src,
           ": MODEL.FCOS.NUM_CLASSES must be at least 2 (the background and one class)");
  spec.fcos_num_convs = cfg.get_int("MODEL.FCOS.NUM_CONVS");
  HR_CHECK(spec.fcos_num_convs >= 0 && spec.fcos_num_convs <= 16, "[config] ", src,
           ": MODEL.FCOS.NUM_CONVS must be in [0, 16], got ", spec.fcos_num_convs);
  spec.fcos_prior_prob = cfg.get_float("MODEL.FCOS.PRIOR_PROB");
  HR_CHECK(spec.fcos_prior_prob > 0 && spec.fcos_prior_prob < 1, "[config] ", src,
           ": MODEL.FCOS.PRIOR_PROB must be in (0, 1), got ", spec.fcos_prior_prob);
  spec.norm_eval = cfg.get_bool("MODEL.HRNET.NORM_EVAL", true);
  // the test input: MAX_SIZE_TEST x MIN_SIZE_TEST padded to the size divisibility
  const int64_t div = std::max<int64_t>(1, cfg.get_int("DATALOADER.SIZE_DIVISIBILITY", 0));
  auto up = [div](int64_t v) { return (v + div - 1) / div * div; };
  spec.image_size = {up(cfg.get_int("INPUT.MAX_SIZE_TEST")), up(cfg.get_int("INPUT.MIN_SIZE_TEST"))};
  spec.validate(src);
  return spec;
}
}  // namespace

ModelSpec spec_from_config(const Config& cfg) {
  const std::string& src = cfg.source();
  ModelSpec spec;
  std::string name = base_name(src);
  if (name.size() > 5 && name.compare(name.size() - 5, 5, ".yaml") == 0)
    name = name.substr(0, name.size() - 5);
  spec.name = name;
  const std::string model = cfg.get_str("MODEL.NAME", "pose_hrnet");
  if (model == "fcos_hrnet") return det_spec_from_config(cfg, name);
  HR_CHECK(cfg.has("MODEL.EXTRA"), "[config] ", src, ": missing required key MODEL.EXTRA");
  if (model == "pose_hrnet") {
    spec.head = Head::Pose;
    spec.fuse = FuseUpsample::Nearest;
    // The pose repository builds layer1 as 4 Bottlenecks of 64 planes without reading STAGE1,
    // and no official pose file has one. An engine extension: a pose file that does set
    // MODEL.EXTRA.STAGE1 gets that layer1 (the quick start's small model uses it).
    spec.stage1 = cfg.has("MODEL.EXTRA.STAGE1") ? read_stage1(cfg) : default_stage1();
    spec.num_joints = cfg.get_int("MODEL.NUM_JOINTS", 17);
    spec.final_conv_kernel = cfg.get_int("MODEL.EXTRA.FINAL_CONV_KERNEL");
    spec.pretrained_layers = cfg.get_str_list("MODEL.EXTRA.PRETRAINED_LAYERS");
    if (cfg.has("MODEL.IMAGE_SIZE")) spec.image_size = read_wh(cfg, "MODEL.IMAGE_SIZE");
    if (cfg.has("MODEL.HEATMAP_SIZE")) spec.heatmap_size = read_wh(cfg, "MODEL.HEATMAP_SIZE");
  } else if (model == "seg_hrnet" || model == "seg_hrnet_ocr") {
    spec.head = Head::Seg;
    spec.ocr = model == "seg_hrnet_ocr";
    spec.num_outputs = cfg.get_int("MODEL.NUM_OUTPUTS", 1);  // the seg repository's default
    if (spec.ocr) {
      spec.ocr_mid_channels = cfg.get_int("MODEL.OCR.MID_CHANNELS", spec.ocr_mid_channels);
      spec.ocr_key_channels = cfg.get_int("MODEL.OCR.KEY_CHANNELS", spec.ocr_key_channels);
      // The official model fixes the dropout at 0.05 (the key's default) and never reads
      // MODEL.OCR.SCALE (its gather and attention use scale 1); DROPOUT is read here.
      spec.ocr_dropout = cfg.get_float("MODEL.OCR.DROPOUT", spec.ocr_dropout);
    }
    spec.fuse = FuseUpsample::Bilinear;
    spec.stage1 = cfg.has("MODEL.EXTRA.STAGE1") ? read_stage1(cfg) : default_stage1();
    spec.align_corners = cfg.get_bool("MODEL.ALIGN_CORNERS", true);  // seg repository default
    spec.num_classes = cfg.get_int("DATASET.NUM_CLASSES", 19);
    spec.final_conv_kernel = cfg.get_int("MODEL.EXTRA.FINAL_CONV_KERNEL");
    if (cfg.has("TEST.IMAGE_SIZE")) spec.image_size = read_wh(cfg, "TEST.IMAGE_SIZE");
  } else if (model == "cls_hrnet") {
    spec.head = Head::Cls;
    spec.fuse = FuseUpsample::Nearest;
    spec.stage1 = read_stage1(cfg);
    spec.num_classes = cfg.get_int("MODEL.NUM_CLASSES", 1000);
    // engine extensions for small classifiers (no official file sets them): the planes of the
    // incre_modules and the width of final_layer, which the official code fixes at
    // [32, 64, 128, 256] and 2048
    if (cfg.has("MODEL.EXTRA.HEAD_CHANNELS"))
      spec.cls_head_channels = cfg.get_int_list("MODEL.EXTRA.HEAD_CHANNELS");
    spec.cls_features = cfg.get_int("MODEL.EXTRA.HEAD_FEATURES", spec.cls_features);
    if (cfg.has("MODEL.IMAGE_SIZE")) spec.image_size = read_wh(cfg, "MODEL.IMAGE_SIZE");
  } else {
    throw Error("[config] " + src + ": MODEL.NAME '" + model +
                "' is not an HRNet model (expected pose_hrnet, seg_hrnet, seg_hrnet_ocr or "
                "cls_hrnet)");
  }
  for (int s = 0; s < 3; ++s) spec.stages[s] = read_stage(cfg, s + 2);
  spec.validate(src);
  return spec;
}

// ---------------------------------------------------------------------------------------------
// Built-in variants: one row each (the cls repository's experiment files)
// ---------------------------------------------------------------------------------------------
namespace {
struct VariantRow {
  const char* name;
  int64_t stage1_planes, stage1_blocks;
  std::array<int64_t, 3> modules;  // stage2..4
  int64_t blocks;                  // per branch, stages 2..4
  int64_t width;                   // C: branch widths C, 2C, 4C, 8C
};
const VariantRow kVariants[] = {
    {"w18_small_v1", 32, 1, {1, 1, 1}, 2, 16}, {"w18_small_v2", 64, 2, {1, 3, 2}, 2, 18},
    {"w18", 64, 4, {1, 4, 3}, 4, 18},          {"w30", 64, 4, {1, 4, 3}, 4, 30},
    {"w32", 64, 4, {1, 4, 3}, 4, 32},          {"w40", 64, 4, {1, 4, 3}, 4, 40},
    {"w44", 64, 4, {1, 4, 3}, 4, 44},          {"w48", 64, 4, {1, 4, 3}, 4, 48},
    {"w64", 64, 4, {1, 4, 3}, 4, 64},
};
}  // namespace

std::vector<std::string> builtin_variants() {
  std::vector<std::string> r;
  for (const auto& row : kVariants) r.push_back(row.name);
  return r;
}

ModelSpec builtin_spec(const std::string& variant, Head head) {
  const VariantRow* row = nullptr;
  for (const auto& r : kVariants)
    if (variant == r.name) row = &r;
  if (!row) {
    std::string names;
    for (const auto& n : builtin_variants()) names += (names.empty() ? "" : ", ") + n;
    throw Error("[hrnet] unknown variant '" + variant + "' (built-in: " + names + ")");
  }
  ModelSpec spec;
  spec.name = str_cat(head_name(head), "_", row->name);
  spec.head = head;
  spec.stage1.block = Block::Bottleneck;
  spec.stage1.num_blocks = {row->stage1_blocks};
  spec.stage1.num_channels = {row->stage1_planes};
  for (int s = 0; s < 3; ++s) {
    StageSpec& st = spec.stages[s];
    st.num_modules = row->modules[s];
    st.block = Block::Basic;
    for (int b = 0; b < s + 2; ++b) {
      st.num_blocks.push_back(row->blocks);
      st.num_channels.push_back(row->width << b);
    }
  }
  switch (head) {
    case Head::Pose:
      spec.num_joints = 17;
      spec.image_size = {192, 256};
      spec.heatmap_size = {48, 64};
      spec.pretrained_layers = {"conv1",  "bn1",         "conv2",  "bn2",
                                "layer1", "transition1", "stage2", "transition2",
                                "stage3", "transition3", "stage4"};
      break;
    case Head::Seg:
      spec.fuse = FuseUpsample::Bilinear;
      spec.align_corners = false;  // as the official Cityscapes configs set it
      spec.num_classes = 19;
      spec.image_size = {2048, 1024};
      break;
    case Head::Det:  // HRNet-FCOS's defaults: 5 levels at strides 8..128, COCO's 80 classes
      spec.num_classes = 80;
      spec.norm_eval = true;
      // MODEL.WEIGHT: an ImageNet classifier gives the backbone, an HRNet-FCOS checkpoint all
      spec.pretrained_layers = {"conv1",       "bn1",    "conv2",       "bn2",
                                "layer1",      "transition1", "stage2", "transition2",
                                "stage3",      "transition3", "stage4", "reduction_conv",
                                "fpn_conv",    "rpn"};
      spec.image_size = {1344, 800};  // 1333x800 padded to 32
      break;
    case Head::Cls:
      spec.num_classes = 1000;
      spec.image_size = {224, 224};
      break;
  }
  spec.validate(spec.name);
  return spec;
}

ModelSpec builtin_spec(const std::string& qualified) {
  const size_t colon = qualified.find(':');
  if (colon != std::string::npos)
    return builtin_spec(qualified.substr(0, colon), parse_head(qualified.substr(colon + 1)));
  for (const char* h : {"pose", "seg", "det", "cls"}) {
    const std::string prefix = std::string(h) + "_";
    if (qualified.rfind(prefix, 0) == 0)
      return builtin_spec(qualified.substr(prefix.size()), parse_head(h));
  }
  throw Error("[hrnet] '" + qualified +
              "' names no built-in model (use HEAD_VARIANT or VARIANT:HEAD, e.g. pose_w32)");
}

std::array<int64_t, 2> config_input_hw(const Config& cfg) {
  const std::string model = cfg.get_str("MODEL.NAME", "pose_hrnet");
  if (model == "fcos_hrnet") {
    const auto wh = spec_from_config(cfg).image_size;
    return {wh[1], wh[0]};
  }
  const std::string key = model.rfind("seg_", 0) == 0 ? "TEST.IMAGE_SIZE" : "MODEL.IMAGE_SIZE";
  if (!cfg.has(key)) return {0, 0};
  auto wh = read_wh(cfg, key);
  return {wh[1], wh[0]};
}

}  // namespace hr::models
