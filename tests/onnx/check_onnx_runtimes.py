#!/usr/bin/env python3
"""ONNX export against two runtimes (docs/EXPORT.md): every head exported by hrnet-export, run by
ONNX Runtime and by OpenVINO at batches 1 and 3 (one model: the batch is dynamic), compared with
the engine's own output for the same input (hrnet-infer --input-tensor/--output-tensor, the
compiled inference graph).

Models: the tiny pose, seg (HRNetV2, bilinear, align_corners False), seg + OCR (align_corners
True, with the auxiliary output), cls and HRNet-FCOS configs of the program tests, and the
official pose W32 256x192 file at batch 1. Weights are random (onnx_test_helper weights): every
batch norm with random affine parameters and running statistics taken from a random batch, so the
folding of every batch norm into its convolution is exercised.

Before the models, every op translation alone (onnx_test_helper ops: bilinear resizing to and
from size 1 with and without align_corners, the scale path, pooling with padding, unfolded batch
norm with its fused residual and ReLU, group norm, ...) against the op's own CPU result, to 1e-5.

Metric, per output: max|runtime - ours| / max|ours| <= 1e-4. Detection decoding (--det-decode):
the model's rows (image, x1, y1, x2, y2, score, label) against data::fcos_postprocess of our raw
outputs (onnx_test_helper decode), and of the same runtime's raw outputs (the decoding alone);
the same number of detections per image and label, matched one to one, boxes and scores within
1e-4 of the largest coordinate / score. Exits 77 (skipped) when onnxruntime or openvino is missing.

  check_onnx_runtimes.py --export hrnet-export --infer hrnet-infer --helper onnx_test_helper
                         --work DIR [--official W32_CONFIG.yaml]
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools"))
from safetensors_out import read_safetensors, write_safetensors  # noqa: E402

TOL = 1e-4
OP_TOL = 1e-5  # one op: a wrong coordinate rule or padding shows up far above this
BATCHES = (1, 3)

BACKBONE = """
    STAGE1: {NUM_MODULES: 1, NUM_RANCHES: 1, BLOCK: BOTTLENECK, NUM_BLOCKS: [1], NUM_CHANNELS: [8], FUSE_METHOD: SUM}
    STAGE2: {NUM_MODULES: 1, NUM_BRANCHES: 2, BLOCK: BASIC, NUM_BLOCKS: [1, 1], NUM_CHANNELS: [8, 16], FUSE_METHOD: SUM}
    STAGE3: {NUM_MODULES: 1, NUM_BRANCHES: 3, BLOCK: BASIC, NUM_BLOCKS: [1, 1, 1], NUM_CHANNELS: [8, 16, 32], FUSE_METHOD: SUM}
    STAGE4: {NUM_MODULES: 1, NUM_BRANCHES: 4, BLOCK: BASIC, NUM_BLOCKS: [1, 1, 1, 1], NUM_CHANNELS: [8, 16, 32, 64], FUSE_METHOD: SUM}
"""
SEG_DATASET = ("DATASET: {DATASET: cityscapes, ROOT: '', TEST_SET: list/cityscapes/val.lst, "
               "TRAIN_SET: list/cityscapes/train.lst, NUM_CLASSES: 19}\n")

# name, config text, input H x W, export flags, [(ONNX output, hrnet-infer output)]
CASES = [
    ("pose", """MODEL:
  NAME: pose_hrnet
  NUM_JOINTS: 17
  IMAGE_SIZE: [64, 96]
  HEATMAP_SIZE: [16, 24]
  EXTRA:
    PRETRAINED_LAYERS: ['*']
    FINAL_CONV_KERNEL: 1""" + BACKBONE, (96, 64), [], [("heatmaps", "output")]),
    ("seg", SEG_DATASET + """MODEL:
  NAME: seg_hrnet
  ALIGN_CORNERS: False
  EXTRA:
    FINAL_CONV_KERNEL: 1""" + BACKBONE + "TEST: {IMAGE_SIZE: [128, 64], BASE_SIZE: 128}\n",
     (64, 128), [], [("logits", "output")]),
    ("seg_ocr", SEG_DATASET + """MODEL:
  NAME: seg_hrnet_ocr
  NUM_OUTPUTS: 2
  ALIGN_CORNERS: True
  OCR: {MID_CHANNELS: 16, KEY_CHANNELS: 8, DROPOUT: 0.05, SCALE: 1}
  EXTRA:
    FINAL_CONV_KERNEL: 1""" + BACKBONE + "TEST: {IMAGE_SIZE: [96, 64], BASE_SIZE: 96}\n",
     (64, 96), ["--ocr-aux"], [("logits", "output.1"), ("aux_logits", "output.0")]),
    ("cls", """MODEL:
  NAME: cls_hrnet
  NUM_CLASSES: 10
  IMAGE_SIZE: [32, 32]
  EXTRA:
    HEAD_CHANNELS: [4, 8, 8, 16]
    HEAD_FEATURES: 32""" + BACKBONE, (32, 32), [], [("logits", "output")]),
    ("det", """MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  FCOS_ON: True
  BACKBONE:
    CONV_BODY: "HRNET-W18-SMALL-V1"
  HRNET:
    NORM_EVAL: False
    FPN:
      OUT_CHANNEL: 32
  FCOS:
    NUM_CLASSES: 6
    NUM_CONVS: 1
    FPN_STRIDES: [8, 16, 32, 64]
    TARGET_ASSIGN: [[-1, 48], [48, 96], [96, 192], [192, 100000000]]
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
INPUT:
  MIN_SIZE_TRAIN: (224, 256)
  MAX_SIZE_TRAIN: 320
  MIN_SIZE_TEST: 256
  MAX_SIZE_TEST: 320
DATALOADER:
  SIZE_DIVISIBILITY: 32
""", (256, 320), [], [(f"{k}.{l}", f"output.{4 * i + l}")
                       for i, k in enumerate(("cls_logits", "bbox_reg", "centerness")) for l in range(4)]),
]
# The decoding variants of the det case (config overrides): PRE_NMS_TOP_N 100 cuts every level's
# candidates, the 100 detections per image cut the NMS survivors; the second has no NMS (NonZero)
# and no cut; the third finds nothing (an empty [0, 7]).
DECODES = [
    ("det_decode", ["MODEL.FCOS.PRE_NMS_TOP_N", "100"]),
    ("det_decode_nonms", ["MODEL.FCOS.NMS_TH", "0.0", "TEST.DETECTIONS_PER_IMG", "0",
                          "MODEL.FCOS.INFERENCE_TH", "0.12"]),
    ("det_decode_empty", ["MODEL.FCOS.INFERENCE_TH", "0.999"]),
]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"FAILED ({r.returncode}): {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    return r.stdout


def rel(got, ref):
    if got.shape != ref.shape:
        return float("inf")
    scale = float(np.abs(ref).max())
    return float(np.abs(got - ref).max()) / (scale if scale > 0 else 1.0)


def compare_detections(got, ref):
    """(ok, message): counts per (image, label) equal, rows matched one to one."""
    groups = sorted({tuple(k) for k in ref[:, [0, 6]].astype(np.int64).tolist()})
    if got.shape[0] != ref.shape[0]:
        return False, f"{got.shape[0]} detections, ours {ref.shape[0]}"
    if ref.shape[0] == 0:
        return True, "0 detections"
    box_scale = max(float(np.abs(ref[:, 1:5]).max()), 1.0)
    score_scale = max(float(np.abs(ref[:, 5]).max()), 1e-12)
    worst_box = worst_score = 0.0
    for g in groups:
        r = ref[(ref[:, 0] == g[0]) & (ref[:, 6] == g[1])]
        o = got[(got[:, 0] == g[0]) & (got[:, 6] == g[1])]
        if len(o) != len(r):
            return False, f"image {g[0]} label {g[1]}: {len(o)} detections, ours {len(r)}"
        free = list(range(len(o)))
        for row in r[np.argsort(-r[:, 5], kind="stable")]:
            d = [max(np.abs(o[j, 1:5] - row[1:5]).max() / box_scale,
                     abs(o[j, 5] - row[5]) / score_scale) for j in free]
            j = free.pop(int(np.argmin(d)))
            worst_box = max(worst_box, float(np.abs(o[j, 1:5] - row[1:5]).max()) / box_scale)
            worst_score = max(worst_score, abs(float(o[j, 5] - row[5])) / score_scale)
    ok = worst_box <= TOL and worst_score <= TOL
    return ok, f"{ref.shape[0]} detections, boxes {worst_box:.2e}, scores {worst_score:.2e}"


class Runtimes:
    def __init__(self):
        import onnxruntime as ort
        import openvino as ov
        self.ort, self.ov = ort, ov
        self.core = ov.Core()
        self.versions = f"onnxruntime {ort.__version__}, openvino {ov.__version__}"

    def load(self, path):
        so = self.ort.SessionOptions()
        so.intra_op_num_threads = 2
        sess = self.ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        # f32 throughout: OpenVINO's CPU plugin would otherwise pick bf16 where the CPU has it
        comp = self.core.compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                     "INFERENCE_NUM_THREADS": 2})

        def run_ort(x):
            return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))

        def run_ov(x):  # an output may carry several tensor names: every one of them
            r = comp({"input": x})
            return {n: np.asarray(r[o]) for o in comp.outputs for n in o.get_names()}
        return {"onnxruntime": run_ort, "openvino": run_ov}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--export", required=True)
    ap.add_argument("--infer", required=True)
    ap.add_argument("--helper", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--official", default="", help="an official pose config (run at batch 1)")
    a = ap.parse_args()
    try:
        rt = Runtimes()
    except ImportError as e:
        print(f"skipped: {e} (scripts/python_env.sh makes the environment)")
        return 77
    t_start = time.time()
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    results = []  # (case, runtime, batch, output, text, ok)
    worst = {}  # (case, runtime) -> the largest metric over outputs and batches

    def check(case, runtime, batch, output, value, ok, text=None):
        results.append((case, runtime, batch, output, text or f"{value:.2e}", ok))
        if text is None:
            worst[case, runtime] = max(worst.get((case, runtime), 0.0), value)

    cases = [(n, t, hw, flags, outs, BATCHES) for n, t, hw, flags, outs in CASES]
    if a.official and os.path.exists(a.official):
        cases.append(("pose_w32_official", None, (256, 192), [], [("heatmaps", "output")], (1,)))
    # the op translations one by one (onnx_test_helper ops: the op's own CPU result)
    ops_dir = os.path.join(a.work, "ops")
    os.makedirs(ops_dir)
    run([a.helper, "ops", "--out", ops_dir])
    for f in sorted(os.listdir(ops_dir)):
        if not f.endswith(".onnx"):
            continue
        d = read_safetensors(os.path.join(ops_dir, f[:-5] + ".safetensors"))
        for runtime, fn in rt.load(os.path.join(ops_dir, f)).items():
            v = rel(fn(d["input"])["output"], d["output"])
            check("op " + f[:-5], runtime, d["input"].shape[0], "output", v, v <= OP_TOL)

    for name, text, hw, flags, outs, batches in cases:
        base = os.path.join(a.work, name)
        if text is None:
            cfg = a.official
        else:
            cfg = base + ".yaml"
            with open(cfg, "w") as f:
                f.write(text)
        weights = base + "_weights.safetensors"
        run([a.helper, "weights", "--config", cfg, "--out", weights, "--seed", "7"])
        onnx_path = base + ".onnx"
        print(run([a.export, "--config", cfg, "--weights", weights, "--out", onnx_path] + flags)
              .splitlines()[0], flush=True)
        runners = rt.load(onnx_path)
        decoders = []
        if name == "det":
            for dname, sets in DECODES:
                dpath = os.path.join(a.work, dname + ".onnx")
                s = sum((["--set", sets[i], sets[i + 1]] for i in range(0, len(sets), 2)), [])
                print(run([a.export, "--config", cfg, "--weights", weights, "--out", dpath,
                           "--det-decode"] + s).splitlines()[0], flush=True)
                decoders.append((dname, s, rt.load(dpath)))
        for n in batches:
            x = np.random.default_rng(100 + n).standard_normal((n, 3) + hw).astype(np.float32)
            xin, yout = base + f"_x{n}.safetensors", base + f"_ours{n}.safetensors"
            write_safetensors(xin, {"input": x}, {})
            run([a.infer, "--config", cfg, "--weights", weights, "--input-tensor", xin,
                 "--output-tensor", yout])
            ours = read_safetensors(yout)
            raw_of = {}
            for runtime, fn in runners.items():
                got = fn(x)
                raw_of[runtime] = got
                for onnx_name, our_name in outs:
                    v = rel(got[onnx_name], ours[our_name])
                    check(name, runtime, n, onnx_name, v, v <= TOL)
            for dname, sets, drun in decoders:
                ref_path = base + f"_{dname}_ours{n}.safetensors"
                run([a.helper, "decode", "--config", cfg, "--raw", yout, "--out", ref_path] + sets)
                ref = read_safetensors(ref_path)["detections"]
                for runtime, fn in drun.items():
                    got = fn(x)["detections"]
                    ok, msg = compare_detections(got, ref)
                    check(dname, runtime, n, "detections vs ours", 0, ok, msg)
                    # the decoding alone: fcos_postprocess of this runtime's own raw outputs
                    raw_path = base + f"_{dname}_{runtime}_raw{n}.safetensors"
                    write_safetensors(raw_path, {our: raw_of[runtime][o] for o, our in outs}, {})
                    own_path = base + f"_{dname}_{runtime}_own{n}.safetensors"
                    run([a.helper, "decode", "--config", cfg, "--raw", raw_path, "--out", own_path]
                        + sets)
                    ok, msg = compare_detections(got, read_safetensors(own_path)["detections"])
                    check(dname, runtime, n, "detections vs own raw", 0, ok, msg)

    print(f"\n{rt.versions}; metric max|runtime - ours| / max|ours| (tolerance {TOL:g}, "
          f"single ops {OP_TOL:g})")
    print(f"{'model':<26} {'runtime':<12} {'batch':>5}  {'output':<22} result")
    failed = 0
    for case, runtime, n, output, text, ok in results:
        failed += not ok
        print(f"{case:<26} {runtime:<12} {n:>5}  {output:<22} {text}{'' if ok else '  FAIL'}")
    print("\nlargest per model (every output and batch):")
    for case in dict.fromkeys(c for c, _ in worst):
        if not case.startswith("op "):
            print(f"  {case:<20} " + ", ".join(f"{r} {v:.2e}" for (c, r), v in worst.items() if c == case))
    ops_worst = max((v for (c, _), v in worst.items() if c.startswith("op ")), default=0.0)
    print(f"  {'single ops':<20} {ops_worst:.2e}")
    print(f"{len(results) - failed} of {len(results)} checks passed in {time.time() - t_start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
