// The graph compiler's passes one at a time (engine/graph/passes.h), on small recorded graphs:
// what each rewrites, adds or decides, checked on the graph itself (node kinds, edges, events,
// offsets) rather than through a whole compiled run (tests/test_graph.cpp does that).
#include <catch2/catch.hpp>

#include <cstdlib>
#include <string>

#include "engine/graph/executable.h"
#include "engine/graph/passes.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tensor_checks.h"
#include "test_util.h"

using namespace hr;
using namespace hr::graph;
using hr::test::rand_tensor;

namespace {

std::vector<std::string> op_names(const GraphIR& g) {
  std::vector<std::string> r;
  for (const graph::Node& n : g.nodes) r.push_back(n.op->name());
  return r;
}

// Every activation is produced before a node uses it.
void check_program_order(const GraphIR& ir) {
  for (size_t i = 0; i < ir.nodes.size(); ++i)
    for (V v : ir.nodes[i].in)
      if (v >= 0 && ir.values[v].kind == ValueKind::Activation)
        CHECK(ir.values[v].producer < static_cast<int>(i));
}

int count(const GraphIR& g, const std::string& op) {
  int k = 0;
  for (const graph::Node& n : g.nodes) k += op == n.op->name();
  return k;
}

// conv -> bn -> relu on branch 0, conv -> bn on stream 1 (then upsampled), summed, relu
struct TwoBranch {
  Conv2d c0{4, 4, 3, 1, 1, false}, c1{4, 4, 3, 2, 1, false};
  BatchNorm2d b0{4}, b1{4};
  Tensor forward(const Tensor& x) {
    Tensor hi = ops::relu(b0(c0(x))), lo;
    {
      StreamScope side(1);
      lo = ops::upsample_nearest_scale(b1(c1(x)), 2.0);
    }
    return ops::relu(ops::add(hi, lo));
  }
  void train(bool on) {
    for (Module* m : std::initializer_list<Module*>{&c0, &c1, &b0, &b1}) m->train(on);
  }
};

// TwoBranch in training mode, recorded on a [2, 4, 8, 8] input.
struct RecordedTwoBranch {
  TwoBranch net;
  Graph g;
  RecordedTwoBranch() {
    net.train(true);
    g.output(net.forward(g.input("x", {2, 4, 8, 8})), "y");
  }
};

}  // namespace

TEST_CASE("fusion merges batch norm with the add and ReLU that follow it", "[graph][passes]") {
  RecordedTwoBranch rec;
  GraphIR& ir = rec.g.ir();
  REQUIRE(count(ir, "batch_norm") == 2);
  REQUIRE(count(ir, "relu") == 2);
  // b0 -> relu fuses; b1 feeds an upsample, which is not a fusion partner
  CHECK(fuse_batch_norm_act(ir, false) == 1);
  CHECK(count(ir, "batch_norm_act") == 1);
  CHECK(count(ir, "batch_norm") == 1);
  CHECK(count(ir, "relu") == 1);
  // every value is still produced before it is used
  check_program_order(ir);
}

// CPU graphs: the fuse layers' nearest upsampling and the add after it become one node
// (upsample_nearest_add); the output and every gradient keep their bits (fuse off: apart).
TEST_CASE("an upsampling fused into its add keeps the bits, forward and backward",
          "[graph][passes]") {
  {
    RecordedTwoBranch rec;
    GraphIR& ir = rec.g.ir();
    REQUIRE(count(ir, "upsample_nearest") == 1);
    REQUIRE(count(ir, "add") == 1);
    CHECK(fuse_upsample_add(ir) == 1);
    CHECK(count(ir, "upsample_nearest") == 0);
    CHECK(count(ir, "add") == 0);
    CHECK(count(ir, "upsample_nearest_add") == 1);
    check_program_order(ir);
    CHECK(fuse_upsample_add(ir) == 0);
  }
  TwoBranch net;
  net.train(true);
  const Tensor x = rand_tensor({2, 4, 8, 8}, 21), target = rand_tensor({2, 4, 8, 8}, 22);
  const Tensor weight = ops::add(ops::mul(rand_tensor({2, 4, 1}, 23), 0.1f), Tensor::ones({2, 4, 1}));
  const std::vector<Tensor> params = {net.c0.weight, net.c1.weight, net.b0.weight, net.b1.bias};
  std::vector<Tensor> got[2];
  for (bool fuse : {false, true}) {
    Graph g;
    const Tensor y = net.forward(g.input("x", x.shape()));
    const Tensor loss =
        ops::heatmap_loss(y, g.input("t", target.shape()), g.input("w", weight.shape()));
    g.output(y, "y");
    g.output(loss, "loss");
    graph::CompileOptions opt;
    opt.fuse = fuse;
    opt.loss = loss;
    graph::Executable e(std::move(g), opt);
    CHECK(e.stats().upsample_adds == (fuse ? 1 : 0));
    CHECK(count(e.graph(), "upsample_nearest_add") == (fuse ? 1 : 0));
    e.set_input("x", x);
    e.set_input("t", target);
    e.set_input("w", weight);
    e.run();
    got[fuse].push_back(e.output("y").clone());
    for (const Tensor& p : params) got[fuse].push_back(e.grad(p).clone());
  }
  for (size_t i = 0; i < got[0].size(); ++i)
    hr::test::require_equal(got[1][i], got[0][i], i == 0 ? "y" : "a gradient");
}

TEST_CASE("folding rewrites conv + inference batch norm, keeping fused ones", "[graph][passes]") {
  TwoBranch net;
  net.train(false);
  Graph g;
  g.output(net.forward(g.input("x", {2, 4, 8, 8})), "y");
  GraphIR& ir = g.ir();
  fuse_batch_norm_act(ir, false);
  CHECK(fold_batch_norm(ir) == 1);  // b1 (before the upsample); b0 is fused with its ReLU
  CHECK(count(ir, "fold_batch_norm") == 1);
  CHECK(count(ir, "batch_norm") == 0);
  CHECK(count(ir, "batch_norm_act") == 1);
  // the fold node computes from parameters only, right before its convolution
  for (size_t i = 0; i < ir.nodes.size(); ++i) {
    if (std::string(ir.nodes[i].op->name()) != "fold_batch_norm") continue;
    for (V v : ir.nodes[i].in)
      if (v >= 0) CHECK(ir.values[v].kind == ValueKind::Param);
    REQUIRE(i + 1 < ir.nodes.size());
    CHECK(std::string(ir.nodes[i + 1].op->name()) == "conv2d");
    CHECK(ir.nodes[i + 1].in[1] == ir.nodes[i].out[0]);
    CHECK(ir.nodes[i + 1].in[2] == ir.nodes[i].out[1]);
  }
  const std::vector<char> pro = find_prologue(ir);
  int marked = 0;
  for (size_t i = 0; i < pro.size(); ++i)
    if (pro[i]) {
      ++marked;
      CHECK(std::string(ir.nodes[i].op->name()) == "fold_batch_norm");
    }
  CHECK(marked == 1);
}

// out = relu(b0(c0(x)) + bd(cd(x))) with the residual branch recorded after c0, as in a
// bottleneck with a downsample
struct ResidualBlock {
  Conv2d c0{4, 6, 3, 1, 1, false}, cd{4, 6, 1, 1, 0, false};
  BatchNorm2d b0{6}, bd{6};
  Tensor forward(const Tensor& x) {
    Tensor y0 = c0(x);
    Tensor r = bd(cd(x));
    return ops::relu(ops::add(b0(y0), r));
  }
};

TEST_CASE("folding with epilogues takes fused batch norms into their convolutions",
          "[graph][passes]") {
  ResidualBlock net;
  for (Module* m : std::initializer_list<Module*>{&net.c0, &net.cd, &net.b0, &net.bd})
    m->train(false);
  {
    // non-trivial statistics and affine parameters
    NoGradGuard ng;
    net.b0.running_mean.copy_(rand_tensor({6}, 3));
    net.b0.running_var.copy_(ops::add(ops::mul(rand_tensor({6}, 4), 0.2f), Tensor::ones({6})));
    net.b0.weight.copy_(rand_tensor({6}, 5));
    net.bd.bias.copy_(rand_tensor({6}, 6));
  }
  const Tensor x = rand_tensor({2, 4, 7, 5}, 7);
  Tensor ref;
  {
    NoGradGuard ng;
    ref = net.forward(x);
  }
  auto record = [&] {
    Graph g;
    g.output(net.forward(g.input("x", x.shape())), "y");
    return g;
  };
  {
    Graph g = record();
    GraphIR& ir = g.ir();
    REQUIRE(fuse_batch_norm_act(ir, false) == 1);
    CHECK(fold_batch_norm(ir, false) == 1);  // bd only: b0 keeps its fused pass
    CHECK(count(ir, "batch_norm_act") == 1);
  }
  Graph g = record();
  GraphIR& ir = g.ir();
  fuse_batch_norm_act(ir, false);
  CHECK(fold_batch_norm(ir, true) == 2);
  CHECK(count(ir, "batch_norm_act") == 0);
  CHECK(count(ir, "batch_norm") == 0);
  CHECK(count(ir, "add") == 0);
  CHECK(count(ir, "relu") == 0);
  int with_epilogue = 0;
  for (size_t i = 0; i < ir.nodes.size(); ++i) {
    const graph::Node& n = ir.nodes[i];
    if (std::string(n.op->name()) != "conv2d" || n.in.size() < 4) continue;
    ++with_epilogue;
    CHECK(n.op->attributes().find("relu") != std::string::npos);
    // moved after the residual's producer (the other folded convolution)
    const int p = ir.values[n.in[3]].producer;
    REQUIRE(p >= 0);
    CHECK(p < static_cast<int>(i));
    CHECK(std::string(ir.nodes[p].op->name()) == "conv2d");
  }
  CHECK(with_epilogue == 1);
  // every value is still produced before it is used
  check_program_order(ir);
  // compiled for the CPU (which folds with epilogues), the same values as eager
  graph::CompileOptions opt;
  opt.inference = true;
  graph::Executable e(record(), opt);
  e.verify_plan();
  CHECK(e.stats().folded == 2);
  e.set_input("x", x);
  e.run();
  hr::test::require_close_scaled(e.output("y"), ref, 1e-5, "folded with epilogue");
}

// Convolutions with constant weights on Winograd shapes (AVX-512 builds): c0 (folded, with a
// residual/ReLU epilogue) and c1 on 24x24 maps take F(4x4), c2 on 12x12 F(2x2); `down`
// (stride 2), the 1x1 head and the convolution whose weight is a graph input have no prepacked
// form or no constant weight.
struct Prepackable {
  Conv2d c0{16, 16, 3, 1, 1, false}, c1{16, 24, 3, 1, 1, true}, down{24, 16, 3, 2, 1, false},
      c2{16, 16, 3, 1, 1, false}, head{16, 8, 1, 1, 0, true};
  BatchNorm2d b0{16};
  Tensor forward(const Tensor& x, const Tensor& w) {
    const Tensor a = ops::relu(ops::add(b0(c0(x)), x));
    const Tensor c = c2(down(c1(a)));
    return head(ops::conv2d(c, w, Tensor(), {1, 1}, {1, 1}));
  }
};

TEST_CASE("CPU inference reads prepacked convolution weights, computed in the prologue",
          "[graph][passes]") {
  Prepackable net;
  for (Module* m : std::initializer_list<Module*>{&net.c0, &net.c1, &net.down, &net.c2,
                                                  &net.head, &net.b0})
    m->train(false);
  {
    NoGradGuard ng;
    net.b0.running_mean.copy_(rand_tensor({16}, 3));
    net.b0.running_var.copy_(ops::add(ops::mul(rand_tensor({16}, 4), 0.2f), Tensor::ones({16})));
  }
  const Tensor x = rand_tensor({2, 16, 24, 24}, 7), w = rand_tensor({16, 16, 3, 3}, 8);
  auto eager = [&] {
    NoGradGuard ng;
    return net.forward(x, w);
  };
  const Tensor ref = eager();
  Graph g;
  g.output(net.forward(g.input("x", x.shape()), g.input("w", w.shape())), "y");
  graph::CompileOptions opt;
  opt.inference = true;
  graph::Executable e(std::move(g), opt);
  e.verify_plan();
  const char* env = std::getenv("HR_CPU_WINOGRAD");
  const bool winograd =
      std::string(cpu::cpu_isa()) == "avx512" && !(env && std::string(env) == "0");
  const int expect = winograd ? 3 : 0;
  CHECK(e.stats().prepacked == expect);
  CHECK(count(e.graph(), "conv2d_prepack") == expect);
  CHECK(e.stats().prologue_nodes == e.stats().folded + expect);
  for (const graph::Node& n : e.graph().nodes)
    if (std::string(n.op->name()) == "conv2d" && n.in.size() > 4) {
      const int p = e.graph().values[n.in[4]].producer;
      REQUIRE(p >= 0);
      CHECK(std::string(e.graph().nodes[p].op->name()) == "conv2d_prepack");
    }
  e.set_input("x", x);
  e.set_input("w", w);
  e.run();
  hr::test::require_close_scaled(e.output("y"), ref, 1e-5, "prepacked");
  // the prepacked weights are the prologue's: recomputed on refresh, not before (without them,
  // c1 reads its parameter on every run)
  const Tensor before = e.output("y").clone();
  net.c1.weight.copy_(ops::mul(net.c1.weight, 1.5f));
  e.run();
  if (expect)
    hr::test::require_equal(e.output("y"), before, "before refresh");
  else
    hr::test::require_close_scaled(e.output("y"), eager(), 1e-5, "no prepacked weights");
  e.refresh_constants();
  e.run();
  hr::test::require_close_scaled(e.output("y"), eager(), 1e-5, "after refresh");
  // CompileOptions::prepack = false: the weights transformed on every run instead
  Graph g2;
  g2.output(net.forward(g2.input("x", x.shape()), g2.input("w", w.shape())), "y");
  opt.prepack = false;
  graph::Executable e2(std::move(g2), opt);
  CHECK(e2.stats().prepacked == 0);
  CHECK(count(e2.graph(), "conv2d_prepack") == 0);
  e2.set_input("x", x);
  e2.set_input("w", w);
  e2.run();
  hr::test::require_close_scaled(e2.output("y"), eager(), 1e-5, "not prepacked");
}

TEST_CASE("dead nodes go, side effects stay", "[graph][passes]") {
  Tensor w = rand_tensor({3, 2, 1, 1}, 1);
  Tensor gamma = Tensor::ones({3}), beta = Tensor::zeros({3});
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
  Graph g;
  Tensor x = g.input("x", {1, 2, 4, 4});
  ops::relu(x);                                                    // unused: removed
  ops::batch_norm(ops::conv2d(x, w), gamma, beta, rm, rv, true);  // updates rm, rv: kept
  g.output(ops::add(x, x), "y");
  GraphIR& ir = g.ir();
  CHECK(remove_dead_nodes(ir) == 1);
  CHECK(op_names(ir) == std::vector<std::string>{"start", "conv2d", "batch_norm", "add"});
}

TEST_CASE("weight copies replace the casts of fp32 parameters, not outputs or other casts",
          "[graph][passes]") {
  Tensor w1 = rand_tensor({4, 3}, 5), w2 = rand_tensor({4, 3}, 6), w3 = rand_tensor({4, 3}, 7);
  Tensor c1 = w1.to(DType::bf16), c2 = w2.to(DType::f16);
  Graph g;
  GraphIR& ir = g.ir();
  const Tensor x = g.input("x", {4, 3});
  auto param = [&](const Tensor& w) { return ir.symbolic(ir.param(w)); };
  const Tensor a = ops::cast(param(w1), DType::bf16);  // bound to c1
  const Tensor b = ops::cast(param(w2), DType::f16);   // bound to c2
  const Tensor c = ops::cast(param(w3), DType::bf16);  // no copy offered: stays
  const Tensor d = ops::cast(x, DType::bf16);          // not a parameter: stays
  const Tensor out = ops::cast(param(w1), DType::bf16);  // an output: stays the graph's
  g.output(ops::add(ops::add(ops::cast(a, DType::f32), ops::cast(b, DType::f32)),
                    ops::add(ops::cast(c, DType::f32), ops::cast(d, DType::f32))), "y");
  g.output(out, "w1_bf16");
  int asked = 0;
  const int64_t bound = bind_weight_copies(ir, [&](const Tensor& p, DType dt) {
    ++asked;
    if (p.impl() == w1.impl() && dt == DType::bf16) return c1;
    if (p.impl() == w2.impl() && dt == DType::f16) return c2;
    return Tensor();
  });
  CHECK(bound == 2);
  CHECK(asked == 3);  // the casts of w1 (the one not an output), w2, w3
  const V va = ir.value_of(a), vb = ir.value_of(b);
  CHECK(ir.values[va].kind == ValueKind::Param);
  CHECK(ir.values[va].tensor.impl() == c1.impl());
  CHECK(ir.values[vb].tensor.impl() == c2.impl());
  CHECK(ir.values[ir.value_of(c)].kind == ValueKind::Activation);
  CHECK(ir.values[ir.value_of(out)].kind == ValueKind::Activation);
  CHECK(count(ir, "cast") == 3 + 4);  // c, d, out; the four casts back to f32
  check_program_order(ir);
  for (const graph::Node& n : ir.nodes)  // no node defines a bound value any more
    for (V o : n.out) CHECK((o != va && o != vb));
  // a copy that does not fit is refused
  Graph g2;
  const Tensor e = ops::cast(g2.ir().symbolic(g2.ir().param(w1)), DType::bf16);
  g2.output(ops::cast(e, DType::f32), "y");
  CHECK_THROWS_WITH(bind_weight_copies(g2.ir(), [&](const Tensor&, DType) { return c2; }),
                    Catch::Contains("weight copy"));
}

TEST_CASE("reverse mode appends each op's backward ops and one sum per shared value",
          "[graph][passes]") {
  Tensor w = rand_tensor({3, 3, 3, 3}, 2).set_requires_grad(true);
  Graph g;
  Tensor x = g.input("x", {1, 3, 5, 5});
  Tensor h = ops::conv2d(x, w, Tensor(), {1, 1}, {1, 1});
  // h is used twice: its gradient is the sum of two parts
  Tensor loss = ops::heatmap_loss(ops::add(ops::relu(h), h), g.input("t", {1, 3, 5, 5}),
                                  g.input("tw", {1, 3}));
  g.output(loss, "loss");
  GraphIR& ir = g.ir();
  const size_t forward_nodes = ir.nodes.size();
  const Gradients gr = differentiate(ir, ir.value_of(loss));
  std::vector<std::string> added;
  for (size_t i = forward_nodes; i < ir.nodes.size(); ++i) added.push_back(ir.nodes[i].op->name());
  // heatmap loss, (add passes its gradient through), relu, the sum at h, conv's weight gradient
  // (x is an input: no data gradient)
  CHECK(added == std::vector<std::string>{"heatmap_loss_backward", "relu_backward", "add",
                                          "conv2d_backward_weight"});
  REQUIRE(gr.params.size() == 1);
  CHECK(gr.params[0].impl() == w.impl());
  CHECK(ir.values[gr.seed].kind == ValueKind::Constant);
  const V gw = gr.of_param.at(w.impl());
  CHECK(ir.values[gw].shape == w.shape());
  CHECK(std::string(ir.nodes[ir.values[gw].producer].op->name()) == "conv2d_backward_weight");
}

TEST_CASE("the schedule places events only where streams meet and nothing orders them yet",
          "[graph][passes]") {
  RecordedTwoBranch rec;
  GraphIR& ir = rec.g.ir();
  add_end_node(ir, {});
  const Schedule s = schedule(ir, true, {});
  CHECK(s.streams == 2);
  // stream 1 waits for the start (its first node) and the join on stream 0 waits for stream 1;
  // the end needs no extra wait: the join already ordered stream 1 before it
  int64_t waits = 0;
  for (const auto& w : s.waits) waits += static_cast<int64_t>(w.size());
  CHECK(waits == 2);
  CHECK(s.events == 2);
  for (size_t i = 0; i < ir.nodes.size(); ++i)
    for (int p : s.waits[i]) {
      CHECK(ir.nodes[p].stream != ir.nodes[i].stream);
      CHECK(s.records[p]);
      CHECK(s.before(ir, p, static_cast<int>(i)));
    }
  // one stream: no events at all, program order
  Graph h;
  h.output(rec.net.forward(h.input("x", {2, 4, 8, 8})), "y");
  add_end_node(h.ir(), {});
  const Schedule one = schedule(h.ir(), false, {});
  CHECK(one.streams == 1);
  CHECK(one.events == 0);
}

TEST_CASE("the memory plan shares bytes only between ordered values", "[graph][passes]") {
  RecordedTwoBranch rec;
  GraphIR& ir = rec.g.ir();
  add_end_node(ir, {});
  const Schedule s = schedule(ir, true, {});
  const MemoryPlan p = plan_memory(ir, s, {});
  verify_plan(ir, s, p);
  CHECK(p.arena_bytes < p.total_bytes);
  CHECK(p.peak_live_bytes <= p.arena_bytes);
  for (size_t v = 0; v < ir.values.size(); ++v) {
    const bool planned = ir.values[v].kind == ValueKind::Activation ||
                         ir.values[v].kind == ValueKind::Input;
    CHECK((p.offset[v] >= 0) == planned);
  }
  // a plan that ignores the events is caught
  MemoryPlan bad = p;
  for (auto& o : bad.offset)
    if (o >= 0) o = 0;
  CHECK_THROWS_WITH(verify_plan(ir, s, bad), Catch::Contains("share arena bytes"));
}
