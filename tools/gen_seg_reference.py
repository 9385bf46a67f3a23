#!/usr/bin/python3
"""Reference data for tests/test_segmentation_data.cpp: cv2.resize and the official
HRNet-Semantic-Segmentation training sample (lib/datasets/base_dataset.py gen_sample,
cityscapes.py convert_label) in numpy + OpenCV.

Run:  /usr/bin/python3 -m pip install --user "opencv-python-headless==4.10.0.84"
      /usr/bin/python3 tools/gen_seg_reference.py --out tests/data/seg_reference.safetensors

Needs numpy (Debian's python3-numpy 1.24) and OpenCV 4.10 (pinned: the resize code the official
pipeline ran with; the engine's data/image.cpp restates its x86-64 build). The safetensors file is
written by hand as tools/gen_cls_reference.py does.

Tensors "<case>/<role>", options in the metadata (JSON per case):
  linear_* / nearest_*  src u8 [H,W,C] -> out u8 [h,w,C]: cv2.resize(src, (w, h), INTER_LINEAR or
                        INTER_NEAREST); C = 1 stored as [H,W,1]
  downsample_*          src u8 [H,W,1] -> out: cv2.resize(int32 label, None, fx=1/r, fy=1/r,
                        INTER_NEAREST) (DOWNSAMPLERATE r), values < 256 stored as u8
  mapping               ids u8 [256] -> mapped u8 [256]: convert_label over every id 0..255 with
                        ignore 255 (ids without an entry come back unchanged)
  sample_src            image u8 [H,W,3] (RGB) and labels u8 [H,W] (Cityscapes label ids)
  gen_*                 input f32 [3,ch,cw], label i64 [.., ..]: gen_sample on sample_src's image
                        (fed to the official code as BGR, as cv2.imread gives it) and
                        convert_label(labels), with rand_scale's randint, the crop's x and y and the
                        flip given (metadata)
  val                   input f32 [3,H,W], label i64 [H,W]: gen_sample without multi-scale and
                        flip (the validation sample)
With --sweep-out FILE, also a file of random resizes for the hidden wider test (not committed).
"""
import argparse
import json
import os

import cv2
import numpy as np
from safetensors_out import write_safetensors  # noqa: E402

CASES = {}
TENSORS = {}
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
IGNORE = 255

# cityscapes.py, ignore_label = 255
LABEL_MAPPING = {-1: IGNORE, 0: IGNORE, 1: IGNORE, 2: IGNORE, 3: IGNORE, 4: IGNORE, 5: IGNORE,
                 6: IGNORE, 7: 0, 8: 1, 9: IGNORE, 10: IGNORE, 11: 2, 12: 3, 13: 4, 14: IGNORE,
                 15: IGNORE, 16: IGNORE, 17: 5, 18: IGNORE, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 29: IGNORE, 30: IGNORE, 31: 16, 32: 17,
                 33: 18}


def put(case, role, a):
    TENSORS[f"{case}/{role}"] = np.ascontiguousarray(a)


def convert_label(label):
    temp = label.copy()
    for k, v in LABEL_MAPPING.items():
        if k < 0:
            continue  # an 8-bit label holds no -1
        label[temp == k] = v
    return label


# ---- base_dataset.py, the random draws given ----

class Base:
    def __init__(self, base_size, crop_size, downsample_rate=1, scale_factor=16):
        self.base_size = base_size
        self.crop_size = crop_size  # (h, w)
        self.ignore_label = IGNORE
        self.mean = MEAN
        self.std = STD
        self.scale_factor = scale_factor
        self.downsample_rate = 1. / downsample_rate

    def input_transform(self, image):
        image = image.astype(np.float32)[:, :, ::-1]
        image = image / 255.0
        image -= self.mean
        image /= self.std
        return image

    def label_transform(self, label):
        return np.array(label).astype('int32')

    def pad_image(self, image, h, w, size, padvalue):
        pad_image = image.copy()
        pad_h = max(size[0] - h, 0)
        pad_w = max(size[1] - w, 0)
        if pad_h > 0 or pad_w > 0:
            pad_image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT,
                                           value=padvalue)
        return pad_image

    def rand_crop(self, image, label, cx, cy):
        h, w = image.shape[:-1]
        image = self.pad_image(image, h, w, self.crop_size, (0.0, 0.0, 0.0))
        label = self.pad_image(label, h, w, self.crop_size, (self.ignore_label,))
        new_h, new_w = label.shape
        assert 0 <= cx <= new_w - self.crop_size[1] and 0 <= cy <= new_h - self.crop_size[0]
        x, y = cx, cy  # random.randint(0, new_w - crop_w), random.randint(0, new_h - crop_h)
        image = image[y:y + self.crop_size[0], x:x + self.crop_size[1]]
        label = label[y:y + self.crop_size[0], x:x + self.crop_size[1]]
        return image, label

    def multi_scale_aug(self, image, label, rand_scale, cx, cy):
        long_size = int(self.base_size * rand_scale + 0.5)
        h, w = image.shape[:2]
        if h > w:
            new_h = long_size
            new_w = int(w * long_size / h + 0.5)
        else:
            new_w = long_size
            new_h = int(h * long_size / w + 0.5)
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
        return self.rand_crop(image, label, cx, cy)

    def gen_sample(self, image, label, multi_scale, is_flip, step=0, cx=0, cy=0, flip=False):
        if multi_scale:
            rand_scale = 0.5 + step / 10.0  # random.randint(0, self.scale_factor) / 10.0
            image, label = self.multi_scale_aug(image, label, rand_scale, cx, cy)
        image = self.input_transform(image)
        label = self.label_transform(label)
        image = image.transpose((2, 0, 1))
        if is_flip:
            f = -1 if flip else 1  # np.random.choice(2) * 2 - 1
            image = image[:, :, ::f]
            label = label[:, ::f]
        if self.downsample_rate != 1:
            label = cv2.resize(label, None, fx=self.downsample_rate, fy=self.downsample_rate,
                               interpolation=cv2.INTER_NEAREST)
        return image, label


def smooth_image(rng, h, w, c):
    """Structure plus noise, so that every weight matters."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 110 * np.sin(xx / (2.3 + k) + yy / (3.1 + 1.7 * k)) for k in range(c)], -1)
    return np.clip(base + rng.integers(-60, 61, (h, w, c)), 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/seg_reference.safetensors")
    ap.add_argument("--sweep-out", default="",
                    help="also write N random cv2.resize cases (1-4 channels, up to 300 pixels a "
                         "side) here, for the hidden test: HR_SEG_RESIZE_FUZZ=FILE "
                         "test_segmentation_data '[.segmentation_fuzz]'")
    ap.add_argument("--sweep-n", type=int, default=1500)
    args = ap.parse_args()
    if args.sweep_out:
        write_sweep(args.sweep_out, args.sweep_n)
    rng = np.random.default_rng(2027)

    # cv2.resize: up, down, mixed, exact halving (INTER_AREA's path), 3x down, one axis, the same
    # size, widths around the vertical pass's 16/8-value blocks, one-pixel sources
    sizes = [((23, 37), (41, 64)), ((64, 48), (27, 19)), ((50, 40), (25, 20)), ((33, 31), (11, 93)),
             ((40, 60), (40, 23)), ((17, 29), (17, 29)), ((45, 90), (15, 30)), ((8, 13), (29, 5)),
             ((1, 9), (4, 17)), ((12, 1), (5, 6)), ((26, 34), (13, 17)), ((30, 66), (47, 101)),
             ((21, 16), (21, 8)), ((9, 24), (13, 25)), ((7, 7), (100, 3))]
    for i, ((h, w), (oh, ow)) in enumerate(sizes):
        for c in (3, 1):
            src = smooth_image(rng, h, w, c)
            for interp, name in ((cv2.INTER_LINEAR, "linear"), (cv2.INTER_NEAREST, "nearest")):
                case = f"{name}_{i:02d}_c{c}"
                out = cv2.resize(src if c == 3 else src[:, :, 0], (ow, oh), interpolation=interp)
                CASES[case] = {"op": name}
                put(case, "src", src)
                put(case, "out", out.reshape(oh, ow, c))

    # DOWNSAMPLERATE on int32 labels
    for i, ((h, w), r) in enumerate((((20, 32), 2), ((21, 33), 2), ((30, 47), 3), ((32, 64), 4),
                                     ((13, 7), 8))):
        lab = rng.integers(0, 19, (h, w)).astype(np.int32)
        out = cv2.resize(lab, None, fx=1. / r, fy=1. / r, interpolation=cv2.INTER_NEAREST)
        case = f"downsample_{i}"
        CASES[case] = {"op": "downsample", "rate": r}
        put(case, "src", lab.astype(np.uint8).reshape(h, w, 1))
        put(case, "out", out.astype(np.uint8).reshape(out.shape[0], out.shape[1], 1))

    # convert_label over every 8-bit id
    ids = np.arange(256, dtype=np.uint8)
    CASES["mapping"] = {"op": "mapping", "ignore": IGNORE}
    put("mapping", "ids", ids)
    put("mapping", "mapped", convert_label(ids.copy()))

    # gen_sample on a 60x30 street-like image with Cityscapes label ids (no id without an entry)
    H, W = 30, 60
    rgb = smooth_image(rng, H, W, 3)
    valid = np.array([k for k in LABEL_MAPPING if k >= 0] + [255], np.uint8)
    labels = np.repeat(np.repeat(valid[rng.integers(0, len(valid), (H // 3 + 1, W // 4 + 1))], 3, 0),
                       4, 1)[:H, :W].copy()
    put("sample_src", "image", rgb)
    put("sample_src", "labels", labels)
    bgr = rgb[:, :, ::-1].copy()  # what cv2.imread gives the official code
    mapped = convert_label(labels.copy())
    # (name, base_size, crop (h, w), downsample, step, crop x, y, flip); scale 0.5 + step / 10
    for name, base, crop, ds, step, cx, cy, flip in (
            ("gen_down_flip", 50, (16, 24), 1, 3, 5, 2, True),    # 0.8: 40x20, crop inside
            ("gen_up", 40, (24, 40), 1, 15, 17, 9, False),        # 2.0: 80x40
            ("gen_pad", 40, (32, 48), 1, 0, 0, 0, True),          # 0.5: 20x10, padded
            ("gen_pad_offset", 60, (20, 70), 1, 7, 2, 0, False),  # 1.2: 72x36, padded in x
            ("gen_halve", 60, (12, 20), 1, 0, 6, 3, False),       # 0.5: 30x15, INTER_AREA path
            ("gen_same", 60, (30, 60), 1, 5, 0, 0, True),         # 1.0: no resize
            ("gen_downsample", 45, (20, 32), 2, 8, 9, 4, True),   # 1.3 with DOWNSAMPLERATE 2
            ("gen_downsample3", 45, (21, 30), 3, 2, 1, 0, False)):
        b = Base(base, crop, ds)
        image, label = b.gen_sample(bgr.copy(), mapped.copy(), True, True, step, cx, cy, flip)
        CASES[name] = {"op": "gen_sample", "base_size": base, "crop_h": crop[0], "crop_w": crop[1],
                       "downsample_rate": ds, "scale_step": step, "crop_x": cx, "crop_y": cy,
                       "flip": flip}
        put(name, "input", np.ascontiguousarray(image, np.float32))
        put(name, "label", np.ascontiguousarray(label, np.int64))
    b = Base(60, (30, 60))
    image, label = b.gen_sample(bgr.copy(), mapped.copy(), False, False)
    CASES["val"] = {"op": "val"}
    put("val", "input", np.ascontiguousarray(image, np.float32))
    put("val", "label", np.ascontiguousarray(label, np.int64))

    meta = {k: json.dumps(v, sort_keys=True) for k, v in CASES.items()}
    meta["_generator"] = f"tools/gen_seg_reference.py, OpenCV {cv2.__version__}, numpy {np.__version__}"
    write_safetensors(args.out, TENSORS, meta)
    print(f"{args.out}: {len(CASES)} cases, {len(TENSORS)} tensors, {os.path.getsize(args.out)} bytes")


def write_sweep(path, n):
    rng = np.random.default_rng(5)
    tensors, meta = {}, {}
    for t in range(n):
        c = int(rng.choice([1, 2, 3, 3, 4]))
        h, w = (int(rng.integers(1, 300)), int(rng.integers(1, 300))) if t % 5 == 0 else \
               (int(rng.integers(1, 64)), int(rng.integers(1, 64)))
        if t % 7 == 0:  # halvings (INTER_AREA's path when both sides are even)
            oh, ow = max(h // 2, 1), max(w // 2, 1)
        elif t % 11 == 0:
            oh, ow = h * 2, w * 3
        else:
            oh, ow = int(rng.integers(1, 2 * h + 8)), int(rng.integers(1, 2 * w + 8))
        src = smooth_image(rng, h, w, c) if t % 3 == 0 else rng.integers(0, 256, (h, w, c)).astype(np.uint8)
        for interp, name in ((cv2.INTER_LINEAR, "linear"), (cv2.INTER_NEAREST, "nearest")):
            out = cv2.resize(src if c > 1 else src[:, :, 0], (ow, oh), interpolation=interp)
            k = f"{name}_{t}"
            meta[k] = json.dumps({"op": name})
            tensors[k + "/src"] = src
            tensors[k + "/out"] = np.ascontiguousarray(out.reshape(oh, ow, c))
    write_safetensors(path, tensors, meta)
    print(f"{path}: {2 * n} resize cases")


if __name__ == "__main__":
    main()
