// The segmentation losses on CUDA at segmentation sizes, against the CPU: the class-weighted
// cross-entropy and the OHEM cross-entropy (whose k-th smallest probability comes from a cub
// radix sort: the op table's small cases take cub's single-tile path, these its multi-pass one)
// in f32 and bf16, eager and as a compiled graph captured and replayed; and the edge cases the
// engine defines (nothing counted: 0, an invalid label: NaN) on the device.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <tuple>
#include <vector>

#include "engine/graph.h"
#include "engine/ops.h"
#include "kernels/cuda/cuda_kernels.h"
#include "test_util.h"

using namespace hr;

namespace {

// HRNet-Semantic-Segmentation's Cityscapes class weights
const std::vector<float> kCityscapes = {0.8373f, 0.918f,  0.866f,  1.0345f, 1.0166f,
                                        0.9969f, 0.9754f, 1.0489f, 0.8786f, 1.0023f,
                                        0.9539f, 0.9843f, 1.1116f, 0.9037f, 1.0865f,
                                        1.0955f, 1.0865f, 1.1529f, 1.0507f};

struct SegInputs {
  Tensor logits, labels;  // host f32 [N,19,H,W], i64 [N,H,W]
};

// Every pixel copies one of 199 templates (a label and a logit row) whose softmax probability of
// the label is 0.0025 + 0.005 j: pixels of one template have the same probability bits on a
// device, and different templates lie 0.005 apart and away from 0.7 and 0.9, so the selection
// is the same on both devices although their exp differ in the last bits; ~10% of the pixels
// ignored (255).
SegInputs seg_inputs(const Shape& s, uint64_t seed) {
  const int64_t N = s[0], C = s[1], HW = s[2] * s[3], T = 199;
  std::vector<float> rows = test::randn(static_cast<size_t>(T * C), seed, 1.f);
  for (int64_t j = 0; j < T; ++j) {
    float* r = rows.data() + j * C;
    const int64_t y = j % C;
    const double p = 0.0025 + 0.005 * double(j);
    double rest = 0;
    for (int64_t c = 0; c < C; ++c)
      if (c != y) rest += std::exp(double(r[c]));
    r[y] = static_cast<float>(std::log(p / (1 - p)) + std::log(rest));
  }
  const std::vector<float> u = test::uniform(static_cast<size_t>(N * HW), seed + 1, 0.f, 1.f);
  const std::vector<float> v = test::uniform(static_cast<size_t>(N * HW), seed + 2, 0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(N * C * HW));
  std::vector<int64_t> l(static_cast<size_t>(N * HW));
  for (int64_t p = 0; p < N * HW; ++p) {
    const int64_t j = std::min<int64_t>(T - 1, static_cast<int64_t>(v[static_cast<size_t>(p)] * T));
    for (int64_t c = 0; c < C; ++c)
      x[static_cast<size_t>(((p / HW) * C + c) * HW + p % HW)] = rows[static_cast<size_t>(j * C + c)];
    l[static_cast<size_t>(p)] = u[static_cast<size_t>(p)] < 0.1f ? 255 : j % C;
  }
  return {Tensor::from_vector(x, s), Tensor::from_vector_i64(l, {N, s[2], s[3]})};
}

void require_close(const Tensor& got, const Tensor& want, double atol, double rtol,
                   const std::string& what) {
  REQUIRE(got.shape() == want.shape());
  const test::CompareResult r =
      test::compare(got.to(Device::cpu()).to(DType::f32).to_vector(),
                    want.to(Device::cpu()).to(DType::f32).to_vector(), atol, rtol, what);
  INFO(r.report);
  REQUIRE(r.ok);
}

using LossFn = std::function<Tensor(const Tensor&, const Tensor&, const Tensor&)>;

// The loss and d(loss)/d(logits) on `dev` in `dtype` (the inputs rounded to it for both devices).
std::pair<Tensor, Tensor> eager(const LossFn& f, const SegInputs& in, const Tensor& w, Device dev,
                                DType dtype) {
  Tensor x = in.logits.to(dtype).to(dev);
  x = x.contiguous(device_format(x.shape(), dev));
  x.set_requires_grad(true);
  Tensor loss = f(x, in.labels.to(dev), w.defined() ? w.to(dev) : w);
  loss.backward();
  return {loss.to(Device::cpu()), x.grad().to(Device::cpu()).to(DType::f32)};
}

void check_loss(const char* what, const LossFn& f, bool weighted) {
  if (!cuda::available()) {
    WARN("no usable CUDA device");
    return;
  }
  const Shape s{2, 19, 128, 256};  // 65536 pixels
  const SegInputs in = seg_inputs(s, 7);
  const Tensor w = weighted ? Tensor::from_vector(kCityscapes, {19}) : Tensor();
  for (DType dt : {DType::f32, DType::bf16}) {
    INFO(what << " " << dtype_name(dt));
    // the CPU reference on the same rounded logits
    SegInputs rounded{in.logits.to(dt).to(DType::f32), in.labels};
    const auto [ref_loss, ref_grad] = eager(f, rounded, w, Device::cpu(), DType::f32);
    const auto [loss, grad] = eager(f, in, w, Device::cuda(), dt);
    const double tol = dt == DType::f32 ? 1e-5 : 1e-2;
    require_close(loss, ref_loss, 0, tol, std::string(what) + " loss");
    require_close(grad, ref_grad, tol * 1e-4, tol, std::string(what) + " dlogits");

    // compiled with the logits as a parameter, run, captured, replayed
    Tensor xp = in.logits.to(dt).to(Device::cuda());
    xp = xp.contiguous(device_format(xp.shape(), Device::cuda()));
    xp.set_requires_grad(true);
    graph::Graph g(graph::GraphOptions{Device::cuda()});
    graph::GraphIR& ir = g.ir();
    graph::CompileOptions co;
    co.loss = f(ir.symbolic(ir.param(xp, "logits")), g.input("labels", in.labels.shape(), DType::i64),
                w.defined() ? w.to(Device::cuda()) : w);
    g.output(co.loss, "loss");
    graph::Executable e(std::move(g), co);
    e.set_input("labels", in.labels);
    e.run();
    cuda::synchronize(cuda::default_stream());
    e.capture();
    for (int rep = 0; rep < 2; ++rep) {
      e.run();
      cuda::synchronize(cuda::default_stream());
      require_close(e.output("loss"), ref_loss, 0, tol, std::string(what) + " loss (graph)");
      require_close(e.grad(xp), ref_grad, tol * 1e-4, tol, std::string(what) + " dlogits (graph)");
    }
  }
}

}  // namespace

TEST_CASE("cuda: class-weighted cross-entropy equals the CPU at segmentation size", "[gpu]") {
  check_loss("weighted cross_entropy",
             [](const Tensor& x, const Tensor& l, const Tensor& w) {
               return ops::cross_entropy(x, l, 255, 0.f, w);
             },
             true);
}

TEST_CASE("cuda: OHEM cross-entropy equals the CPU at segmentation size", "[gpu]") {
  // ~59000 counted pixels, probabilities uniform over templates: thresh 0.7 with min_kept below
  // its quantile (threshold 0.7) and above it (threshold = the k-th smallest probability, ~0.85),
  // 0.9 with min_kept above the count (threshold = the largest probability)
  const std::vector<std::tuple<float, int64_t, bool>> cases = {
      {0.7f, 10000, true}, {0.7f, 50000, false}, {0.9f, 100000, true}};
  for (auto [thresh, min_kept, weighted] : cases) {
    INFO("thresh " << thresh << ", min_kept " << min_kept);
    check_loss("ohem_cross_entropy",
               [thresh = thresh, min_kept = min_kept](const Tensor& x, const Tensor& l,
                                                      const Tensor& w) {
                 return ops::ohem_cross_entropy(x, l, 255, thresh, min_kept, w);
               },
               weighted);
  }
}

TEST_CASE("cuda: nothing counted gives 0 and a zero gradient; an invalid label NaN", "[gpu]") {
  if (!cuda::available()) {
    WARN("no usable CUDA device");
    return;
  }
  const Device dev = Device::cuda();
  const Tensor ignored = Tensor::from_vector_i64(std::vector<int64_t>(24, 255), {2, 3, 4}).to(dev);
  const Tensor w = Tensor::ones({5}).to(dev);
  for (int which = 0; which < 2; ++which) {
    Tensor x = Tensor::randn({2, 5, 3, 4}, 3).to(dev);
    x = x.contiguous(device_format(x.shape(), dev));
    x.set_requires_grad(true);
    Tensor y = which == 0 ? ops::cross_entropy(x, ignored, 255, 0.f, w)
                          : ops::ohem_cross_entropy(x, ignored, 255, 0.7f, 5, w);
    REQUIRE(y.to(Device::cpu()).to_vector()[0] == 0.f);
    y.backward();
    for (float g : x.grad().to(Device::cpu()).to_vector()) REQUIRE(g == 0.f);
  }
  std::vector<int64_t> bad(24, 1);
  bad[5] = 7;
  const Tensor x = Tensor::randn({2, 5, 3, 4}, 4).to(dev);
  const Tensor y = ops::ohem_cross_entropy(x, Tensor::from_vector_i64(bad, {2, 3, 4}).to(dev));
  REQUIRE(std::isnan(y.to(Device::cpu()).to_vector()[0]));
}
