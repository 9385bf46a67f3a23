// Whole-model benchmark: HRNet training step and inference forward, ours and PyTorch's side by
// side in the same run. The step is the task's: pose (heatmap loss, Adam, as the official pose
// recipes) or classification (--model w32:cls or a cls config: cross-entropy, SGD with Nesterov
// momentum and weight decay, as the official cls recipes, at 224x224 unless given) or
// segmentation (--model w48:seg or a seg config: logits upsampled to the labels' size, the
// cross-entropy with the Cityscapes class weights and ignore label, SGD with momentum and weight
// decay, as the official Cityscapes recipe, at 512x1024 unless given) or detection (--model
// w32:det or an HRNet-FCOS config: HRNetV2p + FCOS, the FCOS loss on fixed dense targets made by
// data::fcos_targets from a fixed set of boxes (kDetBoxes: positives on every level at the
// default size), the SGD of maskrcnn-benchmark's make_optimizer (lr 0.01, momentum 0.9, wd 1e-4;
// biases at 2x the rate, no weight decay), at 800x1344 (1333x800 padded to 32) unless given;
// inference = the head's outputs of every level, without the post-processing).
//   bench_model [--model w32:pose|w32:cls|w48:seg|w32:det] [--config FILE] [--batch N] [--height H --width W]
//               [--device cpu|cuda] [--amp bf16|f16] [--steps S] [--warmup W] [--no-torch]
//               [--peer-results FILE] [--latency] [--save FILE] [--load FILE] [--profile] [--profile-shapes]
//               [--no-fuse] [--no-streams] [--no-capture] [--conv-backend auto|cudnn|igemm]
//               [--no-weight-copies] [--peer-args]
// --amp on the CPU: bf16 only, as ENGINE.PRECISION bf16 there (fp32 tensors, the convolutions'
// products in bf16: cpu::set_cpu_precision), against the fp32 peer.
// Ours runs twice: eager (op by op with autograd) and as a compiled static graph (fused batch
// norm, planned memory, branch streams; on CUDA replayed as a CUDA graph). --profile prints the
// graphs' per-op time on the CPU (training step and inference); --profile-shapes per op, input
// shape and attributes.
// The PyTorch peer (benchmarks/torch_model.py, the HRNet of tools/gen_model_reference.py with
// the same spec; det: its backbone with HRFPN and FCOSHead equal to the official modules, the
// same targets, loss and SGD groups) runs when a Python with torch is found ($HR_PYTHON,
// python3, /usr/bin/python3): on the CPU it is eager fp32 with the same thread count; on CUDA
// it is eager (autocast, channels_last, cudnn.benchmark) and torch.compile. Ratio = PyTorch
// time / our time (> 1: we are faster).
// --peer-results FILE reads the peer's "RESULT key value" lines from FILE instead of running it
// (tools/window/run.sh starts the peer early, so that torch.compile has compiled by then).
// --latency: inference only, at --batch (1 for latency), eager and as a captured graph, against
// the peer's eager and torch.compile(mode="reduce-overhead") inference at the same batch.
// --save FILE writes our results; --load FILE prints the table from them without measuring
// (tools/window/run.sh: ours is timed while the peer is paused, the peer later, alone).
// --peer-args prints benchmarks/torch_model.py's arguments for the same run and exits (the GPU
// window kit runs the peer itself).
// The levers, to measure each alone: --no-fuse (no graph fusion passes), --no-streams (every
// node on one stream / thread), --no-capture (CUDA: the static graph launched op by op, not
// replayed as a CUDA graph), --conv-backend auto|cudnn|igemm (CUDA: our implicit-GEMM kernels,
// cuDNN, or per shape the faster; HR_CONV_BACKEND), --no-weight-copies (under --amp on CUDA: the
// training graph casts every weight on each run instead of reading the 16-bit copies the
// optimizer's step writes).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <omp.h>

#include "benchmarks/bench_util.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/optim.h"
#include "engine/stream.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cuda/cuda_kernels.h"
#include "models/config.h"
#include "data/boxes.h"
#include "data/seg_classes.h"
#include "models/hrnet.h"

using namespace hr;
using namespace hr::models;

namespace {

struct Args {
  std::string model = "w32:pose", config;
  int64_t batch = 8, height = 0, width = 0;  // 0: 256x192 (pose), 224x224 (cls)
  std::string device = "cpu", amp;
  int steps = 5, warmup = 2;
  bool torch = true, profile = false, profile_shapes = false, latency = false;
  std::string peer_results, save, load;
  // the levers, one at a time (issue 11's switches): graph fusion passes, branch streams, CUDA
  // graph replay, the convolution backend on CUDA (HR_CONV_BACKEND), the optimizer's weight copies
  bool fuse = true, streams = true, capture = true, weight_copies = true;
  bool print_peer_args = false;
  std::string conv_backend;
  std::string levers() const {
    std::string l;
    if (!fuse) l += ", no fusion";
    if (!streams) l += ", no branch streams";
    if (!capture) l += ", no CUDA graph";
    if (!weight_copies) l += ", weights cast every step";
    if (!conv_backend.empty()) l += ", convolutions: " + conv_backend;
    return l;
  }
};

using Results = std::map<std::string, double>;

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto val = [&]() -> std::string {
      HR_CHECK(i + 1 < argc, "bench_model: ", k, " needs a value");
      return argv[++i];
    };
    if (k == "--model") a.model = val();
    else if (k == "--config") a.config = val();
    else if (k == "--batch") a.batch = std::atoll(val().c_str());
    else if (k == "--height") a.height = std::atoll(val().c_str());
    else if (k == "--width") a.width = std::atoll(val().c_str());
    else if (k == "--device") a.device = val();
    else if (k == "--amp") a.amp = val();
    else if (k == "--steps") a.steps = std::max(1, std::atoi(val().c_str()));
    else if (k == "--warmup") a.warmup = std::max(0, std::atoi(val().c_str()));
    else if (k == "--no-torch") a.torch = false;
    else if (k == "--profile") a.profile = true;
    else if (k == "--profile-shapes") a.profile = a.profile_shapes = true;
    else if (k == "--peer-results") a.peer_results = val();
    else if (k == "--latency") a.latency = true;
    else if (k == "--save") a.save = val();
    else if (k == "--load") a.load = val();
    else if (k == "--no-fuse") a.fuse = false;
    else if (k == "--no-streams") a.streams = false;
    else if (k == "--no-capture") a.capture = false;
    else if (k == "--no-weight-copies") a.weight_copies = false;
    else if (k == "--conv-backend") a.conv_backend = val();
    else if (k == "--peer-args") a.print_peer_args = true;
    else throw Error("bench_model: unknown argument " + k);
  }
  if (!a.conv_backend.empty()) {
    HR_CHECK(a.conv_backend == "auto" || a.conv_backend == "cudnn" || a.conv_backend == "igemm",
             "bench_model: --conv-backend must be auto, cudnn or igemm, got ", a.conv_backend);
    HR_CHECK(a.device == "cuda", "bench_model: --conv-backend is for --device cuda");
    ::setenv("HR_CONV_BACKEND", a.conv_backend.c_str(), 1);  // read by the CUDA dispatcher
  }
  HR_CHECK(a.device == "cpu" || a.device == "cuda", "bench_model: --device must be cpu or cuda");
  HR_CHECK(a.amp.empty() || a.amp == "bf16" || a.amp == "f16", "bench_model: --amp must be bf16 or f16");
  // On the CPU, --amp bf16 is ENGINE.PRECISION bf16: fp32 tensors, bf16 products in the
  // convolutions (cpu::set_cpu_precision); the PyTorch peer stays fp32.
  if (a.device == "cpu" && !a.amp.empty()) {
    HR_CHECK(a.amp == "bf16", "bench_model: on the CPU --amp must be bf16 (bf16 products)");
    HR_CHECK(cpu::cpu_bf16_supported(), "bench_model: --amp bf16 on the CPU needs AVX512_BF16 "
             "and the avx512 kernels (in use: ", cpu::cpu_isa(), ")");
    cpu::set_cpu_precision("bf16");
  }
  return a;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void sync(const Device& d) {
  if (d.is_cuda()) cuda::synchronize(current_stream());
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// "RESULT key value" lines, from the peer's output or a file holding it; other lines go to stderr
void parse_peer_line(const char* line, Results& r) {
  char key[128];
  double v;
  const char* p = std::strstr(line, "RESULT ");
  if (p && std::sscanf(p, "RESULT %127s %lf", key, &v) == 2) {
    r[key] = v;
    std::printf("peer: %s %.3f\n", key, v);  // as it comes: survives a peer that times out
    std::fflush(stdout);
  } else {
    std::fputs(line, stderr);
  }
}

Results read_peer_results(const std::string& path) {
  Results r;
  FILE* f = std::fopen(path.c_str(), "r");
  if (!f) {
    std::fprintf(stderr, "bench_model: no peer results in %s\n", path.c_str());
    return r;
  }
  char line[512];
  while (std::fgets(line, sizeof line, f)) parse_peer_line(line, r);
  std::fclose(f);
  return r;
}

// the classification head's widths for the peer
std::string seg_peer_args(const ModelSpec& spec) {
  return " --head seg --classes " + std::to_string(spec.num_classes) +
         (spec.align_corners ? " --align-corners" : "");
}

std::string cls_peer_args(const ModelSpec& spec) {
  std::string hc;
  for (int64_t c : spec.cls_head_channels) hc += (hc.empty() ? "" : ",") + std::to_string(c);
  return " --head cls --classes " + std::to_string(spec.num_classes) + " --head-channels " + hc +
         " --head-features " + std::to_string(spec.cls_features);
}

std::string det_peer_args(const ModelSpec& spec) {
  return " --head det --classes " + std::to_string(spec.num_classes) + " --det-channels " +
         std::to_string(spec.det_channels) + " --det-levels " + std::to_string(spec.det_levels) +
         " --det-conv-stride " + std::to_string(spec.det_conv_stride) + " --fcos-convs " +
         std::to_string(spec.fcos_num_convs) + " --prior-prob " +
         str_cat(spec.fcos_prior_prob) + (spec.norm_eval ? " --norm-eval" : "");
}

// det: the fixed boxes of every image, in thousandths of the input's width and height (pixel
// x = v * W / 1000, integer division; x2, y2 clamped to W - 1, H - 1), with their labels: a
// COCO-like mix from 30 px to nearly the whole image, so that at 800x1344 each of the 5 levels
// (MODEL.FCOS.TARGET_ASSIGN: max(l,t,r,b) in [-1,64], [64,128], [128,256], [256,512], [512,inf])
// has positives. benchmarks/torch_model.py (DET_BOXES) holds the same list and assigns the
// targets by the same rule (loss.py compute_targets_for_locations), and both print the
// positives per level.
struct DetBox {
  int64_t x1, y1, x2, y2, label;
};
constexpr DetBox kDetBoxes[] = {
    {100, 150, 130, 260, 1},   {300, 200, 330, 240, 3},   {700, 100, 760, 180, 10},
    {200, 600, 260, 700, 18},  {400, 400, 520, 700, 1},   {800, 500, 950, 900, 3},
    {50, 300, 400, 950, 62},   {550, 50, 980, 600, 57},   {20, 30, 980, 980, 7},
};

// the FCOS levels at an input of h x w: det_level_sizes, the default TARGET_ASSIGN ranges
// (64 * 2^(l-1) .. 64 * 2^l; the first from -1, the last to INF)
std::vector<data::FcosLevel> det_levels(const ModelSpec& spec, int64_t h, int64_t w) {
  const auto sizes = det_level_sizes(spec, h, w);
  std::vector<data::FcosLevel> lv;
  for (size_t l = 0; l < sizes.size(); ++l) {
    const double lo = l == 0 ? -1.0 : 64.0 * double(int64_t(1) << (l - 1));
    const double hi = l + 1 == sizes.size() ? 100000000.0 : 64.0 * double(int64_t(1) << l);
    lv.push_back({spec.det_stride(static_cast<int64_t>(l)), sizes[l][0], sizes[l][1], lo, hi});
  }
  return lv;
}

// The arguments of benchmarks/torch_model.py for the same model, shapes, steps and precision
// (--peer-args prints them: tools/window/run.sh runs the peer itself, in its own environment).
std::string peer_args(const Args& a, const ModelSpec& spec) {
  return " --width-base " + std::to_string(spec.stages.back().num_channels[0]) +
         (spec.head == Head::Cls   ? cls_peer_args(spec)
          : spec.head == Head::Seg ? seg_peer_args(spec)
          : spec.head == Head::Det ? det_peer_args(spec)
                                   : std::string()) +
         " --batch " + std::to_string(a.batch) + " --height " + std::to_string(a.height) +
         " --width " + std::to_string(a.width) + " --device " + a.device + " --steps " +
         std::to_string(a.steps) + " --warmup " + std::to_string(a.warmup) + " --threads " +
         std::to_string(omp_get_max_threads()) +
         (a.amp.empty() || a.device == "cpu" ? "" : " --amp " + a.amp) +
         (a.latency ? " --no-throughput --latency-batch " + std::to_string(a.batch) +
                          " --latency-steps " + std::to_string(a.steps)
                    : "");
}

Results run_torch(const Args& a, const ModelSpec& spec) {
  Results r;
  if (!a.peer_results.empty()) return read_peer_results(a.peer_results);
  const std::string py = a.torch ? bench::torch_python() : "";
  if (py.empty()) return r;
  const std::string cmd = py + " " + HR_BENCH_DIR + "/torch_model.py" + peer_args(a, spec);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  char line[512];
  while (std::fgets(line, sizeof line, p)) parse_peer_line(line, r);
  pclose(p);
  return r;
}

// Ours, measured: keys train_eager_ms, train_graph_ms, infer_eager_ms, infer_graph_ms,
// train_arena_gb, train_peak_gb (CUDA); with --latency only infer_eager_ms and infer_graph_ms.
Results measure(const Args& a, const ModelSpec& spec) {
  const Device dev = a.device == "cuda" ? Device::cuda() : Device::cpu();
  HR_CHECK(dev.is_cpu() || cuda::available(), "bench_model: no CUDA device");
  auto model = std::make_shared<HRNet>(spec, 1);
  model->to(dev);
  const Shape in{a.batch, 3, a.height, a.width};
  model->check_input(in);
  Tensor x = Tensor::randn(in, 2).to(dev);
  const bool cls = spec.head == Head::Cls, seg = spec.head == Head::Seg,
             det = spec.head == Head::Det;
  const DType amp = a.device == "cpu"     ? DType::f32  // bf16 products instead (parse)
                    : a.amp == "bf16" ? DType::bf16
                    : a.amp == "f16"  ? DType::f16
                                      : DType::f32;
  Tensor y0;  // the head's output shape (in the run's precision: no algorithm chosen for fp32)
  if (!det) {
    InferenceMode g;
    AutocastGuard ac(amp);
    y0 = (*model)(x);
  }
  // the task's targets, loss and optimizer
  Tensor target, tw, labels, class_weights, reg_targets, centerness, positive;
  std::unique_ptr<Optimizer> optimizer;
  if (det) {
    // the dense FCOS targets of kDetBoxes, the same for every image
    const std::vector<data::FcosLevel> lv = det_levels(spec, a.height, a.width);
    const int64_t P = data::fcos_num_locations(lv), N = a.batch;
    std::vector<data::Box> boxes;
    std::vector<int64_t> box_labels;
    for (const DetBox& b : kDetBoxes) {
      boxes.push_back({float(b.x1 * a.width / 1000), float(b.y1 * a.height / 1000),
                       float(std::min(b.x2 * a.width / 1000, a.width - 1)),
                       float(std::min(b.y2 * a.height / 1000, a.height - 1))});
      box_labels.push_back(std::min<int64_t>(b.label, spec.num_classes));
    }
    std::vector<int64_t> l(static_cast<size_t>(P));
    std::vector<float> r(static_cast<size_t>(4 * P)), c(static_cast<size_t>(P));
    data::fcos_targets(lv, boxes, box_labels, l.data(), r.data(), c.data());
    std::vector<int64_t> ln;
    std::vector<float> rn, cn, pn;
    std::string per_level;
    int64_t off = 0;
    for (const data::FcosLevel& v : lv) {
      int64_t k = 0;
      for (int64_t p = off; p < off + v.h * v.w; ++p) k += l[static_cast<size_t>(p)] > 0;
      per_level += (per_level.empty() ? "" : "/") + std::to_string(k);
      off += v.h * v.w;
    }
    for (int64_t n = 0; n < N; ++n) {
      ln.insert(ln.end(), l.begin(), l.end());
      rn.insert(rn.end(), r.begin(), r.end());
      cn.insert(cn.end(), c.begin(), c.end());
      for (int64_t v : l) pn.push_back(v > 0 ? 1.f : 0.f);
    }
    double csum = 0;
    for (float v : c) csum += v;
    std::printf("det targets: %zu boxes, %lld locations, positives per level %s, centerness sum "
                "%.4f (per image)\n",
                boxes.size(), (long long)P, per_level.c_str(), csum);
    labels = Tensor::from_vector_i64(ln, {N, P}, dev);
    reg_targets = Tensor::from_vector(rn, {N, 4, P}, DType::f32, dev);
    centerness = Tensor::from_vector(cn, {N, P}, DType::f32, dev);
    positive = Tensor::from_vector(pn, {N, P}, DType::f32, dev);
    // maskrcnn-benchmark's make_optimizer: "bias" in the name -> 2x the rate, no weight decay
    SGDOptions so;
    so.lr = 0.01;
    so.momentum = 0.9;
    so.weight_decay = 1e-4;
    so.group2_lr_factor = 2;
    so.group2_weight_decay = 0;
    std::vector<Tensor> params;
    int64_t nbias = 0;
    for (const auto& [k, p] : model->named_parameters()) {
      params.push_back(p);
      so.group2.push_back(k.find("bias") != std::string::npos);
      nbias += so.group2.back();
    }
    std::printf("det optimizer: SGD, %zu parameter tensors, %lld in the bias group\n",
                params.size(), (long long)nbias);
    optimizer = std::make_unique<SGD>(std::move(params), so);
  } else if (seg) {
    // labels at the input's size, one pixel in ten ignored (255)
    std::vector<int64_t> l(static_cast<size_t>(a.batch * a.height * a.width));
    for (size_t i = 0; i < l.size(); ++i)
      l[i] = i % 10 == 9 ? 255 : static_cast<int64_t>((i * 7919 / 13) % spec.num_classes);
    labels = Tensor::from_vector_i64(l, {a.batch, a.height, a.width}, dev);
    std::vector<float> w(static_cast<size_t>(spec.num_classes), 1.f);
    for (size_t k = 0; k < w.size() && k < data::kCityscapesClassWeights.size(); ++k)
      w[k] = data::kCityscapesClassWeights[k];
    class_weights = Tensor::from_vector(w, {spec.num_classes}, DType::f32, dev);
    SGDOptions so;
    so.lr = 0.01;
    so.momentum = 0.9;
    so.weight_decay = 5e-4;
    optimizer = std::make_unique<SGD>(model->parameters(), so);
  } else if (cls) {
    std::vector<int64_t> l(static_cast<size_t>(a.batch));
    for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<int64_t>((i * 7919) % spec.num_classes);
    labels = Tensor::from_vector_i64(l, {a.batch}, dev);
    SGDOptions so;
    so.lr = 0.05;
    so.momentum = 0.9;
    so.weight_decay = 1e-4;
    so.nesterov = true;
    optimizer = std::make_unique<SGD>(model->parameters(), so);
  } else {
    target = Tensor::randn(y0.shape(), 3, 0.1f).to(dev);
    tw = Tensor::ones({a.batch, y0.size(1), 1}).to(dev);
    optimizer = std::make_unique<Adam>(model->parameters(), AdamOptions{});
  }
  Optimizer& opt = *optimizer;

  // the official seg loss: logits upsampled to the labels' size, weighted cross-entropy
  std::function<Tensor(const Tensor&, const Tensor&)> seg_loss;
  if (seg)
    seg_loss = [&](const Tensor& y, const Tensor& l) {
      return ops::cross_entropy(ops::upsample_bilinear(y, {a.height, a.width}, spec.align_corners),
                                l, 255, 0.f, class_weights);
    };
  auto train_step = [&] {
    AutocastGuard ac(amp);
    opt.zero_grad();
    if (det) {
      Tensor loss = fcos_loss(model->forward_all(x), labels, reg_targets, centerness, positive);
      loss.backward();
      opt.step();
      return;
    }
    Tensor y = (*model)(x);
    Tensor loss = seg_loss ? seg_loss(y, labels)
                  : cls    ? ops::cross_entropy(y, labels)
                           : ops::heatmap_loss(y, target, tw);
    loss.backward();
    opt.step();
  };
  auto infer_step = [&] {
    AutocastGuard ac(amp);
    InferenceMode g;
    if (det) {
      std::vector<Tensor> ys = model->forward_all(x);  // every level's three maps
      return;
    }
    Tensor y = (*model)(x);
  };
  // peak_reset: the CUDA memory peak counts the timed steps only (the warm-up's algorithm
  // searches and first allocations left out, as the peer's)
  auto time_it = [&](auto&& fn, bool peak_reset = false) {
    for (int i = 0; i < a.warmup; ++i) fn();
    sync(dev);
    if (peak_reset && dev.is_cuda()) cuda::reset_peak_allocated_bytes();
    std::vector<double> t;
    for (int i = 0; i < a.steps; ++i) {
      double t0 = now_s();
      fn();
      sync(dev);
      t.push_back(now_s() - t0);
    }
    return median(t) * 1e3;
  };
  // the same steps as compiled static graphs
  auto compile = [&](bool training) {
    graph::Graph g(graph::GraphOptions{dev});
    std::vector<Tensor> ys;
    {
      AutocastGuard ac(amp);
      ys = model->forward_all(g.input("x", in));
    }
    graph::CompileOptions co;
    co.fuse = a.fuse;
    co.streams = a.streams;
    if (training && a.weight_copies)  // as hrnet-train: the 16-bit weights the optimizer writes
      co.weight_copy = [&](const Tensor& p, DType d) { return opt.weight_copy(p, d); };
    if (training && seg) {
      co.loss = seg_loss(ys.back(), g.input("labels", labels.shape(), DType::i64));
      g.output(co.loss, "loss");
    } else if (training) {
      co.loss = add_training_loss(g, *model, ys);
      g.output(co.loss, "loss");
    } else {
      co.inference = true;
      if (det)  // every level's three maps (ys[0] alone would leave the rest out)
        for (size_t i = 0; i < ys.size(); ++i) g.output(ys[i], "output" + std::to_string(i));
      else
        g.output(ys[0], "output");
    }
    auto e = std::make_unique<graph::Executable>(std::move(g), co);
    e->set_input("x", x);
    if (training && det) {
      e->set_input("labels", labels);
      e->set_input("reg_targets", reg_targets);
      e->set_input("centerness", centerness);
      e->set_input("positive", positive);
      for (Tensor p : model->parameters()) p.set_grad(e->grad(p));
    } else if (training && (cls || seg)) {
      e->set_input("labels", labels);
      for (Tensor p : model->parameters()) p.set_grad(e->grad(p));
    } else if (training) {
      e->set_input("target", target);
      e->set_input("weight", tw);
      for (Tensor p : model->parameters()) p.set_grad(e->grad(p));
    }
    return e;
  };
  std::unique_ptr<graph::Executable> gtrain, ginfer;
  auto graph_train_step = [&] {
    gtrain->run();
    opt.step();
  };
  auto graph_infer_step = [&] { ginfer->run(); };
  // CUDA: one eager run chooses the algorithms and warms the allocator, then capture
  auto prepare = [&](graph::Executable& e) {
    if (!dev.is_cuda()) return;
    e.run();
    sync(dev);
    if (a.capture) e.capture();
  };

  Results r;
  if (!a.latency) {
    model->train();
    if (dev.is_cuda()) cuda::empty_cache();
    r["train_eager_ms"] = time_it(train_step, /*peak_reset=*/true);
    if (dev.is_cuda()) r["train_peak_gb"] = cuda::peak_allocated_bytes() / 1e9;
    gtrain = compile(true);
    prepare(*gtrain);
    if (a.profile) gtrain->set_profiling(true, a.profile_shapes);
    r["train_graph_ms"] = time_it(graph_train_step);
    if (a.profile && dev.is_cpu())
      std::printf("graph training step, per op (CPU wall time):\n%s\n", gtrain->profile_report().c_str());
    r["train_arena_gb"] = gtrain->stats().arena_bytes / 1e9;
    gtrain.reset();
    opt.zero_grad();  // the graph's gradient views go with it
  }
  model->eval();
  r["infer_eager_ms"] = time_it(infer_step);
  ginfer = compile(false);
  prepare(*ginfer);
  if (a.profile) ginfer->set_profiling(true, a.profile_shapes);
  r["infer_graph_ms"] = time_it(graph_infer_step);
  if (a.profile && dev.is_cpu())
    std::printf("graph inference, per op (CPU wall time):\n%s\n", ginfer->profile_report().c_str());
  return r;
}

// "OURS key value" lines (--save / --load): the table can be printed again later with the
// peer's results, without measuring again
void save_results(const std::string& path, const Results& r) {
  FILE* f = std::fopen(path.c_str(), "w");
  HR_CHECK(f != nullptr, "bench_model: cannot write ", path);
  for (const auto& [k, v] : r) std::fprintf(f, "OURS %s %.6f\n", k.c_str(), v);
  std::fclose(f);
}

Results load_results(const std::string& path) {
  Results r;
  FILE* f = std::fopen(path.c_str(), "r");
  HR_CHECK(f != nullptr, "bench_model: cannot read ", path);
  char line[512], key[128];
  double v;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "OURS %127s %lf", key, &v) == 2) r[key] = v;
  std::fclose(f);
  HR_CHECK(r.count("infer_graph_ms"), "bench_model: no results of ours in ", path);
  return r;
}

void print_table(const Args& a, const Results& ours, const Results& peer) {
  const bool cuda = a.device == "cuda";
  const char* gname = cuda && a.capture ? "CUDA graph" : "graph";
  auto get = [](const Results& m, const std::string& k) {
    auto it = m.find(k);
    return it == m.end() ? -1.0 : it->second;
  };
  std::printf("\nbench_model%s: %s %lldx3x%lldx%lld, device %s%s, threads %d%s%s, median of %d %s\n\n",
              a.latency ? " --latency" : "", a.config.empty() ? a.model.c_str() : a.config.c_str(),
              (long long)a.batch, (long long)a.height, (long long)a.width, a.device.c_str(),
              a.amp.empty()          ? " fp32"
              : a.device == "cpu" ? " fp32, bf16 products (peer fp32)"
                                  : (" amp " + a.amp).c_str(),
              omp_get_max_threads(),
              cuda ? "" : (std::string(", CPU kernels ") + cpu::cpu_isa()).c_str(),
              a.levers().c_str(), a.steps,
              a.latency ? "runs" : "steps");
  if (a.latency) {
    std::printf("| what | ours ms | peer | peer ms | ratio (peer/ours) |\n|---|---:|---|---:|---:|\n");
    auto row = [&](const std::string& what, const std::string& our_key, const char* pname,
                   const std::string& key) {
      const double o = get(ours, our_key), p = get(peer, key);
      if (p < 0)
        std::printf("| %s | %.3f | %s | - | - |\n", what.c_str(), o, pname);
      else
        std::printf("| %s | %.3f | %s | %.3f | %.2f |\n", what.c_str(), o, pname, p, p / o);
    };
    const std::string g = std::string("inference, ") + gname;
    row(g, "infer_graph_ms", "PyTorch eager", "latency_eager_ms");
    if (cuda) row(g, "infer_graph_ms", "torch.compile reduce-overhead", "latency_compiled_ms");
    row("inference, eager", "infer_eager_ms", "PyTorch eager", "latency_eager_ms");
    return;
  }
  std::printf("| what | ours ms | ours img/s | peer | peer ms | ratio (peer/ours) |\n|---|---:|---:|---|---:|---:|\n");
  auto row = [&](const std::string& what, const std::string& our_key, const char* pname,
                 const std::string& key) {
    const double o = get(ours, our_key), p = get(peer, key);
    if (p < 0)
      std::printf("| %s | %.1f | %.1f | %s | - | - |\n", what.c_str(), o, a.batch * 1e3 / o, pname);
    else
      std::printf("| %s | %.1f | %.1f | %s | %.1f | %.2f |\n", what.c_str(), o, a.batch * 1e3 / o,
                  pname, p, p / o);
  };
  const std::string tg = std::string("train step, ") + gname, ig = std::string("inference, ") + gname;
  if (!cuda) {
    row(tg, "train_graph_ms", "PyTorch eager fp32", "train_eager_ms");
    row("train step, eager", "train_eager_ms", "PyTorch eager fp32", "train_eager_ms");
    row(ig, "infer_graph_ms", "PyTorch eager fp32", "infer_eager_ms");
    row("inference, eager", "infer_eager_ms", "PyTorch eager fp32", "infer_eager_ms");
    return;
  }
  row(tg, "train_graph_ms", "PyTorch eager", "train_eager_ms");
  row(tg, "train_graph_ms", "torch.compile", "train_compiled_ms");
  row("train step, eager", "train_eager_ms", "PyTorch eager", "train_eager_ms");
  row(ig, "infer_graph_ms", "PyTorch eager", "infer_eager_ms");
  row(ig, "infer_graph_ms", "torch.compile", "infer_compiled_ms");
  row("inference, eager", "infer_eager_ms", "PyTorch eager", "infer_eager_ms");
  std::printf("\npeak GPU memory in training: ours %.2f GB", get(ours, "train_peak_gb"));
  if (peer.count("train_peak_gb")) std::printf(", PyTorch eager %.2f GB", peer.at("train_peak_gb"));
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) try {
  Args a = parse(argc, argv);
  ModelSpec spec = a.config.empty() ? builtin_spec(a.model) : spec_from_config(Config::load(a.config));
  const Head h = spec.head;
  if (a.height == 0)
    a.height = h == Head::Cls ? 224 : h == Head::Seg ? 512 : h == Head::Det ? 800 : 256;
  if (a.width == 0)
    a.width = h == Head::Cls ? 224 : h == Head::Seg ? 1024 : h == Head::Det ? 1344 : 192;
  if (a.print_peer_args) {  // the peer's arguments alone, nothing measured
    std::printf("%s\n", peer_args(a, spec).substr(1).c_str());
    return 0;
  }
  const Results ours = a.load.empty() ? measure(a, spec) : load_results(a.load);
  if (!a.save.empty()) save_results(a.save, ours);
  auto get = [&](const char* k) { return ours.count(k) ? ours.at(k) : 0.0; };
  if (a.latency)
    std::printf("ours: inference at batch %lld: eager %.3f ms, graph %.3f ms\n", (long long)a.batch,
                get("infer_eager_ms"), get("infer_graph_ms"));
  else
    std::printf("ours: train step eager %.1f ms, graph %.1f ms (%.1f img/s); inference eager %.1f ms, "
                "graph %.1f ms (%.1f img/s); training graph arena %.2f GB%s\n",
                get("train_eager_ms"), get("train_graph_ms"), a.batch * 1e3 / get("train_graph_ms"),
                get("infer_eager_ms"), get("infer_graph_ms"), a.batch * 1e3 / get("infer_graph_ms"),
                get("train_arena_gb"),
                ours.count("train_peak_gb")
                    ? str_cat(", peak eager training memory ", get("train_peak_gb"), " GB").c_str()
                    : "");
  std::fflush(stdout);
  const Results peer = run_torch(a, spec);
  print_table(a, ours, peer);
  return 0;
} catch (const std::exception& e) {
  const bool named = std::strncmp(e.what(), "bench_model:", 12) == 0;  // parse()'s own errors
  std::fprintf(stderr, "%s%s\n", named ? "" : "bench_model: ", e.what());
  return 1;
}
