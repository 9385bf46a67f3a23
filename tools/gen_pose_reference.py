#!/usr/bin/env python3
"""Reference data for tests/test_pose.cpp: the official HRNet pose pipeline in numpy + OpenCV.

Run:  pip install "opencv-python-headless==4.10.0.84" safetensors numpy
      python3 tools/gen_pose_reference.py --out tests/data/pose_reference.safetensors

The functions below re-state, in numpy, what the official code
(leoxiaobin/deep-high-resolution-net.pytorch: lib/utils/transforms.py, lib/dataset/coco.py,
lib/dataset/JointsDataset.py, lib/core/inference.py, lib/core/function.py) computes, with the
float32/float64 precision that code had under numpy 1.x made explicit (numpy 2 promotes Python
floats differently). Crops come from cv2.warpAffine itself. OpenCV 4.10 is pinned: it is the last
release whose 8-bit bilinear warp is the fixed-point one the official code ran with (later
releases compute it in floating point and differ by one grey level here and there).

Tensors are "<group>/<role>"; float64 values (affine matrices) are stored bit for bit as I64.
"""
import argparse
import math

import cv2
import numpy as np
from safetensors.numpy import save_file

F32, F64 = np.float32, np.float64
PIXEL_STD = 200.0
FLIP_PAIRS = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
UPPER_BODY = set(range(11))
OUT = {}


def put(key, arr):
    assert key not in OUT, key
    arr = np.ascontiguousarray(arr)
    if arr.dtype == F64:
        arr = arr.view(np.int64)  # exact doubles
    assert arr.dtype in (F32, np.int64, np.uint8), (key, arr.dtype)
    OUT[key] = arr


# ---- lib/utils/transforms.py ----

def rotate_dir(pt, rot_rad):
    s, c = math.sin(rot_rad), math.cos(rot_rad)
    return [pt[0] * c - pt[1] * s, pt[0] * s + pt[1] * c]


def third_point(a, b):
    d = (a - b).astype(F32)
    return (b + np.array([-d[1], d[0]], F32)).astype(F32)


def affine_transform_matrix(center, scale, rot, out_w, out_h, inv=False):
    """The official get_affine_transform (shift 0): three point pairs in float32, then
    cv2.getAffineTransform (a float64 2x3 matrix)."""
    center = np.asarray(center, F32)
    scale = np.asarray(scale, F32)
    src_w = (scale * F32(200.0))[0]  # float32
    rot_rad = math.pi * float(rot) / 180.0
    src_dir = rotate_dir([0.0, float(src_w) * -0.5], rot_rad)
    src = np.zeros((3, 2), F32)
    dst = np.zeros((3, 2), F32)
    src[0] = center
    src[1] = center.astype(F64) + np.array(src_dir, F64)
    dst[0] = [out_w * 0.5, out_h * 0.5]
    dst[1] = np.array([out_w * 0.5, out_h * 0.5], F64) + np.array([0, out_w * -0.5], F32)
    src[2] = third_point(src[0], src[1])
    dst[2] = third_point(dst[0], dst[1])
    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def apply_affine(pt, t):
    return t @ np.array([pt[0], pt[1], 1.0], F64)


def flip_back_shift(hm):
    """flip_back (mirror width, swap pairs) then SHIFT_HEATMAP (out[..., 1:] = out[..., :-1])."""
    out = hm[:, :, :, ::-1].copy()
    for a, b in FLIP_PAIRS:
        out[:, [a, b]] = out[:, [b, a]]
    shifted = out.copy()
    shifted[:, :, :, 1:] = out[:, :, :, :-1]
    return shifted


# ---- lib/dataset/coco.py ----

def xywh_to_cs(x, y, w, h, aspect):
    center = np.array([x + w * 0.5, y + h * 0.5], F32)
    if w > aspect * h:
        h = w * 1.0 / aspect
    elif w < aspect * h:
        w = h * aspect
    scale = np.array([w * 1.0 / PIXEL_STD, h * 1.0 / PIXEL_STD], F32)
    if center[0] != -1:
        scale = (scale * F32(1.25)).astype(F32)
    return center, scale


def load_gt_kernel(images, anns, aspect):
    """_load_coco_keypoint_annotation_kernal over all images (file order)."""
    recs = []
    for img_pos, (width, height) in enumerate(images):
        for a_pos, a in enumerate(anns):
            if a["image"] != img_pos or a["iscrowd"]:
                continue
            x, y, w, h = [float(v) for v in a["bbox"]]
            x1 = max(0.0, x)
            y1 = max(0.0, y)
            x2 = min(width - 1.0, x1 + max(0.0, w - 1))
            y2 = min(height - 1.0, y1 + max(0.0, h - 1))
            if not (a["area"] > 0 and x2 >= x1 and y2 >= y1):
                continue
            kp = np.asarray(a["keypoints"], F64)
            if kp.max() == 0:
                continue
            joints = kp.reshape(17, 3).copy()
            joints[:, 2] = np.minimum(joints[:, 2], 1)
            c, s = xywh_to_cs(x1, y1, x2 - x1, y2 - y1, aspect)
            recs.append((a_pos, c, s, joints))
    return recs


# ---- lib/dataset/JointsDataset.py ----

def half_body(joints, vis, prefer_upper, aspect):
    upper, lower = [], []
    for j in range(len(joints)):
        if vis[j] > 0:
            (upper if j in UPPER_BODY else lower).append(joints[j])
    if prefer_upper and len(upper) > 2:
        sel = upper
    else:
        sel = lower if len(lower) > 2 else upper
    if len(sel) < 2:
        return None, None
    sel = np.array(sel, F32)
    total = np.zeros(2, F32)
    for p in sel:  # numpy reduces the outer axis row by row
        total = (total + p[:2]).astype(F32)
    center = (total / F32(len(sel))).astype(F32)
    lo, hi = sel.min(axis=0), sel.max(axis=0)
    w = float(F32(hi[0] - lo[0]))  # float32 difference, then float64 as numpy 1.x promoted
    h = float(F32(hi[1] - lo[1]))
    if w > aspect * h:
        h = w * 1.0 / aspect
    elif w < aspect * h:
        w = h * aspect
    scale = np.array([w * 1.0 / PIXEL_STD, h * 1.0 / PIXEL_STD], F32) * F32(1.5)
    return center, scale.astype(F32)


def gaussian_target(joints, vis, image_size, heatmap_size, sigma):
    """generate_target, TARGET_TYPE gaussian. joints float64 [J,2], vis [J]."""
    nj = len(joints)
    weight = np.array(vis, F32).copy()
    target = np.zeros((nj, heatmap_size[1], heatmap_size[0]), F32)
    tmp = sigma * 3
    stride = np.asarray(image_size, F64) / np.asarray(heatmap_size, F64)
    for j in range(nj):
        mx = int(joints[j][0] / stride[0] + 0.5)
        my = int(joints[j][1] / stride[1] + 0.5)
        ul = [int(mx - tmp), int(my - tmp)]
        br = [int(mx + tmp + 1), int(my + tmp + 1)]
        if ul[0] >= heatmap_size[0] or ul[1] >= heatmap_size[1] or br[0] < 0 or br[1] < 0:
            weight[j] = 0
            continue
        size = 2 * tmp + 1
        xs = np.arange(0, size, 1, F32)
        ys = xs[:, None]
        c0 = size // 2
        g = np.exp(-((xs - F32(c0)) ** 2 + (ys - F32(c0)) ** 2) / F32(2 * sigma ** 2)).astype(F32)
        gx = max(0, -ul[0]), min(br[0], heatmap_size[0]) - ul[0]
        gy = max(0, -ul[1]), min(br[1], heatmap_size[1]) - ul[1]
        ix = max(0, ul[0]), min(br[0], heatmap_size[0])
        iy = max(0, ul[1]), min(br[1], heatmap_size[1])
        if weight[j] > 0.5:
            target[j, iy[0]:iy[1], ix[0]:ix[1]] = g[gy[0]:gy[1], gx[0]:gx[1]]
    return target, weight


MEAN = np.array([0.485, 0.456, 0.406], F32)
STD = np.array([0.229, 0.224, 0.225], F32)


def normalise(crop):
    """ToTensor + Normalize in float32: [H,W,3] uint8 -> [3,H,W]."""
    t = crop.astype(F32).transpose(2, 0, 1) / F32(255)
    return ((t - MEAN[:, None, None]) / STD[:, None, None]).astype(F32)


def sample(img, joints_xyv, center, scale, rot, flip, image_size, heatmap_size, sigma):
    """__getitem__ after the random draws: center/scale/rot as drawn (center already mirrored
    when flip), the image and joints mirrored when flip."""
    data = img
    joints = joints_xyv[:, :2].astype(F64).copy()
    vis = np.minimum(joints_xyv[:, 2].astype(F64), 1)
    if flip:
        data = np.ascontiguousarray(img[:, ::-1])
        joints[:, 0] = img.shape[1] - joints[:, 0] - 1
        for a, b in FLIP_PAIRS:
            joints[[a, b]] = joints[[b, a]]
            vis[[a, b]] = vis[[b, a]]
        joints = joints * vis[:, None]
    trans = affine_transform_matrix(center, scale, rot, image_size[0], image_size[1])
    crop = cv2.warpAffine(data, trans, (image_size[0], image_size[1]), flags=cv2.INTER_LINEAR)
    for j in range(len(joints)):
        if vis[j] > 0:
            joints[j] = apply_affine(joints[j], trans)
    target, weight = gaussian_target(joints, vis, image_size, heatmap_size, sigma)
    return crop, target, weight, np.concatenate([joints, vis[:, None]], 1)


# ---- lib/core/inference.py ----

def final_preds(hm, center, scale):
    """get_final_preds with TEST.POST_PROCESS: [B,J,h,w] -> preds [B,J,2] f32, maxvals [B,J]."""
    b, nj, h, w = hm.shape
    flat = hm.reshape(b, nj, -1)
    idx = np.argmax(flat, 2)
    maxvals = np.amax(flat, 2)
    coords = np.stack([idx % w, np.floor(idx / w)], -1).astype(F32)
    coords *= (maxvals > 0.0)[..., None].astype(F32)
    for n in range(b):
        for p in range(nj):
            px = int(math.floor(coords[n, p, 0] + 0.5))
            py = int(math.floor(coords[n, p, 1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                m = hm[n, p]
                diff = np.array([m[py, px + 1] - m[py, px - 1], m[py + 1, px] - m[py - 1, px]])
                coords[n, p] += (np.sign(diff) * 0.25).astype(F32)
    preds = coords.copy()
    for n in range(b):
        t = affine_transform_matrix(center[n], scale[n], 0, w, h, inv=True)
        for p in range(nj):
            preds[n, p] = apply_affine(coords[n, p], t)  # stored back as float32
    return preds, maxvals.astype(F32)


# ---- the cases ----

def affine_cases(rng):
    cases = [  # cx, cy, sx, sy, rot, out_w, out_h, inverse
        (96.0, 128.0, 0.75, 1.0, 0.0, 192, 256, 0),
        (320.37, 211.9, 1.3125, 1.75, 0.0, 192, 256, 0),
        (320.37, 211.9, 1.3125, 1.75, 0.0, 48, 64, 1),
        (150.5, 80.25, 0.6, 0.8, 30.0, 192, 256, 0),
        (150.5, 80.25, 0.6, 0.8, -73.4, 288, 384, 0),
        (10.0, 400.0, 2.1, 2.8, 90.0, 192, 256, 0),
        (10.0, 400.0, 2.1, 2.8, 180.0, 192, 256, 1),
        (-5.5, 33.3, 0.05, 0.0667, 45.0, 48, 64, 1),
    ]
    for _ in range(4):
        cases.append((rng.uniform(-50, 700), rng.uniform(-50, 500), rng.uniform(0.1, 3), 0.0,
                      rng.uniform(-90, 90), 192, 256, int(rng.integers(0, 2))))
    params = np.array([c[:5] for c in cases], F32)
    sizes = np.array([c[5:] for c in cases], np.int64)
    mats = np.stack([affine_transform_matrix(p[:2], p[2:4], p[4], s[0], s[1], bool(s[2]))
                     for p, s in zip(params, sizes)]).reshape(-1, 6)
    put("affine/params", params)
    put("affine/sizes", sizes)
    put("affine/matrix", mats.astype(F64))


def warp_cases(rng):
    src = rng.integers(0, 256, size=(29, 37, 3), dtype=np.uint8)
    # a smooth part too, where rounding of the weights matters more than the taps
    yy, xx = np.mgrid[0:29, 0:37]
    src[:, 18:, 0] = (xx[:, 18:] * 6 + yy[:, 18:] * 3).astype(np.uint8)
    put("warp/src", src)
    gray = np.ascontiguousarray(src[:, :, 1])
    put("warp/src_gray", gray)
    h, w = src.shape[:2]
    cases = [  # (matrix, out_w, out_h)
        (affine_transform_matrix((18, 14), (0.185, 0.24), 0, 24, 32), 24, 32),  # about 1:1
        (affine_transform_matrix((18, 14), (0.1, 0.13), 30, 24, 32), 24, 32),  # zoom in, rotated
        (affine_transform_matrix((18, 14), (0.5, 0.6), -75, 24, 32), 24, 32),  # zoom out
        (affine_transform_matrix((2, 27), (0.12, 0.16), 17.5, 20, 28), 20, 28),  # off the corner
        (affine_transform_matrix((30, 5), (0.3, 0.4), 90, 16, 16), 16, 16),
        (affine_transform_matrix((18, 14), (0.185, 0.24), 180, 24, 32), 24, 32),
        (affine_transform_matrix((500, -300), (0.2, 0.3), 10, 12, 16), 12, 16),  # all outside
        (np.array([[1.37, 0.41, -3.3], [-0.22, 0.93, 2.71]], F64), 40, 30),  # shear, raw matrix
        (np.array([[0.5, 0.0, 0.25], [0.0, 0.5, 0.75]], F64), 20, 16),  # 2x upsampling
        (np.array([[3.0, 0.0, -1.0], [0.0, 3.0, -2.0]], F64), 40, 40),  # 3x downsampling
    ]
    mats = np.stack([c[0] for c in cases]).reshape(-1, 6)
    put("warp/matrix", mats.astype(F64))
    put("warp/sizes", np.array([c[1:] for c in cases], np.int64))
    mirrored = np.ascontiguousarray(src[:, ::-1])
    for k, (m, ow, oh) in enumerate(cases):
        put(f"warp/out{k}", cv2.warpAffine(src, m, (ow, oh), flags=cv2.INTER_LINEAR))
        put(f"warp/mirror{k}", cv2.warpAffine(mirrored, m, (ow, oh), flags=cv2.INTER_LINEAR))
        if k in (1, 3, 7):
            put(f"warp/gray{k}", cv2.warpAffine(gray, m, (ow, oh), flags=cv2.INTER_LINEAR))
    assert w == 37 and h == 29


def target_cases():
    # joints in input pixels (x, y, v): inside, at each border, just off, far off, invisible;
    # x = -30 at sigma 2 puts the window's right end exactly at 0: weight kept, nothing drawn
    joints = np.array([
        [31.0, 40.0, 1], [0.0, 0.0, 1], [63.0, 79.0, 1], [-2.0, 40.0, 1], [-25.0, 40.0, 1],
        [-26.5, 40.0, 1], [66.0, 84.0, 1], [87.0, 40.0, 1], [-30.0, 40.0, 1], [31.0, -24.0, 1],
        [-34.0, 40.0, 1], [31.0, 105.0, 1], [20.0, 20.0, 0], [-40.0, 20.0, 0], [13.5, 61.875, 1],
        [1.999, 2.001, 1], [46.0, 6.0, 1],
    ], F32)
    for sigma in (2, 3):
        image_size, heatmap_size = (64, 80), (16, 20)
        tgt, wt = gaussian_target(joints[:, :2].astype(F64), joints[:, 2], image_size,
                                  heatmap_size, sigma)
        put(f"target/sigma{sigma}/target", tgt)
        put(f"target/sigma{sigma}/weight", wt)
    put("target/joints", joints)


def decode_cases(rng):
    b, nj, h, w = 4, 6, 16, 12
    hm = (rng.standard_normal((b, nj, h, w)) * 0.1).astype(F32)
    # peaks at the border and one pixel in, where the quarter offset is (not) applied
    for p, (y, x) in enumerate([(0, 5), (h - 1, 7), (8, 0), (8, w - 1), (1, 6), (8, w - 2)]):
        hm[0, p, y, x] = 2.0
    for p, (y, x) in enumerate([(2, 2), (h - 2, w - 3), (5, 1), (7, 6), (3, 9), (12, 4)]):
        hm[1, p, y, x] = 1.5
    hm[1, 3, 7, 5] = 1.5  # a tie with (7, 6): the first maximum wins
    hm[1, 4, 3, 8] = hm[1, 4, 3, 10] = 0.3  # equal neighbours: no x offset
    hm[2, 0] = -np.abs(hm[2, 0]) - 0.01  # all negative: (0, 0), negative score
    hm[2, 1] = 0.0  # all zero
    hm[2, 2, 6, 6] = 1.0
    ys, xs = np.mgrid[0:h, 0:w]
    for p in range(nj):  # smooth blobs with off-grid centres
        cx, cy = rng.uniform(2, w - 2), rng.uniform(2, h - 2)
        hm[3, p] = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / 8.0).astype(F32)
    center = np.array([[96.0, 128.0], [320.37, 211.9], [10.5, -3.25], [250.0, 310.0]], F32)
    scale = np.array([[0.75, 1.0], [1.3125, 1.75], [0.2, 0.2667], [2.5, 3.33]], F32)
    preds, maxvals = final_preds(hm, center, scale)
    put("decode/heatmaps", hm)
    put("decode/center", center)
    put("decode/scale", scale)
    put("decode/preds", preds)
    put("decode/maxvals", maxvals)


def flip_cases(rng):
    hm = rng.standard_normal((2, 17, 6, 5)).astype(F32)
    put("flip/heatmaps", hm)
    put("flip/flipped_back", flip_back_shift(hm))


def box_cases():
    boxes = np.array([[10, 20, 30, 40], [10, 20, 90, 40], [0, 0, 75, 100], [339.88, 22.16, 153.38,
                      300.73], [5.5, 7.25, 0, 0], [-1.5, 3, -1, 8], [100, 100, 1, 1000]], F32)
    for name, aspect in (("a075", 0.75), ("a1", 1.0), ("a0667", 2 / 3)):
        cs = [xywh_to_cs(*[float(v) for v in b], aspect) for b in boxes]
        put(f"box/{name}/center", np.stack([c for c, _ in cs]))
        put(f"box/{name}/scale", np.stack([s for _, s in cs]))
    put("box/boxes", boxes)


def gt_cases(rng):
    images = [(640, 480), (320, 240), (100, 50)]
    anns = []

    def kps(n_vis, w, h):
        k = np.zeros(51, F32)
        for j in rng.choice(17, n_vis, replace=False):
            k[3 * j:3 * j + 3] = [rng.uniform(0, w), rng.uniform(0, h), rng.integers(1, 3)]
        return k

    def add(img, bbox, area=500.0, iscrowd=0, n_vis=10):
        w, h = images[img]
        anns.append(dict(image=img, bbox=np.array(bbox, F32), area=area, iscrowd=iscrowd,
                         keypoints=kps(n_vis, w, h)))

    add(0, [100.5, 50.25, 80, 200])
    add(1, [-20, -10, 100, 90])           # clipped at the top-left
    add(0, [600, 400, 100, 200])          # clipped at the bottom-right
    add(0, [10, 10, 50, 50], area=0)      # zero area: dropped
    add(0, [10, 10, 50, 50], iscrowd=1)   # crowd: dropped
    add(0, [10, 10, 50, 50], n_vis=0)     # no keypoints: dropped
    add(2, [120, 10, 30, 30])             # starts right of the image: x2 < x1, dropped
    add(2, [10, 60, 30, 30])              # starts below the image: dropped
    add(2, [99, 49, 0.5, 0.5])            # a single pixel in the corner: kept
    add(1, [5, 5, 0.2, 300], n_vis=1)     # w - 1 < 0: zero width, kept
    add(0, [300, 200, 40, 30], n_vis=17)
    kp = anns[-1]["keypoints"]
    kp[2::3] = np.where(np.arange(17) % 3 == 0, 2, np.where(np.arange(17) % 3 == 1, 1, 0))
    recs = load_gt_kernel(images, anns, 0.75)
    put("gt/image_wh", np.array(images, np.int64))
    put("gt/ann_image", np.array([a["image"] for a in anns], np.int64))
    put("gt/ann_bbox", np.stack([a["bbox"] for a in anns]))
    put("gt/ann_area", np.array([a["area"] for a in anns], F32))
    put("gt/ann_iscrowd", np.array([a["iscrowd"] for a in anns], np.int64))
    put("gt/ann_keypoints", np.stack([a["keypoints"] for a in anns]))
    put("gt/kept", np.array([r[0] for r in recs], np.int64))
    put("gt/center", np.stack([r[1] for r in recs]))
    put("gt/scale", np.stack([r[2] for r in recs]))
    put("gt/joints", np.stack([r[3].reshape(-1) for r in recs]).astype(F32))


def half_body_cases(rng):
    joints, prefer, centers, scales, valid = [], [], [], [], []
    vis_patterns = [
        np.ones(17), np.r_[np.ones(11), np.zeros(6)], np.r_[np.zeros(11), np.ones(6)],
        np.r_[np.ones(2), np.zeros(9), np.ones(3), np.zeros(3)],  # 2 upper, 3 lower
        np.r_[np.ones(3), np.zeros(12), np.ones(2)],              # 3 upper, 2 lower
        np.r_[np.ones(1), np.zeros(15), np.ones(1)],              # 1 and 1: none
        np.r_[np.zeros(5), np.ones(2), np.zeros(10)],             # 2 upper only: kept
    ]
    for vis in vis_patterns:
        for up in (True, False):
            j = np.stack([rng.uniform(0, 640, 17), rng.uniform(0, 480, 17), vis], 1).astype(F32)
            c, s = half_body(j[:, :2], j[:, 2], up, 0.75)
            joints.append(j)
            prefer.append(int(up))
            valid.append(int(c is not None))
            centers.append(c if c is not None else np.zeros(2, F32))
            scales.append(s if s is not None else np.zeros(2, F32))
    put("half_body/joints", np.stack(joints))
    put("half_body/prefer_upper", np.array(prefer, np.int64))
    put("half_body/valid", np.array(valid, np.int64))
    put("half_body/center", np.stack(centers))
    put("half_body/scale", np.stack(scales))


def sample_cases(rng):
    img = rng.integers(0, 256, size=(45, 61, 3), dtype=np.uint8)
    put("sample/image", img)
    image_size, heatmap_size, sigma = (32, 40), (8, 10), 2
    joints = np.stack([rng.uniform(5, 55, 17), rng.uniform(5, 40, 17),
                       (rng.uniform(0, 1, 17) < 0.8).astype(F32)], 1).astype(F32)
    joints[0] = [30.25, 22.5, 1]
    put("sample/joints", joints)
    crops = np.array([  # cx, cy, sx, sy, rot, flipped (center as after the flip)
        [30.0, 22.0, 0.2, 0.25, 0.0, 0],
        [30.0, 22.0, 0.2, 0.25, 0.0, 1],
        [25.5, 20.25, 0.15, 0.1875, 33.0, 0],
        [34.5, 20.25, 0.26, 0.325, -61.0, 1],
    ], F32)
    put("sample/crops", crops)
    for k, c in enumerate(crops):
        crop, tgt, wt, jts = sample(img, joints, c[:2], c[2:4], F64(c[4]), bool(c[5]),
                                    image_size, heatmap_size, sigma)
        put(f"sample/crop{k}", crop)  # the input is normalise(crop): see normalise_lut
        put(f"sample/target{k}", tgt)
        put(f"sample/weight{k}", wt)
        put(f"sample/joints_out{k}", jts.astype(F32))
    lut = normalise(np.arange(256, dtype=np.uint8)[None, :, None].repeat(3, 2))  # [3,1,256]
    put("sample/normalise_lut", lut.reshape(3, 256))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/data/pose_reference.safetensors")
    args = ap.parse_args()
    assert cv2.__version__.startswith("4.10."), f"pin opencv 4.10 (got {cv2.__version__})"
    rng = np.random.default_rng(20261123)
    affine_cases(rng)
    warp_cases(rng)
    target_cases()
    decode_cases(rng)
    flip_cases(rng)
    box_cases()
    gt_cases(rng)
    half_body_cases(rng)
    sample_cases(rng)
    save_file(OUT, args.out, metadata={"generator": "tools/gen_pose_reference.py",
                                       "opencv": cv2.__version__, "numpy": np.__version__})
    total = sum(a.nbytes for a in OUT.values())
    print(f"wrote {args.out}: {len(OUT)} tensors, {total} bytes")


if __name__ == "__main__":
    main()
