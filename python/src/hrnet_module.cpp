// The Python module hrnet._hrnet (nanobind): models from an official YAML file or a built-in
// name, checkpoints, forward on numpy arrays and DLPack tensors, each head's image-level
// prediction (tasks::Predictor), ONNX export, and the trainer's training and evaluation. The
// pure-Python package python/hrnet/__init__.py re-exports it; docs/PYTHON.md is its guide.
//
// Arrays: inputs are anything nanobind takes as an ndarray (numpy arrays, PyTorch tensors on the
// CPU or a GPU, any object with __dlpack__); a float32 input on the model's device is read where
// it lies, without a copy. Outputs are arrays of the input's framework (numpy for numpy, torch
// for torch, else a DLPack-capable nanobind ndarray) over the engine's own memory, which they keep
// alive: no copy either. Long calls release the GIL; hrnet.train is interruptible with Ctrl-C.
#include <omp.h>

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/array.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <exception>
#include <functional>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "data/image.h"
#include "engine/checkpoint.h"
#include "engine/error.h"
#include "engine/stream.h"
#include "engine/tensor.h"
#include "kernels/cuda/cuda_kernels.h"
#include "models/config.h"
#include "models/hrnet.h"
#include "tasks/predict.h"
#include "tasks/task.h"
#include "tasks/trainer.h"
#ifdef HR_WITH_ONNX
#include "tasks/export.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace hr::python {
namespace {

// ---- arrays ---------------------------------------------------------------------------------

enum class Framework { None, Numpy, Torch };

Framework framework_of(const nb::handle& obj) {
  const std::string mod = nb::cast<std::string>(nb::getattr(obj.type(), "__module__", nb::str("")));
  if (mod.rfind("numpy", 0) == 0) return Framework::Numpy;
  if (mod.rfind("torch", 0) == 0) return Framework::Torch;
  return Framework::None;
}

DType dtype_of(const nb::dlpack::dtype& t) {
  using nb::dlpack::dtype_code;
  if (t.lanes == 1) {
    if (t.code == uint8_t(dtype_code::Float) && t.bits == 32) return DType::f32;
    if (t.code == uint8_t(dtype_code::Float) && t.bits == 16) return DType::f16;
    if (t.code == uint8_t(dtype_code::Bfloat) && t.bits == 16) return DType::bf16;
    if (t.code == uint8_t(dtype_code::Int) && t.bits == 64) return DType::i64;
  }
  throw Error("hrnet: arrays must be float32, float16, bfloat16 or int64; got DLPack type code " +
              std::to_string(t.code) + " with " + std::to_string(t.bits) + " bits");
}

nb::dlpack::dtype dlpack_dtype(DType d) {
  switch (d) {
    case DType::f32: return nb::dtype<float>();
    case DType::i64: return nb::dtype<int64_t>();
    case DType::f16: return {uint8_t(nb::dlpack::dtype_code::Float), 16, 1};
    case DType::bf16: return {uint8_t(nb::dlpack::dtype_code::Bfloat), 16, 1};
    default: break;
  }
  throw Error(std::string("hrnet: no DLPack type for ") + dtype_name(d));
}

// The engine's view of an array: its memory, not a copy (the array outlives the call that reads
// it: the caller holds it).
Tensor from_array(const nb::ndarray<nb::ro>& a) {
  Device dev = Device::cpu();
  if (a.device_type() == nb::device::cuda::value)
    dev = Device::cuda(a.device_id());
  else if (a.device_type() != nb::device::cpu::value)
    throw Error("hrnet: arrays must be on the CPU or a CUDA device (DLPack device type " +
                std::to_string(a.device_type()) + ")");
  Shape shape(a.ndim()), strides(a.ndim());
  for (size_t d = 0; d < a.ndim(); ++d) {
    shape[d] = static_cast<int64_t>(a.shape(d));
    strides[d] = a.stride(d);
  }
  return Tensor::from_blob(const_cast<void*>(a.data()), shape, strides, dtype_of(a.dtype()), dev,
                           nullptr);
}

// A framework-neutral array of the engine (what an input of neither numpy nor torch gets back):
// the DLPack protocol (__dlpack__, __dlpack_device__) over the engine's memory, so that
// np.from_dlpack, torch.from_dlpack and any other consumer take it without a copy.
struct Array {
  Tensor t;
};

template <class F>
nb::object dlpack_view(const Tensor& t) {
  const size_t nd = static_cast<size_t>(t.dim());
  std::vector<size_t> shape(nd);
  std::vector<int64_t> strides(nd);
  for (size_t d = 0; d < nd; ++d) {
    shape[d] = static_cast<size_t>(t.shape()[d]);
    strides[d] = t.strides()[d];
  }
  auto* keep = new Tensor(t);  // the array keeps the tensor (its storage) alive
  nb::capsule owner(keep, [](void* p) noexcept { delete static_cast<Tensor*>(p); });
  const int dev_type = t.device().is_cpu() ? nb::device::cpu::value : nb::device::cuda::value;
  const int dev_id = t.device().is_cpu() ? 0 : t.device().index;
  return nb::ndarray<F>(t.raw_data(), nd, shape.data(), owner, strides.data(),
                        dlpack_dtype(t.dtype()), dev_type, dev_id).cast();
}

// An array of `fw` over t's memory (numpy: copied to the host first when t is on a GPU).
nb::object to_array(Tensor t, Framework fw) {
  if (fw == Framework::Numpy && !t.device().is_cpu()) t = t.to(Device::cpu());
  if (!t.device().is_cpu()) cuda::synchronize(current_stream());  // read on another stream next
  switch (fw) {
    case Framework::Numpy: return dlpack_view<nb::numpy>(t);
    case Framework::Torch: return dlpack_view<nb::pytorch>(t);
    default: return nb::cast(Array{std::move(t)});
  }
}

// An image: a path (read and decoded by the engine) or an RGB uint8 array [H, W, 3].
struct ImageArg {
  data::Image image;
  std::string path;  // when read from a file
};
ImageArg image_arg(const nb::handle& obj) {
  ImageArg r;
  if (nb::isinstance<nb::str>(obj) || nb::hasattr(obj, "__fspath__")) {
    r.path = nb::cast<std::string>(nb::str(nb::module_::import_("os").attr("fspath")(obj)));
    return r;
  }
  nb::ndarray<nb::ro, uint8_t, nb::device::cpu> a;
  if (!nb::try_cast(obj, a))
    throw Error("hrnet: an image is a file path or an RGB uint8 array of shape (H, W, 3) on the CPU");
  if (a.ndim() != 3 || a.shape(2) != 3)
    throw Error("hrnet: an image array must have shape (H, W, 3), got " +
                std::to_string(a.ndim()) + " dimensions");
  const int h = static_cast<int>(a.shape(0)), w = static_cast<int>(a.shape(1));
  data::Image img(w, h, 3);
  const uint8_t* src = a.data();
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img.pixels[(size_t(y) * w + x) * 3 + c] =
            src[y * a.stride(0) + x * a.stride(1) + c * a.stride(2)];
  r.image = std::move(img);
  return r;
}
data::Image decode(ImageArg& a) {
  if (!a.path.empty()) a.image = data::read_image(a.path);
  return a.image;
}

Device parse_device(const std::string& d) {
  if (d == "cpu") return Device::cpu();
  if (d == "cuda") return Device::cuda(0);
  if (d.rfind("cuda:", 0) == 0 && d.size() > 5 &&
      d.find_first_not_of("0123456789", 5) == std::string::npos)
    return Device::cuda(std::stoi(d.substr(5)));
  throw Error("hrnet: device must be 'cpu', 'cuda' or 'cuda:N', got '" + d + "'");
}

DType parse_precision(const std::string& p) {
  if (p == "fp32") return DType::f32;
  if (p == "bf16") return DType::bf16;
  if (p == "fp16") return DType::f16;
  throw Error("hrnet: precision must be fp32, bf16 or fp16, got '" + p + "'");
}

std::vector<std::string> overrides_list(const nb::handle& o) {
  std::vector<std::string> out;
  if (o.is_none()) return out;
  if (nb::isinstance<nb::dict>(o)) {
    for (auto [k, v] : nb::borrow<nb::dict>(o)) {
      out.push_back(nb::cast<std::string>(nb::str(k)));
      // Python values as YAML: True/False -> true/false, lists as [a, b]
      if (nb::isinstance<nb::bool_>(v))
        out.push_back(nb::cast<bool>(v) ? "true" : "false");
      else if (nb::isinstance<nb::list>(v) || nb::isinstance<nb::tuple>(v)) {
        std::string s = "[";
        bool first = true;
        for (nb::handle e : v) {
          s += (first ? "" : ", ") + nb::cast<std::string>(nb::str(e));
          first = false;
        }
        out.push_back(s + "]");
      } else {
        out.push_back(nb::cast<std::string>(nb::str(v)));
      }
    }
    return out;
  }
  for (nb::handle e : o) out.push_back(nb::cast<std::string>(nb::str(e)));
  if (out.size() % 2)
    throw Error("hrnet: overrides come as KEY VALUE pairs; " + out.back() + " has no value");
  return out;
}

// ---- the model ------------------------------------------------------------------------------

class Model {
 public:
  Model(const std::string& source, std::optional<std::string> weights,
        const nb::handle& overrides, const std::string& device, bool graph,
        const std::string& precision) {
    auto ends = [&](const std::string& e) {
      return source.size() >= e.size() && source.compare(source.size() - e.size(), e.size(), e) == 0;
    };
    const bool is_file = source.find('/') != std::string::npos || ends(".yaml") || ends(".yml");
    if (is_file) {
      cfg_ = tasks::load_config(source, overrides_list(overrides));
      model_ = models::make_hrnet(*cfg_);
    } else {
      HR_CHECK(overrides.is_none() || nb::len(overrides) == 0,
               "hrnet: overrides go with a config file, not a built-in name (", source, ")");
      model_ = std::make_shared<models::HRNet>(models::builtin_spec(source));
    }
    run_.device = parse_device(device);
    HR_CHECK(run_.device.is_cpu() || cuda::available(), "hrnet: device ", device,
             " asked for, but no CUDA device is usable");
    run_.graph = graph;
    run_.autocast = parse_precision(precision);
    run_.progress = false;
    run_.workers = 1;
    if (weights) load(*weights);
  }

  void load(const std::string& path) {
    {
      nb::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> one_call(mu_);  // calls on one model take turns
      models::load_hrnet_checkpoint(*model_, path);
    }
    predictor_.reset();  // folded weights are recomputed
  }

  void save(const std::string& path) {
    nb::gil_scoped_release unlocked;
    std::lock_guard<std::mutex> one_call(mu_);  // calls on one model take turns
    save_safetensors(path, model_->state_dict(), {{"model", model_->spec().name}});
  }

  tasks::Predictor& predictor() {
    if (!predictor_)
      predictor_ = std::make_unique<tasks::Predictor>(*model_, cfg_ ? &*cfg_ : nullptr, run_);
    return *predictor_;
  }

  nb::object forward_all(const nb::handle& x_obj) {
    const Framework fw = framework_of(x_obj);
    nb::ndarray<nb::ro> x_arr;
    if (!nb::try_cast(x_obj, x_arr))
      throw Error("hrnet: the input must be an array: numpy, or a tensor with __dlpack__ (got " +
                  nb::cast<std::string>(nb::str(x_obj.type())) + ")");
    std::vector<Tensor> ys;
    {
      const Tensor x = from_array(x_arr);
      HR_CHECK(x.dtype() == DType::f32, "hrnet: the input must be float32, got ",
               dtype_name(x.dtype()));
      nb::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> one_call(mu_);  // calls on one model take turns
      ys = predictor().forward(x);
      for (Tensor& y : ys)
        if (y.dtype() != DType::f32) y = y.to(DType::f32);
    }
    nb::list out;
    for (const Tensor& y : ys) out.append(to_array(y, fw));
    return out;
  }

  nb::object forward(const nb::handle& x_obj) {
    nb::list all = nb::borrow<nb::list>(forward_all(x_obj));
    // the head's prediction: pose heatmaps, seg logits (OCR: the final ones), cls logits; det
    // gives every level's maps (a list)
    const models::Head h = model_->spec().head;
    if (h == models::Head::Det) return std::move(all);
    return all[h == models::Head::Seg ? nb::len(all) - 1 : 0];
  }

  // pose: keypoints [P, 17, 3] (x, y, score) and scores [P] of the people in boxes [P, 4|5]
  nb::object keypoints(const nb::handle& image, const nb::handle& boxes) {
    ImageArg img = image_arg(image);
    std::vector<std::array<float, 5>> bx;
    if (!boxes.is_none()) {
      nb::ndarray<nb::ro, float, nb::device::cpu> b;
      nb::object as_f32 = nb::module_::import_("numpy").attr("asarray")(boxes, "dtype"_a = "float32");
      HR_CHECK(nb::try_cast(as_f32, b) && (b.ndim() == 2 || (b.ndim() == 1 && b.shape(0) == 0)),
               "hrnet: boxes are an array of shape (P, 4) or (P, 5): x, y, w, h[, score]");
      if (b.ndim() == 2) {
        HR_CHECK(b.shape(1) == 4 || b.shape(1) == 5,
                 "hrnet: boxes are an array of shape (P, 4) or (P, 5), got (", b.shape(0), ", ",
                 b.shape(1), ")");
        for (size_t i = 0; i < b.shape(0); ++i) {
          std::array<float, 5> r{0, 0, 0, 0, 1.f};
          for (size_t k = 0; k < b.shape(1); ++k) r[k] = b.data()[i * b.stride(0) + k * b.stride(1)];
          bx.push_back(r);
        }
      }
    }
    std::vector<tasks::PersonKeypoints> people;
    {
      nb::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> one_call(mu_);  // calls on one model take turns
      people = predictor().keypoints(decode(img), bx);
    }
    const int64_t P = static_cast<int64_t>(people.size()), J = data::kNumJoints;
    Tensor kp = Tensor::empty({P, J, 3}), sc = Tensor::empty({P}), bb = Tensor::empty({P, 4});
    for (int64_t p = 0; p < P; ++p) {
      std::copy(people[p].keypoints.begin(), people[p].keypoints.end(), kp.data<float>() + p * J * 3);
      sc.data<float>()[p] = people[p].score;
      std::copy(people[p].bbox.begin(), people[p].bbox.end(), bb.data<float>() + p * 4);
    }
    nb::dict r;
    r["keypoints"] = to_array(kp, Framework::Numpy);
    r["scores"] = to_array(sc, Framework::Numpy);
    r["boxes"] = to_array(bb, Framework::Numpy);
    return r;
  }

  nb::object segment(const nb::handle& image) {
    ImageArg img = image_arg(image);
    std::vector<int64_t> labels;
    int h = 0, w = 0;
    {
      nb::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> one_call(mu_);  // calls on one model take turns
      const data::Image im = decode(img);
      h = im.height;
      w = im.width;
      labels = predictor().segment(im);
    }
    Tensor t = Tensor::empty({h, w}, DType::i64);
    std::copy(labels.begin(), labels.end(), t.data<int64_t>());
    return to_array(t, Framework::Numpy);
  }

  nb::list classify(const nb::handle& image, int k) {
    ImageArg img = image_arg(image);
    tasks::TopK top;
    {
      nb::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> one_call(mu_);  // calls on one model take turns
      const data::EncodedImage e = img.path.empty() ? data::EncodedImage::from_image(img.image)
                                                    : data::EncodedImage::read(img.path);
      top = predictor().classify(e, k);
    }
    const auto& names = predictor().class_names();
    nb::list out;
    for (const auto& [c, p] : top)
      out.append(nb::make_tuple(c, names[static_cast<size_t>(c)], p));
    return out;
  }

  nb::object detect(const nb::handle& image, float threshold) {
    ImageArg img = image_arg(image);
    std::vector<tasks::DetBox> found;
    {
      nb::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> one_call(mu_);  // calls on one model take turns
      found = predictor().detect(decode(img));
    }
    std::vector<tasks::DetBox> kept;
    for (const auto& d : found)
      if (d.score >= threshold) kept.push_back(d);
    const int64_t K = static_cast<int64_t>(kept.size());
    Tensor boxes = Tensor::empty({K, 4}), scores = Tensor::empty({K});
    Tensor labels = Tensor::empty({K}, DType::i64);
    nb::list names;
    for (int64_t i = 0; i < K; ++i) {
      std::copy(kept[i].xywh.begin(), kept[i].xywh.end(), boxes.data<float>() + 4 * i);
      scores.data<float>()[i] = kept[i].score;
      labels.data<int64_t>()[i] = kept[i].label;
      names.append(predictor().class_names().at(static_cast<size_t>(kept[i].label)));
    }
    nb::dict r;
    r["boxes"] = to_array(boxes, Framework::Numpy);
    r["scores"] = to_array(scores, Framework::Numpy);
    r["labels"] = to_array(labels, Framework::Numpy);
    r["names"] = names;
    return r;
  }

  // The head's image-level prediction: pose keypoints, seg label map, cls top-k, det boxes.
  nb::object predict(const nb::handle& image, const nb::handle& boxes, int k, float threshold) {
    switch (model_->spec().head) {
      case models::Head::Pose: return keypoints(image, boxes);
      case models::Head::Seg: return segment(image);
      case models::Head::Cls: return classify(image, k);
      case models::Head::Det: return detect(image, threshold);
    }
    throw Error("hrnet: predict: unknown head");
  }

#ifdef HR_WITH_ONNX
  nb::dict export_onnx(const std::string& path, std::optional<int64_t> height,
                       std::optional<int64_t> width, bool det_decode, bool ocr_aux) {
    tasks::ExportOptions o;
    o.path = path;
    if (height) o.height = *height;
    if (width) o.width = *width;
    o.det_decode = det_decode;
    o.ocr_aux = ocr_aux;
    tasks::ExportSummary rep;
    {
      nb::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> one_call(mu_);  // calls on one model take turns
      rep = tasks::export_onnx(*model_, cfg_ ? &*cfg_ : nullptr, o);
    }
    predictor_.reset();  // the model was recorded on its own device, in eval mode
    nb::dict r;
    r["path"] = rep.path;
    r["bytes"] = rep.bytes;
    r["nodes"] = rep.stats.nodes;
    r["initializers"] = rep.stats.initializers;
    r["folded_batch_norms"] = rep.stats.folded;
    nb::list outs;
    for (const auto& v : rep.stats.outputs) outs.append(nb::str(v.name.c_str()));
    r["outputs"] = outs;
    return r;
  }
#endif

  std::string name() const { return model_->spec().name; }
  std::string head() const { return models::head_name(model_->spec().head); }
  int64_t num_parameters() const {
    int64_t n = 0;
    for (const auto& [k, t] : model_->named_parameters()) n += t.numel();
    return n;
  }
  std::vector<std::string> class_names() { return predictor().class_names(); }
  std::pair<int64_t, int64_t> input_size() const {  // (height, width)
    return {model_->spec().image_size[1], model_->spec().image_size[0]};
  }
  std::string device() const { return run_.device.is_cpu() ? "cpu" : "cuda:" + std::to_string(run_.device.index); }
  nb::dict state_dict() {
    nb::dict d;
    for (const auto& [k, t] : model_->state_dict()) {
      Tensor h = Tensor::empty(t.shape(), t.dtype());
      h.copy_(t);
      d[nb::str(k.c_str())] = to_array(h, Framework::Numpy);
    }
    return d;
  }
  std::string repr() const {
    return "hrnet.Model(" + name() + ", head=" + head() + ", device=" + device() + ")";
  }

 private:
  std::optional<models::Config> cfg_;
  std::shared_ptr<models::HRNet> model_;
  tasks::RunOptions run_;
  std::unique_ptr<tasks::Predictor> predictor_;
  std::mutex mu_;  // the model and its compiled graphs serve one call at a time
};

// ---- training and evaluation ----------------------------------------------------------------

nb::dict summary_dict(const tasks::EvalSummary& r) {
  nb::dict d;
  d["score_name"] = r.score_name;
  d["score"] = r.score;
  nb::dict m;
  for (const auto& [k, v] : r.metrics) m[nb::str(k.c_str())] = v;
  d["metrics"] = m;
  d["count"] = r.count;
  d["skipped"] = r.skipped;
  d["seconds"] = r.seconds;
  d["table"] = r.table;
  return d;
}

// Runs `work` on a thread of its own while this (the Python) thread waits with the GIL released
// in short slices, checking for signals between them: Ctrl-C asks the trainer to stop at the
// next step boundary (tasks::request_stop), which then writes its checkpoint and throws
// tasks::Interrupted, raised here as hrnet.Interrupted (a KeyboardInterrupt). Work that ends
// without stopping (an evaluation has no step boundaries) then raises KeyboardInterrupt.
tasks::EvalSummary run_interruptible(const std::function<tasks::EvalSummary()>& work) {
  tasks::clear_stop();
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  tasks::EvalSummary result;
  std::exception_ptr error;
  bool signalled = false;
  std::thread worker([&] {
    try {
      result = work();
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mu);
    done = true;
    cv.notify_all();
  });
  for (;;) {
    {
      nb::gil_scoped_release unlocked;
      std::unique_lock<std::mutex> lock(mu);
      cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return done; });
      if (done) break;
    }
    if (PyErr_CheckSignals() != 0) {  // a KeyboardInterrupt (or a handler's exception) is set
      PyErr_Clear();
      tasks::request_stop(SIGINT);
      signalled = true;
    }
  }
  worker.join();
  tasks::clear_stop();
  if (error) std::rethrow_exception(error);
  if (signalled) {  // the work had no step boundary left to stop at: Python's usual interrupt
    PyErr_SetNone(PyExc_KeyboardInterrupt);
    throw nb::python_error();
  }
  return result;
}

// The experiment of `config` (with overrides and ENGINE.DEVICE), its synthetic data prepared
// when it asks for it, and `work` on its task and output directory (output_dir, else the official
// tools' OUTPUT_DIR/...), run interruptibly.
nb::dict run_experiment(const std::string& config, const nb::handle& overrides,
                        const std::optional<std::string>& output_dir,
                        const std::optional<std::string>& device,
                        const std::function<tasks::EvalSummary(tasks::Task&, const std::string&)>& work) {
  models::Config cfg = tasks::load_config(config, overrides_list(overrides));
  if (device) cfg.set("ENGINE.DEVICE", *device);
  return summary_dict(run_interruptible([&] {
    tasks::prepare_synthetic_data(cfg);
    std::unique_ptr<tasks::Task> task = tasks::make_task(cfg);
    return work(*task, output_dir ? *output_dir : tasks::experiment_output_dir(cfg, config));
  }));
}

nb::dict train(const std::string& config, const nb::handle& overrides,
               std::optional<std::string> output_dir, std::optional<bool> resume,
               std::optional<std::string> device) {
  return run_experiment(config, overrides, output_dir, device,
                        [&](tasks::Task& task, const std::string& out) {
                          return tasks::Trainer(task, out, resume ? (*resume ? 1 : 0) : -1).run();
                        });
}

nb::dict evaluate(const std::string& config, std::optional<std::string> weights,
                  const nb::handle& overrides, std::optional<std::string> output_dir,
                  std::optional<std::string> device) {
  return run_experiment(config, overrides, output_dir, device,
                        [&](tasks::Task& task, const std::string& out) {
                          return tasks::evaluate_experiment(task, weights.value_or(""), out);
                        });
}

}  // namespace
}  // namespace hr::python

NB_MODULE(_hrnet, m) {
  using namespace hr::python;
  using hr::python::Model;
  m.doc() = "HRNet engine: models, prediction, ONNX export, training and evaluation";

  // Errors: hrnet.Error carries the engine's one-line message; hrnet.Interrupted (a
  // KeyboardInterrupt) says where a stopped run left its checkpoint. Translators registered
  // later are tried first: the subclass goes last.
  nb::exception<hr::Error>(m, "Error", PyExc_RuntimeError);
  nb::exception<hr::tasks::Interrupted>(m, "Interrupted", PyExc_KeyboardInterrupt);

  nb::class_<Array>(m, "Array",
                    "An engine array (what inputs of neither numpy nor PyTorch get back): take it "
                    "with np.from_dlpack, torch.from_dlpack or any DLPack consumer, no copy.")
      .def("__dlpack__",
           [](const Array& a, nb::handle stream) { return dlpack_view<nb::no_framework>(a.t); },
           "stream"_a = nb::none())
      .def("__dlpack_device__",
           [](const Array& a) {
             return a.t.device().is_cpu()
                        ? std::make_pair(int(nb::device::cpu::value), 0)
                        : std::make_pair(int(nb::device::cuda::value), a.t.device().index);
           })
      .def("numpy", [](const Array& a) { return to_array(a.t, Framework::Numpy); },
           "The values as a numpy array (no copy on the CPU).")
      .def_prop_ro("shape", [](const Array& a) { return a.t.shape(); })
      .def_prop_ro("dtype", [](const Array& a) { return std::string(dtype_name(a.t.dtype())); })
      .def_prop_ro("device", [](const Array& a) { return a.t.device().str(); })
      .def("__repr__", [](const Array& a) { return "hrnet.Array(" + a.t.str() + ")"; });

  nb::class_<Model>(m, "Model",
                    "An HRNet from an official YAML file (path) or a built-in name "
                    "(hrnet.builtin_models()), optionally with weights (.pth or safetensors).")
      .def(nb::init<const std::string&, std::optional<std::string>, const nb::handle&,
                    const std::string&, bool, const std::string&>(),
           "source"_a, "weights"_a = nb::none(), "overrides"_a = nb::none(), "device"_a = "cpu",
           "graph"_a = true, "precision"_a = "fp32")
      .def("load", &Model::load, "path"_a, "Loads weights: official .pth or safetensors keys.")
      .def("save", &Model::save, "path"_a, "Writes the weights as safetensors (official keys).")
      .def("__call__", &Model::forward, "x"_a,
           "The head's output for x [N, 3, H, W] float32 (numpy or any DLPack tensor), as an "
           "array of the input's framework (det: every level's maps, a list).")
      .def("forward_all", &Model::forward_all, "x"_a,
           "Every head output (det: the class, box and centerness maps of each level; OCR: aux "
           "and final logits).")
      .def("keypoints", &Model::keypoints, "image"_a, "boxes"_a = nb::none(),
           "Pose: keypoints (P, 17, 3) as x, y, score, person scores (P,) and boxes (P, 4) of "
           "the people in boxes (P, 4|5: x, y, w, h[, score]; none: the whole image).")
      .def("predict", &Model::predict, "image"_a, "boxes"_a = nb::none(), "k"_a = 5,
           "threshold"_a = 0.0f,
           "The head's prediction on an image: pose keypoints(image, boxes), seg segment(image), "
           "cls classify(image, k), det detect(image, threshold).")
      .def("segment", &Model::segment, "image"_a,
           "Seg: the class of each pixel, (H, W) int64, by the official test inference.")
      .def("classify", &Model::classify, "image"_a, "k"_a = 5,
           "Cls: the k most probable classes as (index, name, probability).")
      .def("detect", &Model::detect, "image"_a, "threshold"_a = 0.0f,
           "Det: boxes (K, 4) as COCO x, y, w, h in image pixels, scores (K,), labels (K,), names.")
#ifdef HR_WITH_ONNX
      .def("export_onnx", &Model::export_onnx, "path"_a, "height"_a = nb::none(),
           "width"_a = nb::none(), "det_decode"_a = false, "ocr_aux"_a = false,
           "Exports the inference graph to ONNX as hrnet-export does: opset 17, batch norm "
           "folded, a dynamic batch; det_decode puts FCOS post-processing in the model, ocr_aux "
           "adds OCR's auxiliary logits (docs/EXPORT.md).")
#endif
      .def("state_dict", &Model::state_dict, "Weights and buffers by official key, as numpy arrays.")
      .def_prop_ro("name", &Model::name)
      .def_prop_ro("head", &Model::head)
      .def_prop_ro("device", &Model::device)
      .def_prop_ro("num_parameters", &Model::num_parameters)
      .def_prop_ro("class_names", &Model::class_names)
      .def_prop_ro("input_size", &Model::input_size, "(height, width) of MODEL.IMAGE_SIZE")
      .def("__repr__", &Model::repr);

  m.def("train", &train, "config"_a, "overrides"_a = nb::none(), "output_dir"_a = nb::none(),
        "resume"_a = nb::none(), "device"_a = nb::none(),
        "Trains as hrnet-train does (progress on the terminal; Ctrl-C stops at a step boundary "
        "with a checkpoint and raises hrnet.Interrupted); returns the last evaluation.");
  m.def("evaluate", &evaluate, "config"_a, "weights"_a = nb::none(), "overrides"_a = nb::none(),
        "output_dir"_a = nb::none(), "device"_a = nb::none(),
        "Evaluates as hrnet-eval does; returns the score and every metric.");
  m.def("builtin_models", [] { return hr::models::builtin_variants(); },
        "The backbone variants; hrnet.Model takes them with a head: pose_w32, seg_w48, "
        "cls_w18_small_v2, det_w32 (the official config files give the exact layouts).");
  m.def("cuda_available", [] { return hr::cuda::available(); });
  // the engine's CPU threads (OpenMP, shared with any other library of the process using it,
  // PyTorch's CPU ops included)
  m.def("get_num_threads", [] { return omp_get_max_threads(); });
  m.def("set_num_threads", [](int n) {
    HR_CHECK(n >= 1, "hrnet: set_num_threads takes a count >= 1, got ", n);
    omp_set_num_threads(n);
  }, "n"_a);
#ifdef HR_WITH_ONNX
  m.attr("has_onnx") = true;
#else
  m.attr("has_onnx") = false;
#endif
}
