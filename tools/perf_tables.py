#!/usr/bin/env python3
"""Condenses the CSVs written by benchmarks/bench_cuda_conv and bench_cuda_fuse (via
tools/gpu_check.sh) into the markdown tables kept in docs/PERFORMANCE.md.

Usage: tools/perf_tables.py OUTDIR   (the gpu_check output folder with bench_conv.csv, bench_fuse.csv)
"""
import collections
import csv
import math
import sys


def conv_table(path):
    rows = list(csv.DictReader(open(path)))
    by = collections.OrderedDict()
    for r in rows:
        key = (r["net"], r["layer"].strip(), r["N"])
        by.setdefault(key, {})[r["pass"]] = r
    print("| net | layer | batch | fwd ours/cuDNN us | ratio | dgrad ours/cuDNN us | ratio | wgrad ours/cuDNN us | ratio |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (net, layer, n), passes in by.items():
        cells = []
        for p in ("fwd", "dgrad", "wgrad"):
            r = passes.get(p)
            if r is None:
                cells += ["", ""]
                continue
            cells += [f"{float(r['ours_us']):.1f} / {float(r['cudnn_us']):.1f}", f"{float(r['speedup']):.2f}"]
        print(f"| {net} | {layer} | {n} | " + " | ".join(cells) + " |")
    for n in sorted({r["N"] for r in rows}, key=int):
        sel = [r for r in rows if r["N"] == n]
        for kind, f in (("3x3 stride 2", lambda r: r["R"] == "3" and r["stride"] == "2"),
                        ("3x3 stride 1", lambda r: r["R"] == "3" and r["stride"] == "1"),
                        ("1x1", lambda r: r["R"] == "1")):
            s = [float(r["speedup"]) for r in sel if f(r)]
            if s:
                g = math.exp(sum(map(math.log, s)) / len(s))
                print(f"\nbatch {n}, {kind}: geometric mean {g:.2f}, min {min(s):.2f}, max {max(s):.2f} over {len(s)} rows", end="")
        print()


def fuse_table(path):
    rows = list(csv.DictReader(open(path)))
    print("| net | pair | batch | low-res shape | fused us | unfused us | speedup |")
    print("|---|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['net']} | {r['pair']} | {r['N']} | {r['H']}x{r['W']} C{r['Cin']}->{r['Cout']} x{r['factor']} | "
              f"{float(r['fused_us']):.1f} | {float(r['baseline_us']):.1f} | {float(r['speedup']):.2f} |")
    for n in sorted({r["N"] for r in rows}, key=int):
        s = [float(r["speedup"]) for r in rows if r["N"] == n]
        g = math.exp(sum(map(math.log, s)) / len(s))
        print(f"\nbatch {n}: geometric mean {g:.2f}, min {min(s):.2f}, max {max(s):.2f}", end="")
    print()


def torch_table(path):
    rows = list(csv.DictReader(open(path)))
    print("| net | layer | pass | batch | ours us | cuDNN direct us | PyTorch us | PyTorch/ours |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        o, c, t = float(r["ours_us"]), float(r["cudnn_us"]), float(r["torch_us"])
        print(f"| {r['net']} | {r['layer'].strip()} | {r['pass']} | {r['N']} | {o:.1f} | {c:.1f} | {t:.1f} | {t / o:.2f} |")


if __name__ == "__main__":
    d = sys.argv[1]
    import os
    if os.path.exists(f"{d}/torch_conv_all.csv"):
        torch_table(f"{d}/torch_conv_all.csv")
        print()
    conv_table(f"{d}/bench_conv.csv")
    print()
    fuse_table(f"{d}/bench_fuse.csv")
