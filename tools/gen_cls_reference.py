#!/usr/bin/python3
"""PIL / torchvision reference data for tests/test_classification.cpp.

Run:  /usr/bin/python3 tools/gen_cls_reference.py --out tests/data/cls_reference.safetensors
Needs Debian's python3-torchvision (0.14) and python3-pil (9.4, linked against the same
libjpeg-turbo as the engine) and numpy. The safetensors file is written by hand (8-byte LE header
length, JSON header, raw bytes).

Cases (tensors "<case>/<role>", options in the metadata):
  resize_*     src u8 [H,W,3] -> out u8 [h,w,3]: PIL Image.resize((w, h), BILINEAR)
  crop_*       crop_src/src, box (x, y, w, h) and size -> out: torchvision F.resized_crop
               (what RandomResizedCrop does with its sampled box) on the PIL image
  eval_*       src -> out u8 (Resize(int(size/0.875)) + CenterCrop(size)) and tensor f32 [3,S,S]
               (+ ToTensor + Normalize with the ImageNet mean and std)
  jpeg_*       bytes u8 [n] (a JPEG PIL wrote), decoded u8 [H,W,3] as PIL decodes it
  topk         logits f32 [N,C], labels i64 [N] -> top1, top5 (the official accuracy(), percent)
"""
import argparse
import io
import json
import os

import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image
from safetensors_out import write_safetensors  # noqa: E402

CASES = {}
TENSORS = {}


def put(case, role, a):
    TENSORS[f"{case}/{role}"] = np.ascontiguousarray(a)


def image(rng, h, w):
    """Smooth structure plus noise: resampling weights matter everywhere, never a flat image."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / (3 + c) + yy / (5 + 2 * c)) for c in range(3)], -1)
    return np.clip(base + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/cls_reference.safetensors")
    args = ap.parse_args()
    rng = np.random.default_rng(2026)

    # Pillow's bilinear resize: reductions (antialiased), enlargements, one axis only, odd sizes
    for name, (h, w), (oh, ow) in (("resize_down", (75, 100), (30, 41)),
                                   ("resize_down_big", (120, 90), (17, 13)),
                                   ("resize_up", (13, 17), (40, 29)),
                                   ("resize_width_only", (20, 50), (20, 23)),
                                   ("resize_height_only", (47, 21), (9, 21)),
                                   ("resize_mixed", (33, 64), (70, 31))):
        src = image(rng, h, w)
        CASES[name] = {"op": "resize"}
        put(name, "src", src)
        put(name, "out", np.asarray(Image.fromarray(src).resize((ow, oh), Image.BILINEAR)))

    # RandomResizedCrop's crop + resize, with boxes as get_params draws them
    src = image(rng, 96, 128)
    put("crop_src", "src", src)  # one source for the three boxes
    for name, (x, y, w, h), size in (("crop_small_box", (17, 9, 40, 31), 24),
                                     ("crop_large_box", (3, 2, 120, 90), 32),
                                     ("crop_up", (50, 40, 11, 9), 21)):
        CASES[name] = {"op": "resized_crop", "box": [x, y, w, h], "size": size}
        out = F.resized_crop(Image.fromarray(src), y, x, h, w, [size, size],
                             interpolation=T.InterpolationMode.BILINEAR)
        put(name, "out", np.asarray(out))

    # the evaluation transform, to pixels and to the normalised tensor
    for name, (h, w), size in (("eval_landscape", (75, 101), 32),
                               ("eval_portrait", (130, 61), 40),
                               ("eval_round", (70, 67), 28)):
        src = image(rng, h, w)
        CASES[name] = {"op": "eval", "size": size}
        put(name, "src", src)
        crop = T.Compose([T.Resize(int(size / 0.875)), T.CenterCrop(size)])(Image.fromarray(src))
        put(name, "out", np.asarray(crop))
        tensor = T.Compose([T.ToTensor(), T.Normalize(mean=[0.485, 0.456, 0.406],
                                                      std=[0.229, 0.224, 0.225])])(crop)
        put(name, "tensor", tensor.numpy().astype(np.float32))

    # JPEG decoding as PIL does it (4:2:0 and 4:4:4 chroma)
    for name, (h, w), sub in (("jpeg_420", (37, 53), 2), ("jpeg_444", (29, 31), 0)):
        src = image(rng, h, w)
        buf = io.BytesIO()
        Image.fromarray(src).save(buf, format="JPEG", quality=85, subsampling=sub)
        data = np.frombuffer(buf.getvalue(), dtype=np.uint8)
        CASES[name] = {"op": "jpeg"}
        put(name, "bytes", data)
        put(name, "decoded", np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))

    # top-k accuracy, as lib/core/evaluate.py computes it (random logits: no ties)
    torch.manual_seed(7)
    logits = torch.randn(50, 12)
    labels = torch.randint(0, 12, (50,))
    maxk = 5
    _, pred = logits.topk(maxk, 1, True, True)
    correct = pred.t().eq(labels.view(1, -1).expand_as(pred.t()))
    top1 = correct[:1].reshape(-1).float().sum().item() * 100.0 / 50
    top5 = correct[:5].reshape(-1).float().sum().item() * 100.0 / 50
    CASES["topk"] = {"op": "topk", "top1": top1, "top5": top5}
    put("topk", "logits", logits.numpy())
    put("topk", "labels", labels.numpy().astype(np.int64))

    meta = {k: json.dumps(v, sort_keys=True) for k, v in CASES.items()}
    import PIL
    import torchvision
    meta["_generator"] = (f"tools/gen_cls_reference.py, torchvision {torchvision.__version__}, "
                          f"Pillow {PIL.__version__}")
    write_safetensors(args.out, TENSORS, meta)
    print(f"{args.out}: {len(CASES)} cases, {len(TENSORS)} tensors, {os.path.getsize(args.out)} bytes")


if __name__ == "__main__":
    main()
