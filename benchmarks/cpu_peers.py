#!/usr/bin/env python3
"""The CPU inference runtimes beside ours (issue 17): one HRNet (the official pose W32 256x192 of
tools/gen_model_reference.py, the official initialisation drawn with a fixed seed), its weights
written as safetensors for our engine and exported to ONNX for ONNX Runtime and OpenVINO; every
runtime is first checked to give the same heatmaps as PyTorch on the same input, then timed on
the same input (median of --steps after --warmup), fp32, --threads threads.

Run through benchmarks/cpu_peers.sh, which makes the virtual environment (onnxruntime and
openvino from PyPI, numpy and torch from the system) and builds ours. Prints "RESULT key value"
lines (ms) and a table: peer time / our time (> 1: we are faster).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tools"))
from gen_model_reference import HRNet, official  # noqa: E402
from safetensors_out import read_safetensors, write_safetensors  # noqa: E402


def timeit(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    t = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", required=True, help="the build folder holding apps/ and benchmarks/")
    ap.add_argument("--width-base", type=int, default=32)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=192)
    ap.add_argument("--batches", default="8,1")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    import onnxruntime as ort
    import openvino as ov

    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    spec = official("pose", a.width_base, num_joints=17)
    net = HRNet(spec).eval()

    class Head(torch.nn.Module):  # the reference model returns a list of head outputs
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x)[0]

    model = Head(net).eval()
    work = tempfile.mkdtemp(prefix="hr_cpu_peers_")
    weights = os.path.join(work, "w.safetensors")
    write_safetensors(weights, {k: v.detach().numpy().copy() for k, v in net.state_dict().items()},
                      {"format": "pt"})
    # our own ONNX export of the same weights (hrnet-export: batch norm folded, dynamic batch),
    # which ONNX Runtime and OpenVINO run beside the PyTorch export
    ours_onnx = os.path.join(work, "ours.onnx")
    subprocess.run([os.path.join(a.ours, "apps", "hrnet-export"), "--model", f"pose_w{a.width_base}",
                    "--weights", weights, "--input-size", f"{a.height}x{a.width}", "--out", ours_onnx],
                   check=True, stdout=subprocess.DEVNULL)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    ours_sess = ort.InferenceSession(ours_onnx, so, providers=["CPUExecutionProvider"])
    ours_req = ov.Core().compile_model(ours_onnx, "CPU", {"INFERENCE_NUM_THREADS": a.threads,
                                                         "INFERENCE_PRECISION_HINT": "f32"}
                                       ).create_infer_request()
    print(f"versions: torch {torch.__version__}, onnxruntime {ort.__version__}, openvino {ov.__version__}, "
          f"threads {a.threads}", flush=True)
    results = {}
    for n in [int(b) for b in a.batches.split(",")]:
        x = torch.randn(n, 3, a.height, a.width, generator=torch.Generator().manual_seed(n))
        with torch.no_grad():
            ref = model(x).numpy()
        onnx_path = os.path.join(work, f"hrnet_b{n}.onnx")
        torch.onnx.export(model, x, onnx_path, input_names=["input"], output_names=["output"],
                          opset_version=13)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
        core = ov.Core()
        compiled = core.compile_model(onnx_path, "CPU", {"INFERENCE_NUM_THREADS": a.threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
        req = compiled.create_infer_request()
        xn = x.numpy()

        # ours: the same weights and input through hrnet-infer (the compiled inference graph)
        xin, yout = os.path.join(work, f"x{n}.safetensors"), os.path.join(work, f"y{n}.safetensors")
        write_safetensors(xin, {"input": xn}, {})
        subprocess.run([os.path.join(a.ours, "apps", "hrnet-infer"), "--model", f"pose_w{a.width_base}",
                        "--weights", weights, "--input-tensor", xin, "--output-tensor", yout],
                       check=True, stdout=subprocess.DEVNULL)
        ours_out = read_safetensors(yout)["output"]
        outs = {"ours": ours_out, "onnxruntime": sess.run(None, {"input": xn})[0],
                "openvino": req.infer({0: xn})[0],
                "onnxruntime on our ONNX": ours_sess.run(None, {"input": xn})[0],
                "openvino on our ONNX": ours_req.infer({0: xn})[0]}
        scale = float(np.abs(ref).max())
        for k, v in outs.items():
            err = float(np.abs(v - ref).max())
            print(f"batch {n}: {k} vs PyTorch: max abs diff {err:.3g} (output max {scale:.3g})", flush=True)
            if not err <= 1e-3 * scale + 1e-5:
                sys.exit(f"cpu_peers: {k} disagrees with PyTorch at batch {n}: {err}")

        with torch.no_grad():
            results[f"torch_b{n}"] = timeit(lambda: model(x), a.steps, a.warmup)
        results[f"onnxruntime_b{n}"] = timeit(lambda: sess.run(None, {"input": xn}), a.steps, a.warmup)
        results[f"openvino_b{n}"] = timeit(lambda: req.infer({0: xn}), a.steps, a.warmup)
        results[f"ort_ours_b{n}"] = timeit(lambda: ours_sess.run(None, {"input": xn}), a.steps,
                                           a.warmup)
        results[f"ov_ours_b{n}"] = timeit(lambda: ours_req.infer({0: xn}), a.steps, a.warmup)
        bench = subprocess.run([os.path.join(a.ours, "benchmarks", "bench_model"), "--model",
                                f"w{a.width_base}:pose", "--height", str(a.height), "--width", str(a.width),
                                "--batch", str(n), "--latency", "--no-torch", "--steps", str(a.steps),
                                "--warmup", str(a.warmup)], check=True, capture_output=True, text=True)
        for line in bench.stdout.splitlines():
            if line.startswith("ours: inference at batch"):
                results[f"ours_b{n}"] = float(line.split("graph ")[1].split(" ms")[0])
        for k in ("torch", "onnxruntime", "openvino", "ort_ours", "ov_ours", "ours"):
            print(f"RESULT {k}_b{n}_ms {results[f'{k}_b{n}']:.3f}", flush=True)

    print(f"\nHRNet-W{a.width_base} pose {a.height}x{a.width} inference, fp32, {a.threads} threads, "
          f"median of {a.steps}\n")
    print("ONNX files: PyTorch's export (torch.onnx, opset 13) and ours (hrnet-export, opset 17)\n")
    print("| batch | ours (graph) ms | PyTorch ms | ONNX Runtime ms (PyTorch's / our ONNX) | "
          "OpenVINO ms (PyTorch's / our ONNX) | PyTorch / ours | ONNX Runtime / ours | "
          "OpenVINO / ours |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in [int(b) for b in a.batches.split(",")]:
        o = results[f"ours_b{n}"]
        t, r, v = results[f"torch_b{n}"], results[f"onnxruntime_b{n}"], results[f"openvino_b{n}"]
        ro, vo = results[f"ort_ours_b{n}"], results[f"ov_ours_b{n}"]
        print(f"| {n} | {o:.1f} | {t:.1f} | {r:.1f} / {ro:.1f} | {v:.1f} / {vo:.1f} | {t / o:.2f} | "
              f"{r / o:.2f} / {ro / o:.2f} | {v / o:.2f} / {vo / o:.2f} |")



if __name__ == "__main__":
    main()
