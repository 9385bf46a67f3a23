// PyTorch parity on the CPU: every op of engine/ops.h (forward values and every input gradient
// through autograd), a Conv-BN-ReLU nn::Sequential, the optimizers and the lr schedules of
// engine/optim.h, against tests/data/ops_reference.safetensors written by
// tools/gen_op_reference.py (torch 1.13, float64 on float32-rounded inputs). Options come from
// the file's per-case JSON metadata, shapes from the tensors. Each op's test lists the cases it
// requires, so a file missing one fails; one line per case prints the largest errors.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/checkpoint_io.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/tensor.h"
#include "test_util.h"

namespace {

using hr::Shape;
using hr::Tensor;

// ---------------------------------------------------------------- case metadata (flat JSON)
struct JVal {
  enum Kind { Num, Bool, Str, Arr } kind = Num;
  double num = 0;
  bool b = false;
  std::string s;
  std::vector<double> arr;
};

// Parses one flat JSON object whose values are numbers, booleans, strings or number arrays.
class FlatJson {
 public:
  FlatJson(const std::string& text, const std::string& what) : p_(text.c_str()), what_(what) {}

  std::map<std::string, JVal> object() {
    std::map<std::string, JVal> out;
    expect('{');
    if (peek() == '}') return ++p_, out;
    for (;;) {
      std::string key = string();
      expect(':');
      out[key] = value();
      char c = next();
      if (c == '}') return out;
      if (c != ',') fail("expected ',' or '}'");
    }
  }

 private:
  const char* p_;
  std::string what_;

  [[noreturn]] void fail(const std::string& msg) {
    throw std::runtime_error("metadata of " + what_ + ": " + msg);
  }
  char peek() {
    while (*p_ == ' ' || *p_ == '\n' || *p_ == '\t' || *p_ == '\r') ++p_;
    return *p_;
  }
  char next() {
    char c = peek();
    if (!c) fail("unexpected end");
    return *p_++;
  }
  void expect(char c) {
    if (next() != c) fail(std::string("expected '") + c + "'");
  }
  std::string string() {
    expect('"');
    std::string s;
    while (*p_ && *p_ != '"') {
      if (*p_ == '\\' && p_[1]) ++p_;
      s += *p_++;
    }
    expect('"');
    return s;
  }
  double number() {
    peek();
    char* end = nullptr;
    double v = std::strtod(p_, &end);
    if (end == p_) fail("expected a number");
    p_ = end;
    return v;
  }
  JVal value() {
    JVal v;
    char c = peek();
    if (c == '"') {
      v.kind = JVal::Str;
      v.s = string();
    } else if (c == '[') {
      v.kind = JVal::Arr;
      ++p_;
      if (peek() == ']') return ++p_, v;
      for (;;) {
        v.arr.push_back(number());
        char d = next();
        if (d == ']') break;
        if (d != ',') fail("expected ',' or ']'");
      }
    } else if (std::strncmp(p_, "true", 4) == 0 || std::strncmp(p_, "false", 5) == 0) {
      v.kind = JVal::Bool;
      v.b = *p_ == 't';
      p_ += v.b ? 4 : 5;
    } else {
      v.num = number();
    }
    return v;
  }
};

struct Case {
  std::string name;
  std::map<std::string, JVal> m;

  const JVal& get(const std::string& k, JVal::Kind kind) const {
    auto it = m.find(k);
    if (it == m.end() || it->second.kind != kind)
      throw std::runtime_error("case " + name + ": metadata key '" + k + "' missing or mistyped");
    return it->second;
  }
  bool has(const std::string& k) const { return m.count(k) != 0; }
  double num(const std::string& k) const { return get(k, JVal::Num).num; }
  int64_t i(const std::string& k) const { return static_cast<int64_t>(num(k)); }
  bool flag(const std::string& k) const { return get(k, JVal::Bool).b; }
  std::string str(const std::string& k) const { return get(k, JVal::Str).s; }
  std::vector<int64_t> ints(const std::string& k) const {
    std::vector<int64_t> r;
    for (double d : get(k, JVal::Arr).arr) r.push_back(static_cast<int64_t>(d));
    return r;
  }
  std::array<int64_t, 2> pair(const std::string& k) const {
    auto v = ints(k);
    if (v.size() != 2) throw std::runtime_error("case " + name + ": '" + k + "' is not a pair");
    return {v[0], v[1]};
  }
};

// ---------------------------------------------------------------- reference file
class Ref {
 public:
  Ref() : r_(std::string(HR_TEST_DATA_DIR) + "/ops_reference.safetensors") {
    for (const auto& [name, json] : r_.metadata()) {
      if (name.empty() || name[0] == '_') continue;
      Case c{name, FlatJson(json, name).object()};
      c.str("op");
      cases_.push_back(std::move(c));
    }
  }
  const std::vector<Case>& cases() const { return cases_; }
  const hr::io::RawTensor& raw(const std::string& key) const {
    const hr::io::RawTensor* t = r_.find(key);
    if (!t) throw std::runtime_error("reference tensor '" + key + "' is missing");
    return *t;
  }
  bool has(const std::string& key) const { return r_.find(key) != nullptr; }
  std::vector<std::string> keys_under(const std::string& prefix) const {
    std::vector<std::string> r;
    for (const auto& t : r_.tensors())
      if (t.name.compare(0, prefix.size(), prefix) == 0) r.push_back(t.name.substr(prefix.size()));
    return r;
  }
  std::vector<float> f32(const std::string& key) const {
    const auto& t = raw(key);
    if (t.dtype != hr::DType::f32) throw std::runtime_error("'" + key + "' is not f32");
    std::vector<float> v(static_cast<size_t>(t.numel()));
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
  }
  std::vector<int64_t> i64(const std::string& key) const {
    const auto& t = raw(key);
    if (t.dtype != hr::DType::i64) throw std::runtime_error("'" + key + "' is not i64");
    std::vector<int64_t> v(static_cast<size_t>(t.numel()));
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
  }
  Shape shape(const std::string& key) const { return raw(key).shape; }
  Tensor tensor(const std::string& key, bool requires_grad = false) const {
    Tensor t = Tensor::from_vector(f32(key), shape(key));
    if (requires_grad) t.set_requires_grad(true);
    return t;
  }
  Tensor tensor_i64(const std::string& key) const {
    return Tensor::from_vector_i64(i64(key), shape(key));
  }

 private:
  hr::io::SafetensorsReader r_;
  std::vector<Case> cases_;
};

const Ref& ref() {
  static Ref r;
  return r;
}

// ---------------------------------------------------------------- comparison and logging
struct Tol {
  double atol;  // times max |reference| (the tensor's magnitude)
  double rtol;
};
constexpr Tol kOpTol{1e-5, 1e-4};
constexpr Tol kOptimTol{2e-6, 2e-6};
constexpr Tol kLrTol{1e-9, 2e-6};

struct OpStats {
  double max_abs = 0, max_norm = 0;  // norm: abs error / max |reference| of that tensor
  int cases = 0;
};
std::map<std::string, OpStats>& op_stats() {
  static std::map<std::string, OpStats> s;
  return s;
}

// Collects one case's comparisons into a line: "case: y 1.2e-07, dx 3.4e-07 ...".
class CaseLog {
 public:
  CaseLog(std::string op, std::string name) : op_(std::move(op)), name_(std::move(name)) {}
  ~CaseLog() {
    std::printf("  %-28s %s\n", name_.c_str(), line_.c_str());
    auto& s = op_stats()[op_];
    s.cases++;
  }
  const std::string& name() const { return name_; }

  void values(const std::string& role, const std::vector<float>& got, const std::string& key,
              Tol tol) {
    std::vector<float> want = ref().f32(name_ + "/" + key);
    double scale = 1e-30;
    for (float v : want) scale = std::max(scale, static_cast<double>(std::fabs(v)));
    auto r = hr::test::compare(got, want, tol.atol * scale, tol.rtol, name_ + " " + role);
    INFO(r.report);
    CHECK(r.ok);
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%s %.1e", line_.empty() ? "" : ", ", role.c_str(),
                  r.max_abs);
    line_ += buf;
    auto& s = op_stats()[op_];
    s.max_abs = std::max(s.max_abs, r.max_abs);
    s.max_norm = std::max(s.max_norm, r.max_abs / scale);
  }

  void tensor(const std::string& role, const Tensor& got, const std::string& key,
              Tol tol = kOpTol) {
    const std::string full = name_ + "/" + key;
    if (!got.defined()) {
      FAIL_CHECK(name_ << ": " << role << " is undefined (expected " << hr::shape_str(ref().shape(full)) << ")");
      line_ += (line_.empty() ? "" : ", ") + role + " UNDEFINED";
      return;
    }
    if (got.shape() != ref().shape(full)) {
      FAIL_CHECK(name_ << ": " << role << " has shape " << hr::shape_str(got.shape())
                       << ", torch gives " << hr::shape_str(ref().shape(full)));
      line_ += (line_.empty() ? "" : ", ") + role + " SHAPE";
      return;
    }
    values(role, got.to_vector(), key, tol);
  }

  // d<role> for every (role, leaf) pair.
  void grads(const std::vector<std::pair<std::string, Tensor>>& leaves) {
    for (const auto& [role, t] : leaves) tensor("d" + role, t.grad(), "d" + role);
  }

 private:
  std::string op_, name_, line_;
};

void print_summary(const std::string& op) {
  const auto& s = op_stats()[op];
  std::printf("%s: %d cases, largest abs error %.2e, largest error / max|ref| %.2e\n",
              op.c_str(), s.cases, s.max_abs, s.max_norm);
}

// Runs `fn` on every case of `op` in the file; each name in `required` must be present.
void run_op(const std::string& op, const std::vector<std::string>& required,
            const std::function<void(const Case&, CaseLog&)>& fn) {
  std::set<std::string> present;
  for (const Case& c : ref().cases())
    if (c.str("op") == op) present.insert(c.name);
  for (const std::string& r : required) {
    INFO("reference case '" << r << "' (op " << op << ") is missing from ops_reference.safetensors;"
                            << " regenerate it with tools/gen_op_reference.py");
    CHECK(present.count(r) == 1);
  }
  REQUIRE(!present.empty());
  std::printf("%s vs torch:\n", op.c_str());
  for (const Case& c : ref().cases()) {
    if (c.str("op") != op) continue;
    INFO("case " << c.name);
    CaseLog log(op, c.name);
    try {
      fn(c, log);
    } catch (const std::exception& e) {
      FAIL_CHECK(c.name << " threw: " << e.what());
    }
  }
  print_summary(op);
}

std::string key(const Case& c, const std::string& role) { return c.name + "/" + role; }
Tensor input(const Case& c, const std::string& role, bool grad = true) {
  return ref().tensor(key(c, role), grad);
}
Tensor upstream(const Case& c) { return ref().tensor(key(c, "dy")); }

}  // namespace

// ---------------------------------------------------------------- ops
TEST_CASE("conv2d matches torch (values and gradients)", "[torch][conv2d]") {
  std::vector<std::string> req;
  for (const char* b : {"conv3x3_s1_p1", "conv3x3_s2_p1", "conv1x1_s1", "conv1x1_s2",
                        "conv5x5_p2", "conv1x3_p01", "conv3x1_p10_s21"})
    for (const char* t : {"_bias", "_nobias"}) req.push_back(std::string(b) + t);
  run_op("conv2d", req, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x"), w = input(c, "w");
    Tensor b = c.flag("bias") ? input(c, "b") : Tensor();
    Tensor y = hr::ops::conv2d(x, w, b, c.pair("stride"), c.pair("padding"));
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}, {"w", w}});
    if (b.defined()) log.grads({{"b", b}});
  });
}

TEST_CASE("batch_norm matches torch (train, eval, running statistics)", "[torch][batch_norm]") {
  run_op("batch_norm", {"bn_train", "bn_eval", "bn_train_2d"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x"), gamma = input(c, "gamma"), beta = input(c, "beta");
    Tensor rm = input(c, "running_mean", false), rv = input(c, "running_var", false);
    Tensor nbt = Tensor::from_vector_i64({0}, {});
    const bool training = c.flag("training");
    Tensor y = hr::ops::batch_norm(x, gamma, beta, rm, rv, training,
                                   static_cast<float>(c.num("momentum")),
                                   static_cast<float>(c.num("eps")), nbt);
    log.tensor("y", y, "y");
    log.tensor("running_mean", rm, "running_mean_out");
    log.tensor("running_var", rv, "running_var_out");
    CHECK(nbt.to_vector_i64().at(0) == (training ? 1 : 0));
    y.backward(upstream(c));
    log.grads({{"x", x}, {"gamma", gamma}, {"beta", beta}});
  });
}

TEST_CASE("group_norm matches torch (4-D, 2-D, one channel per group)", "[torch][group_norm]") {
  run_op("group_norm", {"group_norm", "group_norm_2d", "group_norm_per_channel"},
         [](const Case& c, CaseLog& log) {
           Tensor x = input(c, "x"), gamma = input(c, "gamma"), beta = input(c, "beta");
           Tensor y = hr::ops::group_norm(x, static_cast<int64_t>(c.num("groups")), gamma, beta,
                                          static_cast<float>(c.num("eps")));
           log.tensor("y", y, "y");
           y.backward(upstream(c));
           log.grads({{"x", x}, {"gamma", gamma}, {"beta", beta}});
         });
}

TEST_CASE("element-wise ops and reshape match torch", "[torch][elementwise]") {
  run_op("relu", {"relu"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x");
    Tensor y = hr::ops::relu(x);
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}});
  });
  run_op("add", {"add"}, [](const Case& c, CaseLog& log) {
    Tensor a = input(c, "a"), b = input(c, "b");
    Tensor y = hr::ops::add(a, b);
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"a", a}, {"b", b}});
  });
  run_op("mul", {"mul"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x");
    Tensor y = hr::ops::mul(x, static_cast<float>(c.num("alpha")));
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}});
  });
  run_op("sum_all", {"sum_all"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x");
    Tensor y = hr::ops::sum_all(x);
    log.tensor("y", y, "y");
    y.backward();
    log.grads({{"x", x}});
  });
  run_op("reshape", {"reshape"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x");
    Tensor y = hr::ops::reshape(x, c.ints("shape"));
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}});
  });
}

TEST_CASE("upsample_nearest matches F.interpolate(mode='nearest')", "[torch][resample]") {
  run_op("upsample_nearest",
         {"nearest_size_x2", "nearest_size_x4", "nearest_size_5x7_to_12x9",
          "nearest_size_9x11_to_4x5", "nearest_scale_2", "nearest_scale_4", "nearest_scale_1.5",
          "nearest_scale_1.7"},
         [](const Case& c, CaseLog& log) {
           Tensor x = input(c, "x");
           Tensor y = c.has("size") ? hr::ops::upsample_nearest(x, c.pair("size"))
                                    : hr::ops::upsample_nearest_scale(x, c.num("scale"));
           log.tensor("y", y, "y");
           y.backward(upstream(c));
           log.grads({{"x", x}});
         });
}

TEST_CASE("upsample_bilinear matches F.interpolate(mode='bilinear')", "[torch][resample]") {
  std::vector<std::string> req;
  for (const char* b : {"size_up", "size_odd", "size_down", "size_to1", "scale_2", "scale_1.5",
                        "scale_0.5"})
    for (const char* ac : {"_ac0", "_ac1"}) req.push_back(std::string("bilinear_") + b + ac);
  run_op("upsample_bilinear", req, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x");
    const bool ac = c.flag("align_corners");
    Tensor y = c.has("size") ? hr::ops::upsample_bilinear(x, c.pair("size"), ac)
                             : hr::ops::upsample_bilinear_scale(x, c.num("scale"), ac);
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}});
  });
}

TEST_CASE("concat matches torch.cat", "[torch][concat]") {
  run_op("concat", {"concat_dim1", "concat_dim2"}, [](const Case& c, CaseLog& log) {
    std::vector<Tensor> xs;
    std::vector<std::pair<std::string, Tensor>> leaves;
    for (int64_t k = 0; k < c.i("count"); ++k) {
      std::string role = "x" + std::to_string(k);
      xs.push_back(input(c, role));
      leaves.emplace_back(role, xs.back());
    }
    Tensor y = hr::ops::concat(xs, c.i("dim"));
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads(leaves);
  });
}

TEST_CASE("avg_pool2d and global_avg_pool match torch", "[torch][pool]") {
  run_op("avg_pool2d",
         {"avgpool_k3s2p1_incl", "avgpool_k3s2p1_excl", "avgpool_k3s2p1_excl_even", "avgpool_k2s2"},
         [](const Case& c, CaseLog& log) {
           Tensor x = input(c, "x");
           Tensor y = hr::ops::avg_pool2d(x, c.pair("kernel"), c.pair("stride"), c.pair("padding"),
                                          c.flag("count_include_pad"));
           log.tensor("y", y, "y");
           y.backward(upstream(c));
           log.grads({{"x", x}});
         });
  run_op("global_avg_pool", {"global_avg_pool"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x");
    Tensor y = hr::ops::global_avg_pool(x);
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}});
  });
}

TEST_CASE("linear matches F.linear", "[torch][linear]") {
  run_op("linear", {"linear_bias", "linear_nobias"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x"), w = input(c, "w");
    Tensor b = c.flag("bias") ? input(c, "b") : Tensor();
    Tensor y = hr::ops::linear(x, w, b);
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}, {"w", w}});
    if (b.defined()) log.grads({{"b", b}});
  });
}

TEST_CASE("heatmap_loss matches HRNet JointsMSELoss; cross_entropy matches F.cross_entropy "
          "(class weights included); ohem_cross_entropy matches OhemCrossEntropy",
          "[torch][loss]") {
  run_op("heatmap_loss", {"heatmap_loss"}, [](const Case& c, CaseLog& log) {
    Tensor pred = input(c, "pred");
    Tensor target = input(c, "target", false), weight = input(c, "weight", false);
    Tensor y = hr::ops::heatmap_loss(pred, target, weight);
    log.tensor("loss", y, "y");
    y.backward();
    log.grads({{"pred", pred}});
  });
  run_op("cross_entropy",
         {"cross_entropy_4d", "cross_entropy_2d", "cross_entropy_smooth_2d",
          "cross_entropy_smooth_4d", "cross_entropy_weighted_cityscapes",
          "cross_entropy_weighted_smooth_4d", "cross_entropy_weighted_smooth_2d"},
         [](const Case& c, CaseLog& log) {
           Tensor logits = input(c, "logits");
           Tensor labels = ref().tensor_i64(key(c, "labels"));
           const bool smooth = c.has("label_smoothing");
           const bool weighted = c.has("weighted") && c.flag("weighted");
           Tensor y = hr::ops::cross_entropy(
               logits, labels, c.i("ignore_index"),
               smooth ? static_cast<float>(c.num("label_smoothing")) : 0.f,
               weighted ? input(c, "class_weight", false) : Tensor());
           log.tensor("loss", y, "y");
           y.backward();
           log.grads({{"logits", logits}});
         });
  // OhemCrossEntropy._ohem_forward of HRNet-Semantic-Segmentation (a verbatim copy in the
  // generator), thresholds 0.7 and 0.9, min_kept below and above the counted pixels
  run_op("ohem_cross_entropy",
         {"ohem_t07_kept_small", "ohem_t07_kept_min_value", "ohem_t07_kept_large",
          "ohem_t09_kept_small", "ohem_t09_kept_large"},
         [](const Case& c, CaseLog& log) {
           Tensor logits = input(c, "logits");
           Tensor labels = ref().tensor_i64(key(c, "labels"));
           Tensor y = hr::ops::ohem_cross_entropy(
               logits, labels, c.i("ignore_index"), static_cast<float>(c.num("thresh")),
               c.i("min_kept"), c.flag("weighted") ? input(c, "class_weight", false) : Tensor());
           log.tensor("loss", y, "y");
           y.backward();
           log.grads({{"logits", logits}});
         });
}

TEST_CASE("exp and scale match torch; the FCOS losses match HRNet-FCOS's SigmoidFocalLoss, "
          "IOULoss and BCEWithLogitsLoss", "[torch][det]") {
  run_op("exp", {"exp"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x");
    Tensor y = hr::ops::exp(x);
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}});
  });
  run_op("scale", {"scale"}, [](const Case& c, CaseLog& log) {
    Tensor x = input(c, "x"), s = input(c, "s");
    Tensor y = hr::ops::scale(x, s);
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}, {"s", s}});
  });
  // the official CPU formula in the generator, checked there against their CUDA kernel's stable
  // forms; labels with ignored (negative) entries, an image without objects, none at all
  run_op("sigmoid_focal_loss", {"focal_fcos", "focal_gamma15_wide", "focal_all_background"},
         [](const Case& c, CaseLog& log) {
           Tensor logits = input(c, "logits");
           Tensor labels = ref().tensor_i64(key(c, "labels"));
           Tensor y = hr::ops::sigmoid_focal_loss(logits, labels,
                                                  static_cast<float>(c.num("gamma")),
                                                  static_cast<float>(c.num("alpha")));
           log.tensor("loss", y, "y");
           y.backward();
           log.grads({{"logits", logits}});
         });
  // garbage (negative, 1e20) at the locations whose weight is not positive; no positive weight
  run_op("iou_loss", {"iou_weighted", "iou_no_positive"}, [](const Case& c, CaseLog& log) {
    Tensor pred = input(c, "pred");
    Tensor target = input(c, "target", false), weight = input(c, "weight", false);
    Tensor y = hr::ops::iou_loss(pred, target, weight);
    log.tensor("loss", y, "y");
    y.backward();
    log.grads({{"pred", pred}});
  });
  run_op("masked_bce_with_logits", {"bce_centerness", "bce_weighted", "bce_no_mask"},
         [](const Case& c, CaseLog& log) {
           Tensor logits = input(c, "logits");
           Tensor target = input(c, "target", false), mask = input(c, "mask", false);
           Tensor y = hr::ops::masked_bce_with_logits(logits, target, mask);
           log.tensor("loss", y, "y");
           y.backward();
           log.grads({{"logits", logits}});
         });
}

// ---------------------------------------------------------------- nn
TEST_CASE("nn Sequential(Conv2d, BatchNorm2d, ReLU) matches torch.nn in train and eval",
          "[torch][nn]") {
  run_op("module_conv_bn_relu", {"seq_conv_bn_relu"}, [](const Case& c, CaseLog& log) {
    hr::Sequential seq;
    seq.add(std::make_shared<hr::Conv2d>(c.i("cin"), c.i("cout"), c.i("kernel"), 1,
                                         c.i("padding"), false));
    seq.add(std::make_shared<hr::BatchNorm2d>(c.i("cout")));
    seq.add(std::make_shared<hr::ReLU>());
    hr::NamedTensors sd;
    for (const std::string& k : ref().keys_under(c.name + "/sd/")) {
      const std::string full = key(c, "sd/" + k);
      sd.emplace_back(k, ref().raw(full).dtype == hr::DType::i64 ? ref().tensor_i64(full)
                                                                   : ref().tensor(full));
    }
    REQUIRE(sd.size() == 6);
    seq.load_state_dict(sd);

    seq.train();
    Tensor x = input(c, "x");
    Tensor y = seq(x);
    log.tensor("y", y, "y");
    y.backward(upstream(c));
    log.grads({{"x", x}});
    auto grads = seq.gradients();
    for (const std::string& k : ref().keys_under(c.name + "/grad/")) {
      INFO("parameter " << k);
      REQUIRE(grads.count(k) == 1);
      log.tensor("d[" + k + "]", grads[k], "grad/" + k);
    }
    std::map<std::string, Tensor> after;
    for (auto& [k, t] : seq.state_dict()) after[k] = t;
    for (const std::string& k : ref().keys_under(c.name + "/sd_after/")) {
      INFO("state_dict entry " << k);
      REQUIRE(after.count(k) == 1);
      const std::string full = key(c, "sd_after/" + k);
      if (ref().raw(full).dtype == hr::DType::i64)
        CHECK(after[k].to_vector_i64() == ref().i64(full));
      else
        log.tensor(k, after[k], "sd_after/" + k);
    }

    seq.eval();
    hr::NoGradGuard ng;
    log.tensor("y_eval", seq(x), "y_eval");
  });
}

// ---------------------------------------------------------------- optim
TEST_CASE("SGD, Adam and AdamW steps match torch.optim", "[torch][optim]") {
  run_op("optimizer", {"sgd_plain", "sgd_momentum", "sgd_nesterov", "adam", "adam_l2", "adamw"},
         [](const Case& c, CaseLog& log) {
           Tensor p = input(c, "p0");
           const std::string kind = c.str("kind");
           std::unique_ptr<hr::Optimizer> opt;
           if (kind == "sgd") {
             hr::SGDOptions o;
             o.lr = c.num("lr");
             o.momentum = c.num("momentum");
             o.dampening = c.num("dampening");
             o.weight_decay = c.num("weight_decay");
             o.nesterov = c.flag("nesterov");
             opt = std::make_unique<hr::SGD>(std::vector<Tensor>{p}, o);
           } else if (kind == "adam") {
             hr::AdamOptions o;
             o.lr = c.num("lr");
             o.beta1 = c.num("beta1");
             o.beta2 = c.num("beta2");
             o.eps = c.num("eps");
             o.weight_decay = c.num("weight_decay");
             opt = std::make_unique<hr::Adam>(std::vector<Tensor>{p}, o);
           } else {
             REQUIRE(kind == "adamw");
             opt = hr::make_adamw({p}, c.num("lr"), c.num("weight_decay"), c.num("beta1"),
                                  c.num("beta2"), c.num("eps"));
           }
           for (int64_t k = 1; k <= c.i("steps"); ++k) {
             p.set_grad(input(c, "g" + std::to_string(k), false));
             opt->step();
             log.tensor("p" + std::to_string(k), p, "p" + std::to_string(k), kOptimTol);
           }
         });
}

TEST_CASE("lr schedules match torch.optim.lr_scheduler", "[torch][optim]") {
  run_op("schedule", {"sched_multistep", "sched_poly", "sched_cosine", "sched_warmup_multistep"},
         [](const Case& c, CaseLog& log) {
           const std::string kind = c.str("kind");
           std::shared_ptr<hr::LrSchedule> s;
           if (kind == "multistep")
             s = std::make_shared<hr::MultiStepLR>(c.ints("milestones"), c.num("gamma"));
           else if (kind == "poly")
             s = std::make_shared<hr::PolyLR>(c.i("total"), c.num("power"));
           else if (kind == "cosine")
             s = std::make_shared<hr::CosineLR>(c.i("t_max"), c.num("eta_min"));
           else {
             REQUIRE(kind == "warmup_multistep");
             s = std::make_shared<hr::LinearWarmup>(
                 std::make_shared<hr::MultiStepLR>(c.ints("milestones"), c.num("gamma")),
                 c.i("warmup"), c.num("start_factor"));
           }
           std::vector<float> lr;
           for (int64_t t = 0; t < c.i("steps"); ++t)
             lr.push_back(static_cast<float>(s->lr(t, c.num("base_lr"))));
           log.values("lr", lr, "lr", kLrTol);
         });
}

TEST_CASE("every case in ops_reference.safetensors belongs to a tested op", "[torch]") {
  const std::set<std::string> known = {
      "conv2d", "batch_norm", "relu", "add", "mul", "sum_all", "reshape", "upsample_nearest",
      "upsample_bilinear", "concat", "avg_pool2d", "global_avg_pool", "linear", "heatmap_loss",
      "cross_entropy", "module_conv_bn_relu", "optimizer", "schedule", "group_norm",
      "ohem_cross_entropy", "exp", "scale", "sigmoid_focal_loss", "iou_loss",
      "masked_bce_with_logits"};
  REQUIRE(ref().cases().size() >= 90);
  for (const Case& c : ref().cases()) {
    INFO("case " << c.name << " has op '" << c.str("op") << "'");
    CHECK(known.count(c.str("op")) == 1);
  }
}
