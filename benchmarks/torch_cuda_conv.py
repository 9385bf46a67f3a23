#!/usr/bin/env python3
"""PyTorch peer for benchmarks/bench_cuda_conv: times the same convolutions through PyTorch's
own cuDNN path (channels_last, bf16, torch.backends.cudnn.benchmark = True) with CUDA events,
L2 flushed before every rep, median of reps -- forward, data gradient and weight gradient via
torch.ops.aten.convolution_backward.

Usage: torch_cuda_conv.py BENCH_CONV_CSV OUT_CSV   (shapes are read from our benchmark's CSV)
"""
import csv
import statistics
import sys

import torch


def main():
    src, dst = sys.argv[1], sys.argv[2]
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    flush = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device=dev)
    rows = list(csv.DictReader(open(src)))
    out = []
    for r in rows:
        N, C, H, W, K, R, S, st = (int(r[k]) for k in ("N", "C", "H", "W", "K", "R", "S", "stride"))
        pad = R // 2
        x = torch.randn(N, C, H, W, device=dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        w = (torch.randn(K, C, R, S, device=dev, dtype=torch.bfloat16) * 0.1).to(memory_format=torch.channels_last)
        y = torch.nn.functional.conv2d(x, w, None, st, pad)
        dy = torch.randn_like(y).contiguous(memory_format=torch.channels_last)
        p = r["pass"]
        if p == "fwd":
            fn = lambda: torch.nn.functional.conv2d(x, w, None, st, pad)
        else:
            mask = [p == "dgrad", p == "wgrad", False]
            fn = lambda: torch.ops.aten.convolution_backward(
                dy, x, w, None, [st, st], [pad, pad], [1, 1], False, [0, 0], 1, mask)
        for _ in range(5):
            fn()
        times = []
        for _ in range(20):
            flush.zero_()
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1000.0)
        t = statistics.median(times)
        out.append({**{k: r[k] for k in ("net", "layer", "pass", "N", "C", "H", "W", "K", "R", "S", "stride", "ours_us", "cudnn_us")},
                    "torch_us": f"{t:.2f}"})
    with open(dst, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(out[0].keys()))
        wr.writeheader()
        wr.writerows(out)
    print(f"torch {torch.__version__}, cudnn {torch.backends.cudnn.version()}: {len(out)} rows -> {dst}")


if __name__ == "__main__":
    main()
