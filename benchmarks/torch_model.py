#!/usr/bin/env python3
"""PyTorch peer of benchmarks/bench_model: the pose HRNet of tools/gen_model_reference.py (same
architecture and key names as ours) timed on the same input: a training step (forward, the
heatmap loss, backward, Adam) and an inference forward. CPU: eager fp32 with --threads threads.
CUDA: eager with channels_last + cudnn.benchmark (+ autocast with --amp), and torch.compile.
Prints lines "RESULT <key> <value>" that bench_model reads (times in ms, median of --steps).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from gen_model_reference import HRNet, official  # noqa: E402


def heatmap_loss(pred, gt, w):
    # JointsMSELoss(use_target_weight=True): mean over joints of 0.5 * MSE(w*pred, w*gt)
    w = w.reshape(w.shape[0], w.shape[1], 1, 1)
    return 0.5 * torch.mean((pred * w - gt * w) ** 2)


def timeit(fn, steps, warmup, cuda):
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--width-base", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", default="")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    cuda = a.device == "cuda"
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    amp_dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(a.amp)
    if cuda:
        torch.backends.cudnn.benchmark = True

    class Pose(torch.nn.Module):
        # the reference model returns a list of head outputs; the pose head has one
        def __init__(self):
            super().__init__()
            self.net = HRNet(official("pose", a.width_base, num_joints=17))

        def forward(self, x):
            y = self.net(x)
            return y[0] if isinstance(y, (list, tuple)) else y

    def build():
        return Pose().to(dev).to(memory_format=fmt)

    x = torch.randn(a.batch, 3, a.height, a.width, device=dev).to(memory_format=fmt)

    def measure(model, tag):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        with torch.no_grad():
            y0 = model(x)
        gt = torch.randn_like(y0) * 0.1
        w = torch.ones(a.batch, y0.shape[1], device=dev)

        def train():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(a.device, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = heatmap_loss(model(x).float(), gt, w)
            loss.backward()
            opt.step()

        def infer():
            with torch.no_grad(), torch.autocast(a.device, dtype=amp_dtype, enabled=amp_dtype is not None):
                model(x)

        model.train()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        print(f"RESULT train_{tag}_ms {timeit(train, a.steps, a.warmup, cuda):.3f}", flush=True)
        if cuda:
            print(f"RESULT train_peak_gb {torch.cuda.max_memory_allocated() / 1e9:.3f}" if tag == "eager" else "", flush=True)
        model.eval()
        print(f"RESULT infer_{tag}_ms {timeit(infer, a.steps, a.warmup, cuda):.3f}", flush=True)

    measure(build(), "eager")
    if cuda and not a.no_compile:
        measure(torch.compile(build()), "compiled")


if __name__ == "__main__":
    main()
