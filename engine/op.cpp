// apply(): the one dispatcher from an op's definition to eager execution or graph recording.
#include "engine/op.h"

#include "engine/autograd.h"
#include "engine/graph/graph.h"
#include "engine/stream.h"

namespace hr {

Meta Meta::of(const Tensor& t) {
  if (!t.defined()) return Meta{};
  return Meta{true, t.shape(), t.dtype(), t.device()};
}

std::string Meta::str() const {
  if (!defined) return "absent";
  return str_cat(dtype_name(dtype), shape_str(shape), " ", device.str());
}

MemoryFormat device_format(const Shape& shape, Device device) {
  return device.is_cuda() && shape.size() == 4 ? MemoryFormat::ChannelsLast
                                               : MemoryFormat::Contiguous;
}

std::vector<Tensor> OpDef::backward(const GradArgs&) const {
  throw Error(str_cat(name(), " has no backward"));
}

void OpDef::to_onnx(OnnxEmitter&, const OnnxNode&) const {
  throw Error(str_cat(name(), " has no ONNX export"));
}

void run_kernel(const OpDef& op, const KernelArgs& a, Device device) {
  if (device.is_cpu())
    op.run_cpu(a);
  else
    op.run_cuda(a);
}

std::vector<Tensor> apply(OpPtr op, const std::vector<Tensor>& inputs) {
  std::vector<Meta> in(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) in[i] = Meta::of(inputs[i]);
  const std::vector<Meta> out = op->infer(in);
  if (graph::GraphIR* g = graph::recording_graph(inputs, op->name()))
    return graph::record(*g, op, inputs, out);

  Device dev = Device::cpu();
  bool have_dev = false;
  std::vector<Tensor> dense(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (!t.defined()) continue;
    // in-place operands are written where they are (the op's checks keep them dense)
    dense[i] = op->writes_input(i) ? t : t.contiguous(device_format(t.shape(), t.device()));
    if (!have_dev) dev = t.device();
    have_dev = true;
  }
  std::vector<Tensor> outputs(out.size());
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i].defined)
      outputs[i] = Tensor::empty(out[i].shape, out[i].dtype, out[i].device,
                                 device_format(out[i].shape, out[i].device));
  run_kernel(*op, KernelArgs{dense, outputs, dev.is_cuda() ? current_stream() : nullptr}, dev);
  op->on_run();
  record(op, inputs, dense, outputs);
  return outputs;
}

}  // namespace hr
