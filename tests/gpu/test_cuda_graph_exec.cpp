// The static-graph executor on CUDA: HRNet's training step (forward, loss, every gradient) with
// the branches on their own streams equals the CPU eager reference; a captured CUDA graph replays
// to the same results as the uncaptured run, with new inputs bound between replays; bf16
// autocast graphs stay within bf16 tolerances of fp32; inference graphs equal eager inference.
// What lets the host run ahead of the GPU: inputs uploaded from pinned staging memory
// (set_input), the capturable optimizers' hyper-parameters handed to each replay without an
// event recorded inside the capture, and the trainer's step (TrainStep) summing the losses on
// the device: none of them waits for the GPU (a stream held by a host function shows it), and
// the results equal eager steps with the learning rate changing every step.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/stream.h"
#include "heatmap_task.h"
#include "kernels/cuda/cuda_kernels.h"
#include "models/hrnet.h"
#include "small_specs.h"
#include "tasks/trainer.h"
#include "tensor_checks.h"
#include "test_util.h"

using namespace hr;
using namespace hr::models;
using hr::test::heatmap_batch;
using hr::test::HeatmapTask;
using hr::test::rand_tensor;
using hr::test::require_close_scaled;
using hr::test::small_spec;

namespace {

struct Step {
  std::unique_ptr<graph::Executable> exe;
  Shape out;
};

Step compile_pose_training(HRNet& model, const Shape& in, DType compute,
                           const graph::WeightCopyFn& weight_copy = nullptr) {
  graph::Graph g(graph::GraphOptions{Device::cuda()});
  Tensor y, loss;
  {
    AutocastGuard ac(compute);
    y = model.forward(g.input("x", in));
  }
  const Shape out = y.shape();
  loss = ops::heatmap_loss(y, g.input("target", out), g.input("weight", {out[0], out[1]}));
  g.output(loss, "loss");
  g.output(y, "heatmaps");
  graph::CompileOptions co;
  co.loss = loss;
  co.weight_copy = weight_copy;
  return {std::make_unique<graph::Executable>(std::move(g), co), out};
}

// Holds stream s at a host function until release(), or until 10 s pass (then expired()): work
// queued after it waits, so a call that waits for s returns only once the hold has expired.
// Releases and waits for s when destroyed.
class StreamBlocker {
 public:
  explicit StreamBlocker(cuda::Stream s) : s_(static_cast<cudaStream_t>(s)) {
    REQUIRE(cudaLaunchHostFunc(s_, &hold, this) == cudaSuccess);
  }
  ~StreamBlocker() {
    release();
    cudaStreamSynchronize(s_);
  }
  void release() { open_.store(true); }
  bool expired() const { return expired_.load(); }
  StreamBlocker(const StreamBlocker&) = delete;
  StreamBlocker& operator=(const StreamBlocker&) = delete;

 private:
  static void CUDART_CB hold(void* p) {
    auto* b = static_cast<StreamBlocker*>(p);
    const auto t0 = std::chrono::steady_clock::now();
    while (!b->open_.load()) {
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) {
        b->expired_.store(true);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  cudaStream_t s_;
  std::atomic<bool> open_{false}, expired_{false};
};

std::unique_ptr<Optimizer> make_test_optimizer(const std::string& kind, std::vector<Tensor> ps) {
  if (kind == "adam") {
    AdamOptions o;
    o.lr = 1e-3;
    return std::make_unique<Adam>(std::move(ps), o);
  }
  SGDOptions o;  // momentum (the first step initialises the buffers), Nesterov, weight decay
  o.lr = 0.01;
  o.momentum = 0.9;
  o.weight_decay = 1e-4;
  o.nesterov = true;
  return std::make_unique<SGD>(std::move(ps), o);
}

}  // namespace

TEST_CASE("cuda graph exec: training step on branch streams equals CPU eager, captured replay too",
          "[cuda][graph]") {
  const ModelSpec spec = small_spec(Head::Pose, false);
  HRNet cpu_model(spec, 5), gpu_model(spec, 5);
  cpu_model.train();
  gpu_model.train();
  gpu_model.to(Device::cuda());
  const Shape in{2, 3, 64, 64};
  Step s = compile_pose_training(gpu_model, in, DType::f32);
  CHECK(s.exe->stats().streams == 4);
  CHECK(s.exe->stats().events > 0);

  for (int round = 0; round < 3; ++round) {
    INFO("round " << round << (round > 0 ? " (captured graph replay)" : " (stream launches)"));
    const Tensor x = rand_tensor(in, 10 + round);
    const Tensor target = rand_tensor(s.out, 20 + round, 0.f, 1.f);
    const Tensor weight = rand_tensor({s.out[0], s.out[1]}, 30 + round, 0.25f, 1.f);
    // CPU eager reference on the same weights (batch statistics: running stats do not matter)
    for (Tensor p : cpu_model.parameters()) p.zero_grad();
    Tensor ref_y = cpu_model.forward(x);
    Tensor ref_loss = ops::heatmap_loss(ref_y, target, weight);
    ref_loss.backward();

    s.exe->set_input("x", x);
    s.exe->set_input("target", target);
    s.exe->set_input("weight", weight);
    s.exe->run();
    if (round == 0) {
      cuda::synchronize(cuda::default_stream());
      s.exe->capture();  // later rounds replay the graph
      REQUIRE(s.exe->captured());
    }
    require_close_scaled(s.exe->output("loss"), ref_loss.detach(), 1e-4, "loss");
    require_close_scaled(s.exe->output("heatmaps"), ref_y.detach(), 1e-4, "heatmaps");
    const NamedTensors pc = cpu_model.named_parameters(), pg = gpu_model.named_parameters();
    for (size_t i = 0; i < pc.size(); ++i)
      require_close_scaled(s.exe->grad(pg[i].second), pc[i].second.grad(), 1e-3,
                           "gradient of " + pc[i].first);
  }
}

TEST_CASE("cuda graph exec: bf16 autocast training graph is close to fp32", "[cuda][graph]") {
  const ModelSpec spec = small_spec(Head::Pose, false);
  HRNet a(spec, 8), b(spec, 8);
  a.train();
  b.train();
  a.to(Device::cuda());
  b.to(Device::cuda());
  const Shape in{4, 3, 64, 64};
  Step f32 = compile_pose_training(a, in, DType::f32),
       bf16 = compile_pose_training(b, in, DType::bf16);
  const Tensor x = rand_tensor(in, 1);
  const Tensor target = rand_tensor(f32.out, 2, 0.f, 1.f);
  const Tensor weight = rand_tensor({f32.out[0], f32.out[1]}, 3, 0.25f, 1.f);
  for (Step* s : {&f32, &bf16}) {
    s->exe->set_input("x", x);
    s->exe->set_input("target", target);
    s->exe->set_input("weight", weight);
    s->exe->run();
  }
  require_close_scaled(bf16.exe->output("loss"), f32.exe->output("loss"), 3e-2, "loss");
  require_close_scaled(bf16.exe->output("heatmaps").to(DType::f32), f32.exe->output("heatmaps"),
                       6e-2, "heatmaps");
  // gradients of the fp32 master weights are fp32 and close in relative L2
  const NamedTensors pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    const Tensor ga = f32.exe->grad(pa[i].second), gb = bf16.exe->grad(pb[i].second);
    REQUIRE(gb.dtype() == DType::f32);
    const std::vector<float> va = ga.to_vector(), vb = gb.to_vector();
    double num = 0, den = 0;
    for (size_t k = 0; k < va.size(); ++k) {
      num += (va[k] - vb[k]) * double(va[k] - vb[k]);
      den += double(va[k]) * va[k];
    }
    INFO("gradient of " << pa[i].first);
    CHECK(std::sqrt(num / std::max(den, 1e-30)) < 0.1);
  }
}

// bf16 training graphs read the 16-bit weights the optimizer's step writes (captured with it)
// instead of casting every weight on every run: the same steps as a graph that casts them, and
// the copies are those casts of the final weights. A graph whose bf16 weights were taken once
// (a copy nobody updates, what recording the casts eagerly used to give) drifts away: the test
// sees stale weights.
TEST_CASE("cuda graph exec: bf16 graphs read the optimizer's weight copies, captured",
          "[cuda][graph]") {
  const ModelSpec spec = small_spec(Head::Pose, true);
  const Shape in{2, 3, 64, 64};
  HRNet kept(spec, 41), cast(spec, 41), stale(spec, 41);
  for (HRNet* m : {&kept, &cast, &stale}) {
    m->train();
    m->to(Device::cuda());
  }
  auto ok = make_test_optimizer("sgd", kept.parameters()),
       oc = make_test_optimizer("sgd", cast.parameters()),
       os = make_test_optimizer("sgd", stale.parameters());
  for (Optimizer* o : {ok.get(), oc.get(), os.get()}) o->set_lr(0.1);  // steps that show
  ok->set_capturable(true);
  Step sk = compile_pose_training(kept, in, DType::bf16,
                                  [&](const Tensor& p, DType d) { return ok->weight_copy(p, d); });
  Step sc = compile_pose_training(cast, in, DType::bf16);
  Step ss = compile_pose_training(stale, in, DType::bf16,
                                  [](const Tensor& p, DType d) { return p.to(d); });
  int64_t convs = 0;
  for (const auto& [k, t] : kept.named_parameters()) convs += t.dim() == 4;
  CHECK(sk.exe->stats().weight_copies == convs);  // every convolution's weight
  CHECK(sc.exe->stats().weight_copies == 0);
  for (auto [m, s] : {std::pair{&kept, &sk}, std::pair{&cast, &sc}, std::pair{&stale, &ss}})
    for (Tensor p : m->parameters()) p.set_grad(s->exe->grad(p));
  std::vector<float> lk, lc, ls;
  for (int step = 0; step < 4; ++step) {
    const Tensor x = rand_tensor(in, 70 + step);
    const Tensor target = rand_tensor(sk.out, 80 + step, 0.f, 1.f);
    const Tensor weight = rand_tensor({sk.out[0], sk.out[1]}, 90 + step, 0.25f, 1.f);
    for (Step* s : {&sk, &sc, &ss}) {
      s->exe->set_input("x", x);
      s->exe->set_input("target", target);
      s->exe->set_input("weight", weight);
    }
    if (step == 0) {
      sk.exe->run();
      ok->step();
      cuda::synchronize(cuda::default_stream());
      sk.exe->capture([&] { ok->enqueue_step(); }, [&] { ok->prepare_step(); });
    } else {
      sk.exe->run();  // prepare_step, then forward + backward + the optimizer (and the copies)
    }
    sc.exe->run();
    oc->step();
    ss.exe->run();
    os->step();
    lk.push_back(sk.exe->output("loss").item());
    lc.push_back(sc.exe->output("loss").item());
    ls.push_back(ss.exe->output("loss").item());
    INFO("step " << step);
    CHECK(lk.back() == Approx(lc.back()).epsilon(1e-4));
  }
  CHECK(std::fabs(ls.back() - lc.back()) > 10 * std::fabs(lk.back() - lc.back()));
  const NamedTensors pk = kept.named_parameters(), pc = cast.named_parameters();
  for (size_t i = 0; i < pk.size(); ++i) {
    require_close_scaled(pk[i].second, pc[i].second, 1e-4, "parameter " + pk[i].first);
    if (pk[i].second.dim() != 4) continue;
    const Tensor c = ok->weight_copy(pk[i].second, DType::bf16);
    INFO("the copy of " << pk[i].first);
    REQUIRE(c.to_vector() == pk[i].second.to(DType::bf16).to_vector());
  }
}

TEST_CASE("cuda graph exec: inference graph equals eager inference, captured", "[cuda][graph]") {
  HRNet model(small_spec(Head::Seg, false), 4);
  model.eval();
  model.to(Device::cuda());
  const Tensor x = rand_tensor({2, 3, 64, 64}, 9);
  Tensor ref;
  {
    NoGradGuard ng;
    ref = model.forward(x.to(Device::cuda()));
  }
  for (bool inference : {false, true}) {
    INFO("inference pipeline (batch norm folded) " << inference);
    graph::Graph g(graph::GraphOptions{Device::cuda()});
    g.output(model.forward(g.input("x", x.shape())), "logits");
    graph::CompileOptions co;
    co.inference = inference;
    graph::Executable e(std::move(g), co);
    if (inference) CHECK(e.stats().folded > 0);
    e.set_input("x", x);
    e.run();
    cuda::synchronize(cuda::default_stream());
    e.capture();
    e.run();
    require_close_scaled(e.output("logits"), ref, inference ? 1e-4 : 1e-5, "logits");
  }
}

TEST_CASE("cuda graph exec: a whole training step (capturable Adam, SGD) replays like eager steps",
          "[cuda][graph]") {
  for (const std::string kind : {"adam", "sgd"}) {
    INFO(kind);
    const ModelSpec spec = small_spec(Head::Pose, true);
    HRNet eager(spec, 21), replayed(spec, 21);
    for (HRNet* m : {&eager, &replayed}) {
      m->train();
      m->to(Device::cuda());
    }
    std::unique_ptr<Optimizer> oe_ = make_test_optimizer(kind, eager.parameters()),
                               og_ = make_test_optimizer(kind, replayed.parameters());
    Optimizer &oe = *oe_, &og = *og_;
    og.set_capturable(true);
    const Shape in{2, 3, 64, 64};
    Step s = compile_pose_training(replayed, in, DType::f32);
    for (Tensor p : replayed.parameters()) p.set_grad(s.exe->grad(p));
    for (int step = 0; step < 4; ++step) {
      const Tensor x = rand_tensor(in, 40 + step);
      const Tensor target = rand_tensor(s.out, 50 + step, 0.f, 1.f);
      const Tensor weight = rand_tensor({s.out[0], s.out[1]}, 60 + step, 0.25f, 1.f);
      oe.zero_grad();
      Tensor loss = ops::heatmap_loss(eager.forward(x.to(Device::cuda())),
                                      target.to(Device::cuda()), weight.to(Device::cuda()));
      loss.backward();
      oe.step();
      oe.set_lr(oe.lr() * 0.5);  // a changing learning rate must reach the replayed graph
      s.exe->set_input("x", x);
      s.exe->set_input("target", target);
      s.exe->set_input("weight", weight);
      if (step == 0) {
        s.exe->run();
        og.step();
        cuda::synchronize(cuda::default_stream());
        s.exe->capture([&] { og.enqueue_step(); }, [&] { og.prepare_step(); });
      } else {
        s.exe->run();  // prepare_step, then forward + backward + the optimizer as one graph
      }
      og.set_lr(og.lr() * 0.5);
      INFO("step " << step);
      require_close_scaled(s.exe->output("loss"), loss.detach(), 1e-3, "loss");
    }
    CHECK(og.steps() == 4);
    const NamedTensors pe = eager.named_parameters(), pg = replayed.named_parameters();
    for (size_t i = 0; i < pe.size(); ++i)
      require_close_scaled(pg[i].second, pe[i].second, 2e-3, "parameter " + pe[i].first);
  }
}

// The optimizer alone, captured: the replays are queued back to back, a new learning rate and
// new gradients before each, first behind a held stream (prepare_step must not wait for the GPU:
// the old hand-off recorded its event inside the capture, and the first prepare_step after it
// failed with cudaErrorCapturedEvent), then freely; the parameters equal eager steps.
TEST_CASE("cuda graph exec: capturable SGD, Adam: replays queued without waiting, new lr each",
          "[cuda][graph]") {
  const cuda::Stream st = cuda::default_stream();
  const std::vector<Shape> shapes = {{15}, {1000}, {7, 27}};
  const int steps = 7;
  for (const std::string kind : {"adam", "sgd"}) {
    INFO(kind);
    std::vector<Tensor> pe, pg;
    std::vector<std::vector<Tensor>> grads(steps);
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Tensor p0 = rand_tensor(shapes[i], 70 + i).to(Device::cuda());
      pe.push_back(p0.clone());
      pg.push_back(p0.clone());
      pe.back().set_grad(Tensor::zeros(shapes[i], DType::f32, Device::cuda()));
      pg.back().set_grad(Tensor::zeros(shapes[i], DType::f32, Device::cuda()));
      for (int k = 0; k < steps; ++k)
        grads[k].push_back(rand_tensor(shapes[i], 100 * (k + 1) + i).to(Device::cuda()));
    }
    auto oe = make_test_optimizer(kind, pe), og = make_test_optimizer(kind, pg);
    og->set_capturable(true);
    auto lr_at = [&](int k) { return (kind == "adam" ? 1e-3 : 1e-2) * (1.0 + 0.5 * k); };
    // eager reference
    for (int k = 0; k < steps; ++k) {
      for (size_t i = 0; i < pe.size(); ++i) Tensor(pe[i].grad()).copy_(grads[k][i]);
      oe->set_lr(lr_at(k));
      oe->step();
    }
    // step 0 eagerly (creates the state), then the step captured
    for (size_t i = 0; i < pg.size(); ++i) Tensor(pg[i].grad()).copy_(grads[0][i]);
    og->set_lr(lr_at(0));
    og->step();
    cuda::synchronize(st);
    cuda::begin_capture(st);
    og->enqueue_step();
    const cuda::GraphExec g = cuda::end_capture(st);
    auto replay = [&](int k) {
      for (size_t i = 0; i < pg.size(); ++i) Tensor(pg[i].grad()).copy_(grads[k][i]);  // async
      og->set_lr(lr_at(k));
      og->prepare_step();
      cuda::launch_graph(g, st);
    };
    {
      StreamBlocker hold(st);
      replay(1);  // two steps: the two pinned slots (a third waits for the first's copy)
      replay(2);
      CHECK_FALSE(hold.expired());  // returned while the GPU was held: no host wait
    }
    for (int k = 3; k < steps; ++k) replay(k);
    cuda::synchronize(st);
    CHECK(og->steps() == steps);
    for (size_t i = 0; i < pe.size(); ++i)
      require_close_scaled(pg[i], pe[i], 1e-5, "parameter " + std::to_string(i));
    cuda::destroy_graph(g);
  }
}

// set_input from host memory stages the bytes in pinned memory and uploads them asynchronously:
// it returns while the stream is held, the caller may overwrite its tensor at once, and every
// run sees its own inputs (4-D: the NCHW -> NHWC layout change on the device; 2-D: as is).
TEST_CASE("cuda graph exec: set_input from host memory does not wait for the GPU",
          "[cuda][graph]") {
  const Shape xs{2, 3, 8, 8}, ws{2, 5};
  graph::Graph gr(graph::GraphOptions{Device::cuda()});
  gr.output(ops::relu(gr.input("x", xs)), "rx");
  gr.output(ops::relu(gr.input("w", ws)), "rw");
  graph::Executable e(std::move(gr));
  const cuda::Stream st = cuda::default_stream();
  const int runs = 6;
  std::vector<Tensor> xs_ref, ws_ref, rx, rw;
  for (int k = 0; k < runs; ++k) {  // allocated now: nothing below needs a new allocation
    rx.push_back(Tensor::empty(xs, DType::f32, Device::cuda(), MemoryFormat::ChannelsLast));
    rw.push_back(Tensor::empty(ws, DType::f32, Device::cuda()));
  }
  Tensor x = Tensor::zeros(xs), w = Tensor::zeros(ws);  // host tensors, reused every run
  auto bind_and_run = [&](int k) {
    const Tensor xk = rand_tensor(xs, 300 + k), wk = rand_tensor(ws, 400 + k);
    x.copy_(xk);
    w.copy_(wk);
    e.set_input("x", x);
    e.set_input("w", w);
    x.fill_(1e9f);  // the staged copy must not see this
    w.fill_(1e9f);
    e.run();
    rx[k].copy_(e.output("rx"));  // on the device, ordered after the run
    rw[k].copy_(e.output("rw"));
    xs_ref.push_back(ops::relu(xk));
    ws_ref.push_back(ops::relu(wk));
  };
  bind_and_run(0);  // the staging buffers are allocated by the first call
  cuda::synchronize(st);
  {
    StreamBlocker hold(st);
    bind_and_run(1);  // two calls per input: the two staging buffers
    bind_and_run(2);
    CHECK_FALSE(hold.expired());  // returned while the GPU was held: no host wait
  }
  for (int k = 3; k < runs; ++k) bind_and_run(k);  // back to back, the buffers reused
  for (int k = 0; k < runs; ++k) {
    INFO("run " << k);
    REQUIRE(rx[k].to_vector() == xs_ref[k].to_vector());
    REQUIRE(rw[k].to_vector() == ws_ref[k].to_vector());
  }
}

// The trainer's step on CUDA with the graph (inputs staged, each step one replay with the
// optimizer and the running loss sum inside) against the eager step on CUDA, the learning rate
// changing every step: the same losses (read every few steps, as the trainer does) and weights.
TEST_CASE("cuda graph exec: TrainStep's captured steps equal eager steps; losses read later",
          "[cuda][graph]") {
  HeatmapTask task;
  const ModelSpec spec = small_spec(Head::Pose, true);
  const Shape in{2, 3, 64, 64};
  for (const std::string kind : {"adam", "sgd"}) {
    INFO(kind);
    HRNet eager(spec, 31), replayed(spec, 31);
    for (HRNet* m : {&eager, &replayed}) {
      m->train();
      m->to(Device::cuda());
    }
    auto oe = make_test_optimizer(kind, eager.parameters()),
         og = make_test_optimizer(kind, replayed.parameters());
    tasks::TrainStep se(task, eager, *oe, Device::cuda(), DType::f32, false),
        sg(task, replayed, *og, Device::cuda(), DType::f32, true);
    const double lr0 = oe->lr();
    std::vector<float> eager_losses;
    auto run_steps = [&](int from, int to) {
      for (int k = from; k < to; ++k) {
        const data::Batch b = heatmap_batch(in, spec.num_joints, 500 + 10 * k);
        for (Optimizer* o : {oe.get(), og.get()}) o->set_lr(lr0 * (1.0 + 0.25 * k));
        eager_losses.push_back(se(b));
        sg.step(b);
      }
    };
    auto expect = [&](const tasks::TrainStep::Losses& l, int from, int to) {
      CHECK(l.steps == to - from);
      CHECK(l.samples == (to - from) * in[0]);
      double sum = 0;
      for (int k = from; k < to; ++k) sum += double(eager_losses[k]) * double(in[0]);
      CHECK(l.sum == Approx(sum).epsilon(1e-3));
      CHECK(l.last == Approx(eager_losses[to - 1]).epsilon(1e-3));
    };
    run_steps(0, 1);  // eager run, then the capture
    expect(sg.take_losses(), 0, 1);
    run_steps(1, 5);  // replays, nothing read back
    expect(sg.take_losses(), 1, 5);
    CHECK(sg.take_losses().steps == 0);
    run_steps(5, 7);
    expect(sg.take_losses(), 5, 7);
    REQUIRE(sg.executable() != nullptr);
    CHECK(sg.executable()->captured());
    const NamedTensors pe = eager.named_parameters(), pg = replayed.named_parameters();
    for (size_t i = 0; i < pe.size(); ++i)
      require_close_scaled(pg[i].second, pe[i].second, 2e-3, "parameter " + pe[i].first);
  }
}

// The trainer's step in bf16 (autocast) with the graph: every convolution's weight is read from
// the optimizer's 16-bit copy, which the captured step rewrites; the losses follow eager bf16
// steps (bf16 tolerance), and after the replays each copy is its weight's bf16 cast.
TEST_CASE("cuda graph exec: TrainStep in bf16 reads the optimizer's weight copies, captured",
          "[cuda][graph]") {
  HeatmapTask task;
  const ModelSpec spec = small_spec(Head::Pose, true);
  const Shape in{2, 3, 64, 64};
  HRNet eager(spec, 51), replayed(spec, 51);
  for (HRNet* m : {&eager, &replayed}) {
    m->train();
    m->to(Device::cuda());
  }
  auto oe = make_test_optimizer("sgd", eager.parameters()),
       og = make_test_optimizer("sgd", replayed.parameters());
  tasks::TrainStep se(task, eager, *oe, Device::cuda(), DType::bf16, false),
      sg(task, replayed, *og, Device::cuda(), DType::bf16, true);
  for (int k = 0; k < 5; ++k) {
    const data::Batch b = heatmap_batch(in, spec.num_joints, 700 + 10 * k);
    const float le = se(b), lg = sg(b);
    INFO("step " << k);
    CHECK(lg == Approx(le).epsilon(5e-2));
  }
  REQUIRE(sg.executable() != nullptr);
  CHECK(sg.executable()->captured());
  int64_t convs = 0;
  for (const Tensor& p : replayed.parameters()) {
    if (p.dim() != 4) continue;
    ++convs;
    const Tensor c = og->weight_copy(p, DType::bf16);
    REQUIRE(c.defined());
    REQUIRE(c.to_vector() == p.to(DType::bf16).to_vector());
  }
  CHECK(sg.executable()->stats().weight_copies == convs);
}

// The CUDA trainer uploads the crops' bytes (u8, a quarter of the fp32 input's) and normalises
// them on the device (ops::normalize_u8 in the captured graph, the table a parameter): the same
// steps as uploading the normalised input.
TEST_CASE("cuda graph exec: TrainStep with a raw u8 input equals the normalised input",
          "[cuda][graph]") {
  HeatmapTask task;
  const ModelSpec spec = small_spec(Head::Pose, true);
  const Shape in{2, 3, 64, 64};
  const Tensor lut = Tensor::from_vector(test::uniform(768, 6, -2.f, 2.f), {3, 256});
  HRNet a(spec, 61), b(spec, 61);
  for (HRNet* m : {&a, &b}) {
    m->train();
    m->to(Device::cuda());
  }
  auto oa = make_test_optimizer("sgd", a.parameters()),
       ob = make_test_optimizer("sgd", b.parameters());
  tasks::TrainStep sa(task, a, *oa, Device::cuda(), DType::f32, true),
      sb(task, b, *ob, Device::cuda(), DType::f32, true);
  for (int k = 0; k < 4; ++k) {
    data::Batch plain;
    const data::Batch raw = test::raw_heatmap_batch(in, spec.num_joints, 800 + 10 * k, lut, &plain);
    const float la = sa(plain), lb = sb(raw);
    INFO("step " << k);
    CHECK(lb == Approx(la).epsilon(1e-6));
  }
  CHECK(sb.executable()->captured());
  const NamedTensors pa = a.named_parameters(), pb = b.named_parameters();
  for (size_t i = 0; i < pa.size(); ++i)
    require_close_scaled(pb[i].second, pa[i].second, 1e-6, "parameter " + pa[i].first);
}
