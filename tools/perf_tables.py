#!/usr/bin/env python3
"""Condenses the CSVs written by benchmarks/bench_cuda_conv and bench_cuda_fuse (via
tools/window/run.sh) into the markdown tables kept in docs/PERFORMANCE.md.

Usage: tools/perf_tables.py DIR   (a folder with bench_conv.csv, bench_fuse.csv and, for the
PyTorch columns, torch_conv_all.csv: the run's OUT/logs.tar.gz unpacked)
"""
import collections
import csv
import math
import sys


def geomean(xs):
    return math.exp(sum(map(math.log, xs)) / len(xs))


def spread(xs):
    return f"geometric mean {geomean(xs):.2f}, min {min(xs):.2f}, max {max(xs):.2f}"


def kind(r):
    return "1x1" if r["R"] == "1" else f"3x3 stride {r['stride']}"


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
        for k in ("3x3 stride 2", "3x3 stride 1", "1x1"):
            s = [float(r["speedup"]) for r in sel if kind(r) == k]
            if s:
                print(f"\nbatch {n}, {k}: {spread(s)} over {len(s)} rows", end="")
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
        print(f"\nbatch {n}: {spread(s)}", end="")
    print()


def torch_table(path):
    rows = list(csv.DictReader(open(path)))
    print("| net | layer | pass | batch | ours us | cuDNN direct us | PyTorch us | PyTorch/ours |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        o, c, t = float(r["ours_us"]), float(r["cudnn_us"]), float(r["torch_us"])
        print(f"| {r['net']} | {r['layer'].strip()} | {r['pass']} | {r['N']} | {o:.1f} | {c:.1f} | {t:.1f} | {t / o:.2f} |")
    # the summary kept in docs/PERFORMANCE.md: PyTorch time over each of ours, per batch and kind
    groups = {}
    for r in rows:
        o, c, t = float(r["ours_us"]), float(r["cudnn_us"]), float(r["torch_us"])
        groups.setdefault((int(r["N"]), kind(r)), []).append((t / o, t / c, t / min(o, c)))
    print("\n| batch | kind | rows | PyTorch / ours (igemm) | PyTorch / cuDNN legacy API | PyTorch / best of the two |")
    print("|---:|---|---:|---:|---:|---:|")
    for (n, k), v in sorted(groups.items()):
        cells = [f"{geomean([x[i] for x in v]):.2f} (min {min(x[i] for x in v):.2f})" for i in range(3)]
        print(f"| {n} | {k} | {len(v)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    d = sys.argv[1]
    import os
    if os.path.exists(f"{d}/torch_conv_all.csv"):
        torch_table(f"{d}/torch_conv_all.csv")
        print()
    conv_table(f"{d}/bench_conv.csv")
    print()
    fuse_table(f"{d}/bench_fuse.csv")
