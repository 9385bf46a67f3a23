// Static graphs (engine/graph.h) on the CPU: HRNet's forward, loss and every parameter gradient
// from a compiled graph equal eager autograd's; random stream interleavings give bit-identical
// results (the memory plan is valid for any order the streams allow); inference, Adam training
// over several steps, a hand-built research graph checked by finite differences, and errors.
#include <catch2/catch.hpp>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "models/hrnet.h"
#include "small_specs.h"
#include "tensor_checks.h"
#include "test_util.h"

using namespace hr;
using namespace hr::models;
using hr::test::rand_tensor;
using hr::test::require_close_scaled;
using hr::test::require_equal;
using hr::test::small_spec;

namespace {

// The inputs and the scalar training loss of each head, built the same way eagerly and in a graph.
struct Problem {
  Shape x_shape;
  Tensor x;
  std::vector<Tensor> aux;  // targets, weights, labels

  explicit Problem(Head head) {
    x_shape = head == Head::Det ? Shape{2, 3, 64, 64} : Shape{2, 3, 32, 32};
    x = rand_tensor(x_shape, 11);
    if (head == Head::Cls)
      aux = {Tensor::from_vector_i64({3, 7}, {2})};
    else if (head == Head::Seg) {
      std::vector<int64_t> lab(2 * 8 * 8);
      for (size_t i = 0; i < lab.size(); ++i) lab[i] = i % 7 == 3 ? 255 : static_cast<int64_t>(i % 5);
      aux = {Tensor::from_vector_i64(lab, {2, 8, 8})};
    }
  }

  // targets for heatmap-style losses on each output (made lazily from the output shapes)
  Tensor target(const Shape& s, size_t k) const { return rand_tensor(s, 100 + k, 0.f, 1.f); }
  Tensor weight(const Shape& s, size_t k) const {
    return rand_tensor({s[0], s[1]}, 200 + k, 0.25f, 1.f);
  }

  Tensor eager_loss(Head head, const std::vector<Tensor>& ys) const {
    if (head == Head::Cls || head == Head::Seg) return ops::cross_entropy(ys[0], aux[0]);
    Tensor loss;
    for (size_t k = 0; k < ys.size(); ++k) {
      Tensor l = ops::heatmap_loss(ys[k], target(ys[k].shape(), k), weight(ys[k].shape(), k));
      loss = k == 0 ? l : ops::add(loss, l);
    }
    return loss;
  }

  // The same loss recorded: the eager ops on symbolic outputs, the targets as graph inputs.
  Tensor graph_loss(Head head, graph::Graph& g, const std::vector<Tensor>& ys) const {
    if (head == Head::Cls || head == Head::Seg)
      return ops::cross_entropy(ys[0], g.input("labels", aux[0].shape(), DType::i64));
    Tensor loss;
    for (size_t k = 0; k < ys.size(); ++k) {
      const Shape& s = ys[k].shape();
      Tensor t = g.input("target" + std::to_string(k), s);
      Tensor w = g.input("weight" + std::to_string(k), {s[0], s[1]});
      Tensor l = ops::heatmap_loss(ys[k], t, w);
      loss = k == 0 ? l : ops::add(loss, l);
    }
    return loss;
  }

  void bind(Head head, graph::Executable& e, const std::vector<Shape>& out_shapes) const {
    e.set_input("x", x);
    if (head == Head::Cls || head == Head::Seg) {
      e.set_input("labels", aux[0]);
      return;
    }
    for (size_t k = 0; k < out_shapes.size(); ++k) {
      e.set_input("target" + std::to_string(k), target(out_shapes[k], k));
      e.set_input("weight" + std::to_string(k), weight(out_shapes[k], k));
    }
  }
};

struct Compiled {
  std::unique_ptr<graph::Executable> exe;
  std::vector<Shape> out_shapes;
};

Compiled compile_training(HRNet& model, Head head, const Problem& pb, bool fuse, bool streams,
                          bool reduce = false, bool cpu_branches = false) {
  graph::Graph g;
  std::vector<Tensor> ys = model.forward_all(g.input("x", pb.x_shape));
  Compiled c;
  for (const Tensor& y : ys) c.out_shapes.push_back(y.shape());
  Tensor loss = pb.graph_loss(head, g, ys);
  g.output(loss, "loss");
  g.output(ys[0], "out");
  graph::CompileOptions opt;
  opt.fuse = fuse;
  opt.streams = streams;
  opt.loss = loss;
  opt.reduce_gradients = reduce;
  opt.cpu_branches = cpu_branches;
  c.exe = std::make_unique<graph::Executable>(std::move(g), opt);
  pb.bind(head, *c.exe, c.out_shapes);
  return c;
}

}  // namespace

TEST_CASE("graph: HRNet training step (forward, loss, every gradient, BN statistics) equals eager",
          "[graph]") {
  for (Head head : {Head::Pose, Head::Seg, Head::Cls, Head::Det}) {
    for (bool fuse : {false, true}) {
      INFO("head " << head_name(head) << ", fuse " << fuse);
      const ModelSpec spec = small_spec(head, true);
      HRNet eager(spec, 5), compiled(spec, 5);
      eager.train();
      compiled.train();
      const Problem pb(head);

      std::vector<Tensor> ys = eager.forward_all(pb.x);
      Tensor loss = pb.eager_loss(head, ys);
      loss.backward();

      Compiled c = compile_training(compiled, head, pb, fuse, true);
      c.exe->verify_plan();
      c.exe->run();
      const graph::PlanStats& st = c.exe->stats();
      CHECK(st.streams == 4);  // one per resolution branch
      CHECK(st.events > 0);
      CHECK(st.arena_bytes < st.total_bytes);
      CHECK(st.peak_live_bytes <= st.arena_bytes);
      if (fuse) CHECK(st.fused > 0);
      else CHECK(st.fused == 0);

      const double tol = 2e-5;
      require_close_scaled(c.exe->output("loss"), loss.detach(), tol, "loss");
      require_close_scaled(c.exe->output("out"), ys[0].detach(), tol, "output");
      const NamedTensors pe = eager.named_parameters(), pg = compiled.named_parameters();
      REQUIRE(pe.size() == pg.size());
      REQUIRE(c.exe->trained_parameters().size() == pg.size());
      for (size_t i = 0; i < pe.size(); ++i)
        require_close_scaled(c.exe->grad(pg[i].second), pe[i].second.grad(), tol,
                             "gradient of " + pe[i].first);
      const NamedTensors be = eager.named_buffers(), bg = compiled.named_buffers();
      for (size_t i = 0; i < be.size(); ++i) {
        if (be[i].second.dtype() == DType::i64) {
          CHECK(be[i].second.to_vector_i64() == bg[i].second.to_vector_i64());
          continue;
        }
        require_close_scaled(bg[i].second, be[i].second, 1e-5, "buffer " + be[i].first);
      }
    }
  }
}

TEST_CASE("graph: any interleaving the streams allow gives bit-identical results", "[graph]") {
  // The memory plan lets values share bytes only when their accesses are ordered by stream order
  // and events; running the nodes in random orders that respect exactly those edges would
  // expose a plan that relied on program order.
  for (Head head : {Head::Pose, Head::Seg}) {
    const ModelSpec spec = small_spec(head, false);
    HRNet model(spec, 9);
    model.train();
    const Problem pb(head);
    Compiled c = compile_training(model, head, pb, true, true);
    c.exe->run();
    const Tensor loss = c.exe->output("loss").clone(), out = c.exe->output("out").clone();
    std::vector<Tensor> grads;
    for (const Tensor& p : c.exe->trained_parameters()) grads.push_back(c.exe->grad(p).clone());
    for (uint64_t seed : {1, 2, 3}) {
      INFO("head " << head_name(head) << ", seed " << seed);
      c.exe->run_interleaved(seed);
      require_equal(c.exe->output("loss"), loss, "loss");
      require_equal(c.exe->output("out"), out, "output");
      const auto params = c.exe->trained_parameters();
      for (size_t i = 0; i < params.size(); ++i)
        require_equal(c.exe->grad(params[i]), grads[i], "gradient " + std::to_string(i));
    }
  }
}

// CompileOptions::cpu_branches with 2 threads: a stage's branches side by side, one op per
// thread. The same loss, output and gradients as the graph run in program order (to float
// rounding: an op on one thread may sum in another order), and the same bits on every run.
TEST_CASE("graph: CPU branches on their own threads give the program-order results", "[graph]") {
  const int old = omp_get_max_threads();
  omp_set_num_threads(2);
  for (Head head : {Head::Pose, Head::Seg}) {
    INFO("head " << head_name(head));
    const ModelSpec spec = small_spec(head, false);
    HRNet a(spec, 9), b(spec, 9);
    a.train();
    b.train();
    const Problem pb(head);
    Compiled seq = compile_training(a, head, pb, true, true);
    Compiled par = compile_training(b, head, pb, true, true, false, /*cpu_branches=*/true);
    CHECK(seq.exe->stats().branch_segments == 0);
    CHECK(par.exe->stats().branch_segments > 0);
    seq.exe->run();
    par.exe->run();
    const Tensor loss = par.exe->output("loss").clone(), out = par.exe->output("out").clone();
    require_close_scaled(loss, seq.exe->output("loss"), 2e-5, "loss");
    require_close_scaled(out, seq.exe->output("out"), 2e-5, "output");
    const auto ps = seq.exe->trained_parameters(), pp = par.exe->trained_parameters();
    REQUIRE(ps.size() == pp.size());
    std::vector<Tensor> grads;
    for (size_t i = 0; i < pp.size(); ++i) {
      grads.push_back(par.exe->grad(pp[i]).clone());
      require_close_scaled(grads.back(), seq.exe->grad(ps[i]), 2e-5,
                           "gradient " + std::to_string(i));
    }
    par.exe->run();
    require_equal(par.exe->output("loss"), loss, "loss, second run");
    for (size_t i = 0; i < pp.size(); ++i)
      require_equal(par.exe->grad(pp[i]), grads[i], "gradient, second run " + std::to_string(i));
  }
  omp_set_num_threads(old);
}

// The data-parallel reduction pass (one rank here: the all-reduce is a copy; several ranks:
// test_distributed_apps, test_cuda_nccl): one all_reduce_mean node per gradient, right after
// the node that completes it, all on one stream no other node uses; the same gradients, bit for
// bit, in any interleaving the streams allow, and a plan that verifies.
TEST_CASE("graph: the gradient reduction pass, on its own stream, keeps every gradient", "[graph]") {
  const ModelSpec spec = small_spec(Head::Pose, false);
  HRNet model(spec, 9);
  model.train();
  const Problem pb(Head::Pose);
  Compiled plain = compile_training(model, Head::Pose, pb, true, true);
  Compiled red = compile_training(model, Head::Pose, pb, true, true, /*reduce=*/true);
  const graph::GraphIR& g = red.exe->graph();
  int reduce_stream = -1, other_max = 0;
  int64_t reductions = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const graph::Node& n = g.nodes[i];
    if (std::string(n.op->name()) != "all_reduce_mean") {
      other_max = std::max(other_max, n.stream);
      continue;
    }
    ++reductions;
    if (reduce_stream < 0) reduce_stream = n.stream;
    CHECK(n.stream == reduce_stream);
    // right after its input's producer, or after other reductions placed there
    const int producer = g.values[n.in[0]].producer;
    size_t j = i - 1;
    while (j > 0 && std::string(g.nodes[j].op->name()) == "all_reduce_mean") --j;
    CHECK(int(j) == producer);
  }
  const auto params = red.exe->trained_parameters();
  CHECK(reductions == int64_t(params.size()));
  CHECK(reduce_stream > 0);
  CHECK(red.exe->stats().streams == plain.exe->stats().streams + 1);
  plain.exe->run();
  red.exe->verify_plan();
  for (uint64_t seed : {0, 4, 5}) {
    INFO("seed " << seed);
    if (seed == 0)
      red.exe->run();
    else
      red.exe->run_interleaved(seed);
    require_equal(red.exe->output("loss"), plain.exe->output("loss"), "loss");
    for (const Tensor& p : params)
      require_equal(red.exe->grad(p), plain.exe->grad(p), "gradient");
  }
}

TEST_CASE("graph: inference forward equals eager eval mode, fused and not", "[graph]") {
  const ModelSpec spec = small_spec(Head::Pose, false);
  HRNet model(spec, 3);
  // non-trivial running statistics
  {
    Problem warm(Head::Pose);
    model.train();
    NoGradGuard ng;
    model.forward(warm.x);
  }
  model.eval();
  const Tensor x = rand_tensor({3, 3, 64, 32}, 21);
  Tensor ref;
  {
    NoGradGuard ng;
    ref = model.forward(x);
  }
  for (bool fuse : {false, true}) {
    graph::Graph g;
    g.output(model.forward(g.input("x", x.shape())), "heatmaps");
    graph::CompileOptions opt;
    opt.fuse = fuse;
    graph::Executable e(std::move(g), opt);
    e.verify_plan();
    e.set_input("x", x);
    e.run();
    // the same kernels on the same data: identical, fused or not
    require_equal(e.output("heatmaps"), ref, fuse ? "fused" : "unfused");
    // an inference plan keeps almost nothing alive: far below the no-reuse total
    INFO("arena " << e.stats().arena_bytes << ", no reuse " << e.stats().total_bytes);
    CHECK(e.stats().arena_bytes * 3 < e.stats().total_bytes);
  }
}

TEST_CASE("graph: the inference pipeline folds batch norm into convolutions", "[graph]") {
  // Folding changes the arithmetic (w * s instead of (conv - mean) * s), so the result equals
  // eager inference up to float rounding; the parameters are read once, until refreshed.
  for (Head head : {Head::Pose, Head::Seg, Head::Cls, Head::Det}) {
    INFO("head " << head_name(head));
    HRNet model(small_spec(head, false), 3);
    const Problem warm(head);
    {
      model.train();
      NoGradGuard ng;
      model.forward_all(warm.x);  // non-trivial running statistics
    }
    model.eval();
    const Tensor x = rand_tensor(warm.x_shape, 22);
    std::vector<Tensor> ref;
    {
      NoGradGuard ng;
      ref = model.forward_all(x);
    }
    graph::Graph g;
    const std::vector<Tensor> ys = model.forward_all(g.input("x", x.shape()));
    for (size_t k = 0; k < ys.size(); ++k) g.output(ys[k], "out" + std::to_string(k));
    graph::CompileOptions opt;
    opt.inference = true;
    graph::Executable e(std::move(g), opt);
    e.verify_plan();
    const graph::PlanStats& st = e.stats();
    CHECK(st.folded > 0);
    CHECK(st.fused > 0);
    // the folded weights and the convolutions' prepacked ones, computed once
    CHECK(st.prologue_nodes == st.folded + st.prepacked);
    e.set_input("x", x);
    e.run();
    for (size_t k = 0; k < ys.size(); ++k)
      require_close_scaled(e.output("out" + std::to_string(k)), ref[k], 1e-5,
                           "output " + std::to_string(k));
    // the weight of a folded convolution is read once, until refreshed
    Tensor w;
    const graph::GraphIR& ir = e.graph();
    for (const graph::Node& n : ir.nodes)
      if (std::string(n.op->name()) == "fold_batch_norm" && !w.defined())
        w = ir.values[n.in[0]].tensor;
    REQUIRE(w.defined());
    const Tensor before = e.output("out0").clone();
    w.copy_(ops::mul(w, 1.5f));
    e.run();
    require_equal(e.output("out0"), before, "before refresh");
    e.refresh_constants();
    e.run();
    std::vector<Tensor> ref2;
    {
      NoGradGuard ng;
      ref2 = model.forward_all(x);
    }
    require_close_scaled(e.output("out0"), ref2[0], 1e-5, "after refresh");
  }
}

TEST_CASE("graph: three optimizer steps from graph gradients equal eager training", "[graph]") {
  // SGD with momentum, not Adam: Adam's update lr*m/(sqrt(v)+eps) turns the float rounding of a
  // gradient near 0 (which the instruction set and the fused kernels change) into a difference
  // of up to lr in that element, and the next steps spread it; SGD's update is linear in the
  // gradients, so this compares the plumbing (the optimizer reading the graph's buffers, the
  // next run reading the updated parameters) to float rounding. Adam itself: test_ops_vs_torch.
  const ModelSpec spec = small_spec(Head::Pose, true);
  HRNet eager(spec, 13), compiled(spec, 13);
  eager.train();
  compiled.train();
  const Problem pb(Head::Pose);
  SGDOptions so;
  so.lr = 0.1;
  so.momentum = 0.9;
  so.weight_decay = 1e-4;
  so.nesterov = true;
  SGD oe(eager.parameters(), so), og(compiled.parameters(), so);
  Compiled c = compile_training(compiled, Head::Pose, pb, true, true);
  for (const Tensor& p : c.exe->trained_parameters()) {
    Tensor q = p;
    q.set_grad(c.exe->grad(p));  // a view of the arena: refreshed by every run
  }
  std::vector<std::vector<float>> init;
  for (const auto& [k, t] : eager.named_parameters()) init.push_back(t.to_vector());
  for (int step = 0; step < 3; ++step) {
    oe.zero_grad();
    Tensor loss = pb.eager_loss(Head::Pose, eager.forward_all(pb.x));
    loss.backward();
    c.exe->run();
    INFO("step " << step);
    require_close_scaled(c.exe->output("loss"), loss.detach(), 1e-4, "loss");
    const NamedTensors ge = eager.named_parameters(), gg = compiled.named_parameters();
    for (size_t i = 0; i < ge.size(); ++i)
      require_close_scaled(gg[i].second.grad(), ge[i].second.grad(), 1e-3,
                           "gradient " + ge[i].first);
    oe.step();
    og.step();
  }
  const NamedTensors pe = eager.named_parameters(), pg = compiled.named_parameters();
  double moved = 0;
  for (size_t i = 0; i < pe.size(); ++i) {
    require_close_scaled(pg[i].second, pe[i].second, 1e-4, "parameter " + pe[i].first);
    const std::vector<float> a = pe[i].second.to_vector();
    for (size_t k = 0; k < a.size(); ++k)
      moved = std::max(moved, double(std::fabs(a[k] - init[i][k])));
  }
  CHECK(moved > 1e-3);  // the steps did change the weights
}

TEST_CASE("graph: weight copies kept by the optimizer replace the casts of weights, same bits",
          "[graph]") {
  // Two linear layers whose weights are cast to a 16-bit type and back (as autocast casts them
  // on CUDA, spelled out so that it runs here), trained with SGD + momentum through a graph:
  //  - casts: every run casts the weights;
  //  - kept: the graph reads the optimizer's copies (CompileOptions::weight_copy), which its
  //    step rewrites;
  //  - stale: copies nobody updates, so that a graph reading old weights is seen to differ.
  for (DType dt : {DType::bf16, DType::f16}) {
    INFO(dtype_name(dt));
    enum Mode { kCasts, kKept, kStale };
    std::vector<std::vector<float>> params_after[3], losses(3);
    int64_t bound[3] = {};
    for (Mode mode : {kCasts, kKept, kStale}) {
      std::vector<Tensor> ps = {rand_tensor({16, 12}, 31), rand_tensor({16}, 32),
                                rand_tensor({5, 16}, 33), rand_tensor({5}, 34)};
      for (Tensor& p : ps) p.set_requires_grad(true);
      const Tensor x = rand_tensor({7, 12}, 35);
      graph::Graph g;
      auto q = [&](const Tensor& w) {  // recorded on the graph's value for w, as autocast does
        return ops::cast(ops::cast(g.ir().symbolic(g.ir().param(w)), dt), DType::f32);
      };
      const Tensor h = ops::relu(ops::linear(g.input("x", x.shape()), q(ps[0]), ps[1]));
      const Tensor loss = ops::sum_all(ops::mul(ops::relu(ops::linear(h, q(ps[2]), ps[3])), 0.1f));
      g.output(loss, "loss");
      SGDOptions so;
      so.lr = 0.05;
      so.momentum = 0.9;
      so.weight_decay = 1e-3;
      SGD opt(ps, so);
      graph::CompileOptions co;
      co.loss = loss;
      if (mode == kKept)
        co.weight_copy = [&](const Tensor& p, DType d) { return opt.weight_copy(p, d); };
      if (mode == kStale)
        co.weight_copy = [](const Tensor& p, DType d) { return p.to(d); };
      graph::Executable e(std::move(g), co);
      bound[mode] = e.stats().weight_copies;
      int casts = 0;
      for (const graph::Node& n : e.graph().nodes) casts += std::string(n.op->name()) == "cast";
      // forward: two casts to 16 bits (gone where bound), two back to f32; backward: the
      // gradients' casts, four
      CHECK(casts == (mode == kCasts ? 8 : 6));
      for (Tensor& p : ps) p.set_grad(e.grad(p));
      e.set_input("x", x);
      for (int step = 0; step < 4; ++step) {
        e.run();
        losses[mode].push_back(e.output("loss").item());
        opt.step();
      }
      for (const Tensor& p : ps) params_after[mode].push_back(p.to_vector());
      if (mode == kKept)  // the copies the optimizer kept are the casts of the final weights
        for (size_t i : {size_t(0), size_t(2)})
          require_equal(opt.weight_copy(ps[i], dt), ps[i].to(dt), "weight copy");
      CHECK_FALSE(opt.weight_copy(x, dt).defined());  // not a parameter of this optimizer
    }
    CHECK(bound[kCasts] == 0);
    CHECK(bound[kKept] == 2);
    CHECK(losses[kKept] == losses[kCasts]);
    CHECK(params_after[kKept] == params_after[kCasts]);
    CHECK(losses[kStale][0] == losses[kCasts][0]);
    CHECK(losses[kStale][1] != losses[kCasts][1]);
  }
}

TEST_CASE("graph: a hand-built research graph, gradients against finite differences", "[graph]") {
  // Two branches (full and half resolution) joined by upsampling and concatenation, a pooled
  // classifier, cross-entropy: the ops a research model would use, built directly.
  Tensor w1 = rand_tensor({6, 3, 3, 3}, 1, -0.5f, 0.5f).set_requires_grad(true);
  Tensor w2 = rand_tensor({5, 6, 3, 3}, 2, -0.3f, 0.3f).set_requires_grad(true);
  Tensor gamma = rand_tensor({6}, 3, 0.5f, 1.5f).set_requires_grad(true);
  Tensor beta = rand_tensor({6}, 4, -0.5f, 0.5f).set_requires_grad(true);
  Tensor rm = Tensor::zeros({6}), rv = Tensor::ones({6});
  Tensor fc = rand_tensor({4, 11}, 5, -0.5f, 0.5f).set_requires_grad(true);
  Tensor fcb = rand_tensor({4}, 6, -0.1f, 0.1f).set_requires_grad(true);
  const Tensor x = rand_tensor({2, 3, 8, 8}, 7);
  const Tensor labels = Tensor::from_vector_i64({1, 3}, {2});

  graph::Graph g;
  Tensor in = g.input("x", x.shape());
  Tensor a = ops::relu(ops::batch_norm(ops::conv2d(in, w1, Tensor(), {1, 1}, {1, 1}), gamma, beta,
                                       rm, rv, true));
  Tensor b;
  {
    graph::StreamScope side(1);
    b = ops::conv2d(a, w2, Tensor(), {2, 2}, {1, 1});  // half resolution
    b = ops::upsample_nearest_scale(ops::relu(b), 2.0);
  }
  Tensor cat = ops::concat({a, b}, 1);
  Tensor pooled = ops::global_avg_pool(ops::avg_pool2d(cat, {2, 2}, {2, 2}));
  Tensor logits = ops::linear(pooled, fc, fcb);
  Tensor loss = ops::cross_entropy(logits, g.input("labels", {2}, DType::i64));
  g.output(loss, "loss");
  graph::CompileOptions opt;
  opt.loss = loss;
  graph::Executable e(std::move(g), opt);
  e.verify_plan();
  CHECK(e.stats().streams == 2);
  e.set_input("x", x);
  e.set_input("labels", labels);

  // BN running statistics change with every run, but the loss in training mode does not depend
  // on them, so repeated runs for the differences are fine.
  auto loss_now = [&] {
    e.run();
    return static_cast<double>(e.output("loss").item());
  };
  loss_now();
  for (Tensor* p : {&w1, &w2, &gamma, &beta, &fc, &fcb}) {
    e.run();
    const std::vector<float> analytic = e.grad(*p).to_vector();
    std::vector<float> numeric(analytic.size());
    float* data = p->data<float>();
    // small: a ReLU kink a few 1e-3 away bends larger differences (seen on conv1); the loss
    // is deterministic, so float rounding is the only noise
    const float eps = 3e-4f;
    for (size_t i = 0; i < analytic.size(); ++i) {
      const float keep = data[i];
      data[i] = keep + eps;
      const double lp = loss_now();
      data[i] = keep - eps;
      const double lm = loss_now();
      data[i] = keep;
      numeric[i] = static_cast<float>((lp - lm) / (2 * eps));
    }
    INFO("parameter " << p->str());
    REQUIRE_CLOSE(analytic, numeric, 2e-3, 2e-2);
  }
}

TEST_CASE("graph: bad shapes and bindings are errors that name the op", "[graph]") {
  auto error_of = [](auto f) -> std::string {
    try {
      f();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  auto has = [](const std::string& s, const std::string& sub) { return s.find(sub) != std::string::npos; };
  graph::Graph g;
  Tensor x = g.input("x", {1, 3, 8, 8});
  Tensor w = Tensor::zeros({4, 5, 3, 3});
  const std::string conv_err = error_of([&] { ops::conv2d(x, w); });
  CHECK(has(conv_err, "conv2d"));
  CHECK(has(conv_err, "[1, 3, 8, 8]"));
  CHECK(has(error_of([&] { ops::add(x, g.input("y", {1, 3, 4, 4})); }), "add"));
  CHECK(has(error_of([&] { g.input("x", {1}); }), "already used"));
  CHECK(has(error_of([&] { ops::upsample_nearest_scale(g.input("z", {2, 3}), 2.0); }),
            "upsample_nearest"));
  // values of two graphs do not mix, a symbolic value has no data, a compiled graph is closed
  graph::Graph other;
  CHECK(has(error_of([&] { ops::add(x, other.input("x", {1, 3, 8, 8})); }), "two different graphs"));
  CHECK(has(error_of([&] { x.to_vector(); }), "no data"));
  const Tensor computed = ops::reshape(ops::global_avg_pool(x), {3});
  CHECK(has(error_of([&] { ops::batch_norm(x, Tensor::ones({3}), Tensor::zeros({3}), computed,
                                           Tensor::ones({3}), true); }),
            "updated in place"));

  graph::Graph h;
  Tensor hx = h.input("x", {1, 2, 4, 4});
  Tensor hy = ops::relu(hx);
  h.output(hy, "y");
  graph::Executable e(std::move(h), graph::CompileOptions());
  CHECK(has(error_of([&] { ops::relu(hy); }), "already compiled"));
  CHECK(has(error_of([&] { e.set_input("x", Tensor::zeros({1, 2, 4, 5})); }), "[1, 2, 4, 4]"));
  CHECK(has(error_of([&] { e.set_input("nope", Tensor::zeros({1})); }), "nope"));
  CHECK(has(error_of([&] { e.output("nope"); }), "nope"));
  CHECK(has(error_of([&] { e.capture(); }), "CUDA"));
  // HRNet rejects an input size its fuse layers cannot take, before building anything
  HRNet model(small_spec(Head::Pose, true), 1);
  graph::Graph m;
  const std::string hr_err = error_of([&] { model.forward_all(m.input("x", {1, 3, 40, 32})); });
  CHECK(has(hr_err, "multiple of 32"));
  CHECK(m.ir().nodes.size() == 1);  // only the start node: nothing was recorded
}
