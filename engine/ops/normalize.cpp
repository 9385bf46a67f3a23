// normalize_u8: a dataset's raw input (uint8 crops, channel-interleaved) through its
// normalisation table to the model's fp32 input, on the device the model runs on. The upload is
// then a quarter of the bytes of a normalised fp32 batch, and the loader skips the conversion.
#include "engine/ops.h"
#include "engine/ops/op_util.h"
#include "kernels/cpu/cpu_kernels.h"

namespace hr::ops {

using namespace detail;

namespace {

struct NormalizeU8Op final : OpDef {
  const char* name() const override { return "normalize_u8"; }
  // x u8 [N, H, W * C], lut f32 [C, 256], size i64 [N, 2] (optional) -> y f32 [N, C, H, W]
  std::vector<Meta> infer(const std::vector<Meta>& in) const override {
    check_defined(in[0], name(), "input");
    check_defined(in[1], name(), "table");
    const Meta &x = in[0], &t = in[1], &sz = in[2];
    HR_CHECK(t.dtype == DType::f32 && t.shape.size() == 2 && t.shape[1] == 256 &&
                 t.shape[0] >= 1 && t.shape[0] <= 4,
             "normalize_u8: the table must be f32 [C, 256] with 1 to 4 channels, got ", t.str());
    const int64_t C = t.shape[0];
    HR_CHECK(x.dtype == DType::u8 && x.shape.size() == 3 && x.shape[2] % C == 0 &&
                 x.numel() > 0,
             "normalize_u8: the input must be u8 [N, H, W * ", C, "], got ", x.str());
    HR_CHECK(t.device == x.device, "normalize_u8: the table is on ", t.device.str(),
             ", the input on ", x.device.str());
    HR_CHECK(!sz.defined || (sz.dtype == DType::i64 && sz.shape == Shape{x.shape[0], 2} &&
                             sz.device == x.device),
             "normalize_u8: the valid sizes must be i64 [", x.shape[0], ", 2] on ",
             x.device.str(), ", got ", sz.str());
    return {Meta::make({x.shape[0], C, x.shape[1], x.shape[2] / C}, DType::f32, x.device)};
  }
  void run_cpu(const KernelArgs& a) const override {
    const Tensor &x = a.in[0], &y = a.out[0];
    const int64_t C = a.in[1].size(0);
    cpu::lut_u8_planar(x.size(0), x.size(1), x.size(2) / C, C, x.data<uint8_t>(),
                       a.in[1].data<float>(), size_ptr(a), y.data<float>());
  }
  // channels-last output: the same element order as the input
  void run_cuda(const KernelArgs& a) const override {
    const Tensor& x = a.in[0];
    const int64_t C = a.in[1].size(0);
    cuda::lut_u8(x.size(0), x.size(1), x.size(2) / C, int(C), x.data<uint8_t>(),
                 a.in[1].data<float>(), size_ptr(a), a.out[0].data<float>(), a.stream);
  }
  static const int64_t* size_ptr(const KernelArgs& a) {
    return a.in[2].defined() ? a.in[2].data<int64_t>() : nullptr;
  }
  bool differentiable(size_t) const override { return false; }
  bool saves_input(size_t) const override { return false; }
};

}  // namespace

Tensor normalize_u8(const Tensor& x, const Tensor& lut, const Tensor& size) {
  return hr::apply(std::make_shared<NormalizeU8Op>(), {x, lut, size})[0];
}

}  // namespace hr::ops
