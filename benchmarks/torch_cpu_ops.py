#!/usr/bin/env python3
"""PyTorch CPU peer for benchmarks/bench_cpu_ops.cpp: times the same ops and prints one
machine-readable line per op spec:  TORCH <spec> <median ms>.

Specs (comma-separated integers after the op name):
  conv_fwd:N,C,H,W,K,R,S,stride,pad     F.conv2d (no bias)
  conv_bwd_data:...same...              torch.nn.grad.conv2d_input
  conv_bwd_weight:...same...            torch.nn.grad.conv2d_weight
  bn:N,C,H,W                            F.batch_norm training forward + autograd backward
  bnar:N,C,H,W                          relu(F.batch_norm(x) + r) training forward + backward
  up2:N,C,H,W                           nearest x2 interpolate forward + autograd backward
With no specs it times the HRNet-W32 shapes that bench_cpu_ops uses."""
import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def median_ms(fn, reps):
    """Median of reps calls after warm-up (>= 2 calls and >= 0.2 s: oneDNN JIT, page faults)."""
    t0, calls = time.perf_counter(), 0
    while calls < 2 or time.perf_counter() - t0 < 0.2:
        fn()
        calls += 1
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def make_case(spec, gen):
    op, _, args = spec.partition(":")
    v = [int(a) for a in args.split(",")]
    randn = lambda *shape: torch.randn(*shape, generator=gen)
    if op.startswith("conv_"):
        n, c, h, w, k, r, s, stride, pad = v
        x = randn(n, c, h, w)
        wt = randn(k, c, r, s) * (1.0 / (c * r * s)) ** 0.5
        y = F.conv2d(x, wt, None, stride, pad)
        dy = randn(*y.shape)
        if op == "conv_fwd":
            return lambda: F.conv2d(x, wt, None, stride, pad)
        if op == "conv_bwd_data":
            return lambda: torch.nn.grad.conv2d_input(x.shape, wt, dy, stride, pad)
        if op == "conv_bwd_weight":
            return lambda: torch.nn.grad.conv2d_weight(x, wt.shape, dy, stride, pad)
    if op == "bn":
        n, c, h, w = v
        x = randn(n, c, h, w).requires_grad_()
        gamma = (1 + 0.1 * randn(c)).requires_grad_()
        beta = (0.1 * randn(c)).requires_grad_()
        rm, rv = torch.zeros(c), torch.ones(c)
        dy = randn(n, c, h, w)

        def bn():
            y = F.batch_norm(x, rm, rv, gamma, beta, True, 0.1, 1e-5)
            torch.autograd.grad(y, (x, gamma, beta), dy)
        return bn
    if op == "bnar":
        n, c, h, w = v
        x = randn(n, c, h, w).requires_grad_()
        r = randn(n, c, h, w).requires_grad_()
        gamma = (1 + 0.1 * randn(c)).requires_grad_()
        beta = (0.1 * randn(c)).requires_grad_()
        rm, rv = torch.zeros(c), torch.ones(c)
        dy = randn(n, c, h, w)

        def bnar():
            y = torch.relu(F.batch_norm(x, rm, rv, gamma, beta, True, 0.1, 1e-5) + r)
            torch.autograd.grad(y, (x, r, gamma, beta), dy)
        return bnar
    if op == "up2":
        n, c, h, w = v
        x = randn(n, c, h, w).requires_grad_()
        dy = randn(n, c, 2 * h, 2 * w)

        def up():
            y = F.interpolate(x, scale_factor=2, mode="nearest")
            torch.autograd.grad(y, (x,), dy)
        return up
    raise SystemExit(f"torch_cpu_ops.py: unknown op spec '{spec}'")


def default_specs():
    convs = [(8, 32, 64, 48, 32, 3, 3, 1, 1), (8, 64, 32, 24, 64, 3, 3, 1, 1),
             (8, 128, 16, 12, 128, 3, 3, 1, 1), (8, 256, 8, 6, 256, 3, 3, 1, 1),
             (8, 32, 64, 48, 64, 3, 3, 2, 1), (8, 64, 32, 24, 128, 3, 3, 2, 1),
             (8, 128, 16, 12, 256, 3, 3, 2, 1), (8, 3, 256, 192, 64, 3, 3, 2, 1),
             (8, 64, 128, 96, 64, 3, 3, 2, 1), (8, 64, 32, 24, 32, 1, 1, 1, 0)]
    specs = []
    for cv in convs:
        for op in ("conv_fwd", "conv_bwd_data", "conv_bwd_weight"):
            specs.append(op + ":" + ",".join(map(str, cv)))
    for c, h, w in ((32, 64, 48), (64, 32, 24), (128, 16, 12), (256, 8, 6)):
        specs += [f"bn:8,{c},{h},{w}", f"bnar:8,{c},{h},{w}", f"up2:8,{c},{h},{w}"]
    return specs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: keep)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("specs", nargs="*")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    print(f"TORCH_INFO version={torch.__version__} threads={torch.get_num_threads()} "
          f"mkldnn={torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled}")
    gen = torch.Generator().manual_seed(0)
    for spec in a.specs or default_specs():
        fn = make_case(spec, gen)
        print(f"TORCH {spec} {median_ms(fn, a.reps):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
