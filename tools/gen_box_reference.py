#!/usr/bin/env python3
"""Reference data for tests/test_box_eval.cpp and tests/test_boxes.cpp (tests/data/boxes/).

Run (pycocotools is not installed for the system Python; the venv sees its torch and numpy):
    python3 -m venv --system-site-packages /tmp/refvenv && /tmp/refvenv/bin/pip install pycocotools
    /tmp/refvenv/bin/python tools/gen_box_reference.py [--out tests/data/boxes]
Needs numpy, torch (CPU; the data was made with 1.13) and pycocotools. Deterministic (fixed seeds).

COCOeval(iouType="bbox") cases, each <case>_gt.json (COCO instances), <case>_results.json (COCO box
results) and <case>_stats.json ({"stats": COCOeval.stats, "summary": what summarize() printed}):
  mixed     categories listed out of id order (one with no ground truth, one with only crowd
            boxes), objects of every size (areas exactly 32^2 and 96^2 among them, "area" fields
            smaller than the box as segmentation areas are), crowd boxes with detections on them,
            images without objects, images without detections, detections of a category that is
            not in the file, an image with 130 detections (maxDets 100), scores on a 1/64 grid
  ties      few distinct scores, many ties inside and across images
  crowded   two images full of objects of two categories: AR@1, AR@10 and AR@100 all differ
  no_large  no large object (those figures are -1)
All coordinates lie on a 1/8 pixel grid and scores on a 1/64 grid: exact in float32, so the C++
side (which keeps result boxes and scores as floats) sees the very numbers pycocotools sees.

nms_cases.json: maskrcnn-benchmark's nms (csrc/cpu/nms_cpu.cpp) ported line for line in float32
numpy, its visiting order from torch's own scores.sort(0, descending=True) (PyTorch's CPU sort,
unstable beyond 16 elements); random boxes on a 1/8 grid with tied scores, and boxes whose IoU is
exactly the threshold (suppressed: nms_cpu.cpp tests ovr >= threshold).

box_convert.json: BoxList's xywh -> xyxy -> xywh conversions (bounding_box.py).

fcos_targets.json: loss.py's prepare_targets / compute_targets_for_locations /
compute_centerness_targets and fcos.py's compute_locations_per_level, copied unchanged, on random
boxes (float32) plus boxes of equal area overlapping, boxes with max(l, t, r, b) exactly on a level
range bound, and locations exactly on a box edge.

fcos_postprocess.json: inference.py's FCOSPostProcessor copied unchanged (the one edit: its two
.sigmoid() calls go through SIGMOID, see below) over a minimal BoxList / cat_boxlist / boxlist_nms /
remove_small_boxes reimplementation (bounding_box.py and boxlist_ops.py, the methods used) with the
nms port above, on random head outputs: more candidates than pre_nms_top_n (both of torch.topk's
CPU paths: nth_element when k * 64 > n, partial_sort when k * 64 <= n), more results than
detections_per_img, tied scores. PyTorch's sigmoid (SLEEF expf) and glibc's expf differ in the last
bit or two for a few percent of inputs; every case is also run with sigmoid = 1 / (1 + expf(-x))
(glibc through ctypes, what the C++ computes) and kept only when both give the same detections
(boxes, labels, order; scores to 2e-7 relative), so the test can compare everything but the scores'
last bits exactly.

format_instances.json + format_instances_expected.json: an instances file in the real format (ints,
floats, bools, exponents, RLE and polygon segmentations, unknown fields) and what json.load reads.
"""
import argparse
import contextlib
import ctypes
import io
import json
import os
import sys
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_cocoeval_reference import q, write_json  # noqa: E402

# ------------------------------------------------------------------------------------------------
# COCOeval bbox cases

SIZES = {"small": (60, 1000), "medium": (1100, 9000), "large": (9500, 60000)}


class Builder:
    def __init__(self, seed, categories):
        self.rng = np.random.default_rng(seed)
        self.images, self.anns, self.results = [], [], []
        self.categories = categories
        self.next_ann = 1

    def image(self, img_id, w=640, h=480):
        self.images.append({"id": img_id, "file_name": "%012d.jpg" % img_id, "width": w,
                            "height": h})
        return img_id

    def box(self, size, W=640, H=480):
        lo, hi = SIZES[size]
        area = self.rng.uniform(lo, hi)
        aspect = self.rng.uniform(0.4, 2.5)
        bw, bh = np.sqrt(area * aspect), np.sqrt(area / aspect)
        x = self.rng.uniform(0, max(1.0, W - bw))
        y = self.rng.uniform(0, max(1.0, H - bh))
        return [q(x, .125), q(y, .125), q(bw, .125), q(bh, .125)]

    def obj(self, img_id, cat, size=None, crowd=False, bbox=None, area=None):
        """A ground-truth object; its "area" is a segmentation's: 60-95% of the box."""
        if bbox is None:
            bbox = self.box(size)
        if area is None:
            area = q(bbox[2] * bbox[3] * self.rng.uniform(0.6, 0.95), .25)
        ann = {"id": self.next_ann, "image_id": img_id, "category_id": cat,
               "segmentation": [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1], bbox[0] + bbox[2],
                                 bbox[1] + bbox[3], bbox[0], bbox[1] + bbox[3]]],
               "area": area, "bbox": bbox, "iscrowd": int(crowd)}
        self.next_ann += 1
        self.anns.append(ann)
        return ann

    def score(self):
        return q(self.rng.uniform(0.02, 1.0), 1 / 64)

    def detect(self, ann, noise, score=None, category=None):
        """A detection of `ann`: corners moved by noise * sqrt(box area) pixels (std)."""
        bb = ann["bbox"]
        s = np.sqrt(max(bb[2] * bb[3], 1.0))
        x0 = bb[0] + self.rng.normal(0, noise * s)
        y0 = bb[1] + self.rng.normal(0, noise * s)
        x1 = bb[0] + bb[2] + self.rng.normal(0, noise * s)
        y1 = bb[1] + bb[3] + self.rng.normal(0, noise * s)
        box = [q(x0, .125), q(y0, .125), q(max(x1 - x0, .125), .125), q(max(y1 - y0, .125), .125)]
        r = {"image_id": ann["image_id"],
             "category_id": ann["category_id"] if category is None else category,
             "bbox": box, "score": self.score() if score is None else score}
        self.results.append(r)
        return r

    def false_positive(self, img_id, cat, size, score=None):
        self.results.append({"image_id": img_id, "category_id": cat, "bbox": self.box(size),
                             "score": self.score() if score is None else score})

    def gt(self):
        return {"info": {"description": "tools/gen_box_reference.py"}, "licenses": [],
                "images": self.images, "annotations": self.anns,
                "categories": [{"supercategory": "thing", "id": c, "name": "cat%d" % c}
                               for c in self.categories]}


NOISE = [0.01, 0.03, 0.06, 0.1, 0.16, 0.3]


def pick(rng, seq):
    return seq[int(rng.integers(0, len(seq)))]


def case_mixed():
    cats = [3, 1, 18, 7, 44, 5]  # file order; 44: no ground truth, 5: only crowd boxes
    b = Builder(11, cats)
    ids = [139, 285, 632, 724, 776, 785, 802, 872, 885, 1000, 1268, 1296, 1353, 1425]
    for i in ids:
        b.image(i)
    real = [3, 1, 18, 7]
    for i in ids[:9]:
        for _ in range(int(b.rng.integers(1, 6))):
            a = b.obj(i, pick(b.rng, real), pick(b.rng, ["small", "medium", "large"]))
            for _ in range(int(b.rng.integers(0, 3))):
                b.detect(a, pick(b.rng, NOISE))
    # areas exactly on the range bounds (inclusive on both sides in COCOeval)
    for area in (32 * 32, 96 * 96):
        a = b.obj(ids[0], 1, bbox=[100.0, 100.0, np.sqrt(area) + 8, np.sqrt(area)], area=area)
        b.detect(a, 0.02)
    # a detection whose own area is exactly 32^2 and that matches nothing
    b.results.append({"image_id": ids[1], "category_id": 7, "bbox": [500.0, 10.0, 16.0, 64.0],
                      "score": 0.5})
    # crowd boxes with detections inside them (matched to the crowd: ignored, no false positive)
    for cat, size in ((3, "large"), (5, "large"), (5, "medium")):
        c = b.obj(ids[2], cat, size, crowd=True)
        for _ in range(3):
            r = b.detect(c, 0.0)
            cb = c["bbox"]  # a part of the crowd region
            r["bbox"] = [q(cb[0] + cb[2] * b.rng.uniform(0, .4), .125),
                         q(cb[1] + cb[3] * b.rng.uniform(0, .4), .125),
                         q(cb[2] * b.rng.uniform(.2, .5), .125),
                         q(cb[3] * b.rng.uniform(.2, .5), .125)]
    # an image with 130 detections (maxDets 100) of 5 objects
    crowded = [b.obj(ids[9], pick(b.rng, real), s) for s in ("large", "medium", "small",
                                                              "medium", "large")]
    for k in range(130):
        b.detect(crowded[k % 5], NOISE[k % len(NOISE)])
    # objects without detections; images with detections only; a category without ground truth
    b.obj(ids[10], 1, "medium")
    b.obj(ids[10], 18, "large")
    for i in (ids[11], ids[12]):
        for s in ("small", "medium", "large"):
            b.false_positive(i, pick(b.rng, real), s)
    b.false_positive(ids[3], 44, "medium")
    b.false_positive(ids[13], 44, "large")
    for i in ids[:6]:
        b.false_positive(i, pick(b.rng, real), pick(b.rng, ["small", "medium", "large"]))
    # a category that is not in the file: loaded, never evaluated
    b.detect(b.anns[0], 0.01, category=99)
    order = b.rng.permutation(len(b.results))
    results = [b.results[k] for k in order]
    for r in results[::9]:
        r["segmentation"] = [[1, 2, 3, 4, 5, 6]]  # unknown to the box loader: ignored
    return b.gt(), results


def case_ties():
    b = Builder(12, [2, 1])
    ids = [5, 3, 9, 1, 7, 2]
    for i in ids:
        b.image(i)
    scores = [0.25, 0.5, 0.75]
    for i in ids[:5]:
        for _ in range(int(b.rng.integers(1, 4))):
            a = b.obj(i, pick(b.rng, [1, 2]), pick(b.rng, ["small", "medium", "large"]))
            for _ in range(int(b.rng.integers(1, 4))):
                b.detect(a, pick(b.rng, NOISE[1:]), score=pick(b.rng, scores))
        b.false_positive(i, pick(b.rng, [1, 2]), "medium", score=pick(b.rng, scores))
    b.false_positive(ids[5], 1, "large", score=0.5)
    return b.gt(), b.results


def case_crowded():
    b = Builder(13, [1, 2])
    for i in (10, 20):
        b.image(i)
        objs = [b.obj(i, pick(b.rng, [1, 2]), pick(b.rng, ["small", "medium", "large"]))
                for _ in range(40)]
        for a in objs:
            for _ in range(int(b.rng.integers(0, 4))):
                b.detect(a, pick(b.rng, NOISE))
        for _ in range(20):
            b.false_positive(i, pick(b.rng, [1, 2]), pick(b.rng, ["small", "medium"]))
    return b.gt(), b.results


def case_no_large():
    b = Builder(14, [4])
    for i in (1, 2, 3):
        b.image(i)
        for _ in range(3):
            a = b.obj(i, 4, pick(b.rng, ["small", "medium"]))
            b.detect(a, pick(b.rng, NOISE))
            b.detect(a, 0.3)
    b.false_positive(2, 4, "large")
    return b.gt(), b.results


def run_cocoeval(gt_path, res_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(res_path)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.summarize()
    return [float(s) for s in ev.stats], out.getvalue()


# ------------------------------------------------------------------------------------------------
# nms: csrc/cpu/nms_cpu.cpp in float32 numpy

def nms_cpu(dets, scores, threshold, ge=True, order=None):
    """nms_cpu_kernel line for line. dets [N, 4] and scores [N] float32 torch tensors; returns the
    kept indices (at::nonzero(suppressed == 0)). ge=False and order= are for the script's checks
    that the ties and the threshold test matter."""
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.int64)
    d = dets.numpy().astype(np.float32)
    x1, y1, x2, y2 = (d[:, k].copy() for k in range(4))
    one = np.float32(1)
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    if order is None:
        order = scores.sort(0, descending=True)[1].numpy()
    ndets = d.shape[0]
    suppressed = np.zeros(ndets, np.uint8)
    thr = np.float32(threshold)
    for _i in range(ndets):
        i = order[_i]
        if suppressed[i] == 1:
            continue
        ix1, iy1, ix2, iy2, iarea = x1[i], y1[i], x2[i], y2[i], areas[i]
        for _j in range(_i + 1, ndets):
            j = order[_j]
            if suppressed[j] == 1:
                continue
            xx1 = max(ix1, x1[j])
            yy1 = max(iy1, y1[j])
            xx2 = min(ix2, x2[j])
            yy2 = min(iy2, y2[j])
            w = max(np.float32(0), xx2 - xx1 + one)
            h = max(np.float32(0), yy2 - yy1 + one)
            inter = w * h
            ovr = inter / (iarea + areas[j] - inter)
            if (ovr >= thr) if ge else (ovr > thr):
                suppressed[j] = 1
    return torch.from_numpy(np.nonzero(suppressed == 0)[0].astype(np.int64))


def nms_cases():
    rng = np.random.default_rng(21)
    cases = []
    tie_mattered = 0
    for n, thresh, tied in ((1, 0.5, False), (2, 0.5, True), (5, 0.3, False), (16, 0.5, True),
                            (17, 0.5, True), (40, 0.6, True), (60, 0.7, False), (150, 0.5, True),
                            (200, 0.6, True), (120, 0.4, False)):
        xy = np.round(rng.uniform(0, 120, (n, 2)) * 8) / 8
        wh = np.round(rng.uniform(0, 50, (n, 2)) * 8) / 8
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        if tied:
            scores = (rng.integers(1, 6, n) / 8).astype(np.float32)
        else:
            scores = np.round(rng.uniform(0, 1, n) * 4096).astype(np.float32) / 4096
        bt, st = torch.from_numpy(boxes), torch.from_numpy(scores)
        keep = nms_cpu(bt, st, thresh)
        stable = np.argsort(-scores, kind="stable")
        tie_mattered += not torch.equal(keep, nms_cpu(bt, st, thresh, order=stable))
        cases.append({"thresh": thresh, "boxes": boxes.tolist(), "scores": scores.tolist(),
                      "keep": keep.tolist()})
    # the tie order of torch's sort decides some result: a stable order would fail the test
    assert tie_mattered > 0
    # IoU exactly at the threshold: 50 / 100 and 60 / 100 (pixel-inclusive areas)
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 4], [20, 20, 29, 29], [20, 20, 29, 25]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    for thresh in (0.5, 0.6):
        bt, st = torch.from_numpy(boxes), torch.from_numpy(scores)
        keep = nms_cpu(bt, st, thresh)
        assert not torch.equal(keep, nms_cpu(bt, st, thresh, ge=False))
        cases.append({"thresh": thresh, "boxes": boxes.tolist(), "scores": scores.tolist(),
                      "keep": keep.tolist()})
    return cases


# ------------------------------------------------------------------------------------------------
# A minimal BoxList (structures/bounding_box.py, the members the FCOS code uses) and boxlist_ops

class BoxList(object):
    def __init__(self, bbox, image_size, mode="xyxy"):
        device = bbox.device if isinstance(bbox, torch.Tensor) else torch.device("cpu")
        bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        assert bbox.ndimension() == 2 and bbox.size(-1) == 4 and mode in ("xyxy", "xywh")
        self.bbox = bbox
        self.size = image_size  # (image_width, image_height)
        self.mode = mode
        self.extra_fields = {}

    def add_field(self, field, field_data):
        self.extra_fields[field] = field_data

    def get_field(self, field):
        return self.extra_fields[field]

    def fields(self):
        return list(self.extra_fields.keys())

    def _copy_extra_fields(self, bbox):
        for k, v in bbox.extra_fields.items():
            self.extra_fields[k] = v

    def convert(self, mode):
        if mode == self.mode:
            return self
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        if mode == "xyxy":
            bbox = torch.cat((xmin, ymin, xmax, ymax), dim=-1)
            bbox = BoxList(bbox, self.size, mode=mode)
        else:
            TO_REMOVE = 1
            bbox = torch.cat(
                (xmin, ymin, xmax - xmin + TO_REMOVE, ymax - ymin + TO_REMOVE), dim=-1
            )
            bbox = BoxList(bbox, self.size, mode=mode)
        bbox._copy_extra_fields(self)
        return bbox

    def _split_into_xyxy(self):
        if self.mode == "xyxy":
            xmin, ymin, xmax, ymax = self.bbox.split(1, dim=-1)
            return xmin, ymin, xmax, ymax
        TO_REMOVE = 1
        xmin, ymin, w, h = self.bbox.split(1, dim=-1)
        return (
            xmin,
            ymin,
            xmin + (w - TO_REMOVE).clamp(min=0),
            ymin + (h - TO_REMOVE).clamp(min=0),
        )

    def __getitem__(self, item):
        bbox = BoxList(self.bbox[item], self.size, self.mode)
        for k, v in self.extra_fields.items():
            bbox.add_field(k, v[item])
        return bbox

    def __len__(self):
        return self.bbox.shape[0]

    def clip_to_image(self, remove_empty=True):
        TO_REMOVE = 1
        self.bbox[:, 0].clamp_(min=0, max=self.size[0] - TO_REMOVE)
        self.bbox[:, 1].clamp_(min=0, max=self.size[1] - TO_REMOVE)
        self.bbox[:, 2].clamp_(min=0, max=self.size[0] - TO_REMOVE)
        self.bbox[:, 3].clamp_(min=0, max=self.size[1] - TO_REMOVE)
        if remove_empty:
            box = self.bbox
            keep = (box[:, 3] > box[:, 1]) & (box[:, 2] > box[:, 0])
            return self[keep]
        return self

    def area(self):
        box = self.bbox
        if self.mode == "xyxy":
            TO_REMOVE = 1
            area = (box[:, 2] - box[:, 0] + TO_REMOVE) * (box[:, 3] - box[:, 1] + TO_REMOVE)
        else:
            area = box[:, 2] * box[:, 3]
        return area


def boxlist_nms(boxlist, nms_thresh, max_proposals=-1, score_field="scores"):
    if nms_thresh <= 0:
        return boxlist
    mode = boxlist.mode
    boxlist = boxlist.convert("xyxy")
    boxes = boxlist.bbox
    score = boxlist.get_field(score_field)
    keep = nms_cpu(boxes, score, nms_thresh)
    if max_proposals > 0:
        keep = keep[: max_proposals]
    boxlist = boxlist[keep]
    return boxlist.convert(mode)


def remove_small_boxes(boxlist, min_size):
    xywh_boxes = boxlist.convert("xywh").bbox
    _, _, ws, hs = xywh_boxes.unbind(dim=1)
    keep = (
        (ws >= min_size) & (hs >= min_size)
    ).nonzero().squeeze(1)
    return boxlist[keep]


def _cat(tensors, dim=0):
    assert isinstance(tensors, (list, tuple))
    if len(tensors) == 1:
        return tensors[0]
    return torch.cat(tensors, dim)


def cat_boxlist(bboxes):
    assert isinstance(bboxes, (list, tuple))
    size = bboxes[0].size
    mode = bboxes[0].mode
    fields = set(bboxes[0].fields())
    cat_boxes = BoxList(_cat([bbox.bbox for bbox in bboxes], dim=0), size, mode)
    for field in fields:
        data = _cat([bbox.get_field(field) for bbox in bboxes], dim=0)
        cat_boxes.add_field(field, data)
    return cat_boxes


# ------------------------------------------------------------------------------------------------
# FCOS targets: fcos.py compute_locations_per_level and loss.py, unchanged

INF = 100000000


def compute_locations_per_level(h, w, stride, device):
    shifts_x = torch.arange(
        0, w * stride, step=stride,
        dtype=torch.float32, device=device
    )
    shifts_y = torch.arange(
        0, h * stride, step=stride,
        dtype=torch.float32, device=device
    )
    shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x)
    shift_x = shift_x.reshape(-1)
    shift_y = shift_y.reshape(-1)
    locations = torch.stack((shift_x, shift_y), dim=1) + stride // 2
    return locations


class FCOSLossComputation(object):
    def __init__(self, object_sizes_of_interest):
        self.object_sizes_of_interest = object_sizes_of_interest  # cfg.MODEL.FCOS.TARGET_ASSIGN

    def prepare_targets(self, points, targets):
        object_sizes_of_interest = self.object_sizes_of_interest
        expanded_object_sizes_of_interest = []
        for l, points_per_level in enumerate(points):
            object_sizes_of_interest_per_level = \
                points_per_level.new_tensor(object_sizes_of_interest[l])
            expanded_object_sizes_of_interest.append(
                object_sizes_of_interest_per_level[None].expand(len(points_per_level), -1)
            )

        expanded_object_sizes_of_interest = torch.cat(expanded_object_sizes_of_interest, dim=0)
        num_points_per_level = [len(points_per_level) for points_per_level in points]
        points_all_level = torch.cat(points, dim=0)
        labels, reg_targets = self.compute_targets_for_locations(
            points_all_level, targets, expanded_object_sizes_of_interest
        )

        for i in range(len(labels)):
            labels[i] = torch.split(labels[i], num_points_per_level, dim=0)
            reg_targets[i] = torch.split(reg_targets[i], num_points_per_level, dim=0)

        labels_level_first = []
        reg_targets_level_first = []
        for level in range(len(points)):
            labels_level_first.append(
                torch.cat([labels_per_im[level] for labels_per_im in labels], dim=0)
            )
            reg_targets_level_first.append(
                torch.cat([reg_targets_per_im[level] for reg_targets_per_im in reg_targets], dim=0)
            )

        return labels_level_first, reg_targets_level_first

    def compute_targets_for_locations(self, locations, targets, object_sizes_of_interest):
        labels = []
        reg_targets = []
        xs, ys = locations[:, 0], locations[:, 1]

        for im_i in range(len(targets)):
            targets_per_im = targets[im_i]
            assert targets_per_im.mode == "xyxy"
            bboxes = targets_per_im.bbox
            labels_per_im = targets_per_im.get_field("labels")
            area = targets_per_im.area()

            l = xs[:, None] - bboxes[:, 0][None]
            t = ys[:, None] - bboxes[:, 1][None]
            r = bboxes[:, 2][None] - xs[:, None]
            b = bboxes[:, 3][None] - ys[:, None]
            reg_targets_per_im = torch.stack([l, t, r, b], dim=2)

            is_in_boxes = reg_targets_per_im.min(dim=2)[0] > 0

            max_reg_targets_per_im = reg_targets_per_im.max(dim=2)[0]
            # limit the regression range for each location
            is_cared_in_the_level = \
                (max_reg_targets_per_im >= object_sizes_of_interest[:, [0]]) & \
                (max_reg_targets_per_im <= object_sizes_of_interest[:, [1]])

            locations_to_gt_area = area[None].repeat(len(locations), 1)
            locations_to_gt_area[is_in_boxes == 0] = INF
            locations_to_gt_area[is_cared_in_the_level == 0] = INF

            # if there are still more than one objects for a location,
            # we choose the one with minimal area
            locations_to_min_area, locations_to_gt_inds = locations_to_gt_area.min(dim=1)

            reg_targets_per_im = reg_targets_per_im[range(len(locations)), locations_to_gt_inds]
            labels_per_im = labels_per_im[locations_to_gt_inds]
            labels_per_im[locations_to_min_area == INF] = 0

            labels.append(labels_per_im)
            reg_targets.append(reg_targets_per_im)

        return labels, reg_targets

    def compute_centerness_targets(self, reg_targets):
        left_right = reg_targets[:, [0, 2]]
        top_bottom = reg_targets[:, [1, 3]]
        centerness = (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0]) * \
                      (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
        return torch.sqrt(centerness)


def levels_for(image_h, image_w, strides):
    return [(s, -(-image_h // s), -(-image_w // s)) for s in strides]


def targets_case(image_h, image_w, strides, ranges, boxes, labels):
    levels = levels_for(image_h, image_w, strides)
    points = [compute_locations_per_level(h, w, s, "cpu") for s, h, w in levels]
    target = BoxList(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), (image_w, image_h))
    target.add_field("labels", torch.tensor(labels, dtype=torch.int64))
    loss = FCOSLossComputation(ranges)
    lab, reg = loss.prepare_targets(points, [target])
    lab, reg = torch.cat(lab), torch.cat(reg)
    ctr = torch.zeros(len(lab))
    pos = torch.nonzero(lab > 0).squeeze(1)
    ctr[pos] = loss.compute_centerness_targets(reg[pos])
    return {"image": [image_h, image_w],
            "levels": [{"stride": s, "h": h, "w": w, "min": float(ranges[k][0]),
                        "max": float(ranges[k][1])} for k, (s, h, w) in enumerate(levels)],
            "boxes": target.bbox.tolist(), "labels": list(labels),
            "out_labels": lab.tolist(), "out_reg": reg.t().reshape(-1).tolist(),
            "out_centerness": ctr.tolist(), "positives": int(len(pos))}


def fcos_targets_cases():
    rng = np.random.default_rng(31)
    small_ranges = [[-1, 16], [16, 32], [32, 64], [64, 128], [128, INF]]
    default5 = [[-1, 64], [64, 128], [128, 256], [256, 512], [512, INF]]
    six = [[-1, 32], [32, 64], [64, 128], [128, 256], [256, 512], [512, INF]]
    cases = []

    def rand_boxes(n, H, W, max_side):
        out = []
        for _ in range(n):
            w, h = rng.uniform(2, max_side, 2)
            x, y = rng.uniform(-w / 2, W - w / 2), rng.uniform(-h / 2, H - h / 2)
            out.append([q(x, .125), q(y, .125), q(x + w, .125), q(y + h, .125)])
        return out

    def make(H, W, strides, ranges, boxes, special):
        """special: (box, [(location x, y, level, assigned to that box)]), labels 100 + k."""
        boxes = boxes + [b for b, _ in special]
        labels = [int(v) for v in rng.integers(1, 81, len(boxes) - len(special))]
        labels += [100 + k for k in range(len(special))]
        c = targets_case(H, W, strides, ranges, boxes, labels)
        for k, (_, checks) in enumerate(special):
            for x, y, level, positive in checks:
                p = sum(lv["h"] * lv["w"] for lv in c["levels"][:level])
                lv = c["levels"][level]
                s = lv["stride"]
                p += (y - s // 2) // s * lv["w"] + (x - s // 2) // s
                assert (c["out_labels"][p] == 100 + k) == positive, (k, c["out_labels"][p])
        return c

    # small image, small ranges: random float boxes and the edge cases
    special = [
        # equal areas, overlapping: at level 1's (40, 40) (max 21 and 21) the first one wins
        ([24.0, 24.0, 55.0, 55.0], [(40, 40, 1, True)]),
        ([30.0, 30.0, 61.0, 61.0], [(40, 40, 1, False)]),
        # level 0 location (36, 44): l = 16 exactly, the upper bound of level 0
        ([20.0, 40.0, 40.0, 50.0], [(36, 44, 0, True)]),
        # level 1 location (40, 56): max = 32 exactly, the upper bound of level 1
        ([8.0, 50.0, 60.0, 60.0], [(40, 56, 1, True)]),
        # level 1 location (72, 72): max = 16 exactly, the lower bound of level 1
        ([56.0, 60.0, 80.0, 88.0], [(72, 72, 1, True)]),
        # a location exactly on an edge is not inside: (12, 12) with x1 = 12
        ([12.0, 4.0, 30.0, 20.0], [(12, 12, 0, False), (20, 12, 0, True)]),
    ]
    cases.append(make(96, 128, [8, 16, 32, 64, 128], small_ranges, rand_boxes(14, 96, 128, 100),
                      special))
    # the default 5 levels, boxes up to 700 px (ranges 256-512 and 512-INF) in a 128x160 image
    special = [([-60.0, 10.0, 20.0, 40.0], [(4, 20, 0, True)]),    # l = 64 at level 0
               ([-120.0, 60.0, 30.0, 100.0], [(8, 72, 1, True)])]  # l = 128 at level 1
    cases.append(make(128, 160, [8, 16, 32, 64, 128], default5, rand_boxes(9, 128, 160, 700),
                      special))
    # the 6-level HRNet config (strides 4 .. 128)
    cases.append(make(48, 64, [4, 8, 16, 32, 64, 128], six, rand_boxes(16, 48, 64, 120), []))
    print("targets   positives", [c["positives"] for c in cases])
    for c in cases:
        assert c["positives"] > 20
    return cases


# ------------------------------------------------------------------------------------------------
# FCOS post-processing: inference.py FCOSPostProcessor, unchanged but for SIGMOID

def contiguous_sigmoid(t):
    """torch.sigmoid with a contiguous result, as the PyTorch 1.0/1.1 the code was written for
    gave it (1.13 keeps the permuted strides of its input, and the .view(N, -1) after it fails)."""
    return torch.sigmoid(t.contiguous())


SIGMOID = contiguous_sigmoid


class FCOSPostProcessor(torch.nn.Module):
    def __init__(
        self,
        pre_nms_thresh,
        pre_nms_top_n,
        nms_thresh,
        fpn_post_nms_top_n,
        min_size,
        num_classes,
    ):
        super(FCOSPostProcessor, self).__init__()
        self.pre_nms_thresh = pre_nms_thresh
        self.pre_nms_top_n = pre_nms_top_n
        self.nms_thresh = nms_thresh
        self.fpn_post_nms_top_n = fpn_post_nms_top_n
        self.min_size = min_size
        self.num_classes = num_classes

    def forward_for_single_feature_map(
            self, locations, box_cls,
            box_regression, centerness,
            image_sizes):
        N, C, H, W = box_cls.shape

        # put in the same format as locations
        box_cls = box_cls.view(N, C, H, W).permute(0, 2, 3, 1)
        box_cls = SIGMOID(box_cls.reshape(N, -1, C))
        box_regression = box_regression.view(N, 4, H, W).permute(0, 2, 3, 1)
        box_regression = box_regression.reshape(N, -1, 4)
        centerness = centerness.view(N, 1, H, W).permute(0, 2, 3, 1)
        centerness = SIGMOID(centerness.reshape(N, -1))

        candidate_inds = box_cls > self.pre_nms_thresh
        pre_nms_top_n = candidate_inds.view(N, -1).sum(1)
        pre_nms_top_n = pre_nms_top_n.clamp(max=self.pre_nms_top_n)

        # multiply the classification scores with centerness scores
        box_cls = box_cls * centerness[:, :, None]

        results = []
        for i in range(N):
            per_box_cls = box_cls[i]
            per_candidate_inds = candidate_inds[i]
            per_box_cls = per_box_cls[per_candidate_inds]

            per_candidate_nonzeros = per_candidate_inds.nonzero()
            per_box_loc = per_candidate_nonzeros[:, 0]
            per_class = per_candidate_nonzeros[:, 1] + 1

            per_box_regression = box_regression[i]
            per_box_regression = per_box_regression[per_box_loc]
            per_locations = locations[per_box_loc]

            per_pre_nms_top_n = pre_nms_top_n[i]

            if per_candidate_inds.sum().item() > per_pre_nms_top_n.item():
                per_box_cls, top_k_indices = \
                    per_box_cls.topk(per_pre_nms_top_n, sorted=False)
                per_class = per_class[top_k_indices]
                per_box_regression = per_box_regression[top_k_indices]
                per_locations = per_locations[top_k_indices]

            detections = torch.stack([
                per_locations[:, 0] - per_box_regression[:, 0],
                per_locations[:, 1] - per_box_regression[:, 1],
                per_locations[:, 0] + per_box_regression[:, 2],
                per_locations[:, 1] + per_box_regression[:, 3],
            ], dim=1)

            h, w = image_sizes[i]
            boxlist = BoxList(detections, (int(w), int(h)), mode="xyxy")
            boxlist.add_field("labels", per_class)
            boxlist.add_field("scores", per_box_cls)
            boxlist = boxlist.clip_to_image(remove_empty=False)
            boxlist = remove_small_boxes(boxlist, self.min_size)
            results.append(boxlist)

        return results

    def forward(self, locations, box_cls, box_regression, centerness, image_sizes):
        sampled_boxes = []
        for _, (l, o, b, c) in enumerate(zip(locations, box_cls, box_regression, centerness)):
            sampled_boxes.append(
                self.forward_for_single_feature_map(
                    l, o, b, c, image_sizes
                )
            )

        boxlists = list(zip(*sampled_boxes))
        boxlists = [cat_boxlist(boxlist) for boxlist in boxlists]
        boxlists = self.select_over_all_levels(boxlists)

        return boxlists

    def select_over_all_levels(self, boxlists):
        num_images = len(boxlists)
        results = []
        for i in range(num_images):
            scores = boxlists[i].get_field("scores")
            labels = boxlists[i].get_field("labels")
            boxes = boxlists[i].bbox
            boxlist = boxlists[i]
            result = []
            # skip the background
            for j in range(1, self.num_classes):
                inds = (labels == j).nonzero().view(-1)

                scores_j = scores[inds]
                boxes_j = boxes[inds, :].view(-1, 4)
                boxlist_for_class = BoxList(boxes_j, boxlist.size, mode="xyxy")
                boxlist_for_class.add_field("scores", scores_j)
                boxlist_for_class = boxlist_nms(
                    boxlist_for_class, self.nms_thresh,
                    score_field="scores"
                )
                num_labels = len(boxlist_for_class)
                boxlist_for_class.add_field(
                    "labels", torch.full((num_labels,), j,
                                         dtype=torch.int64,
                                         device=scores.device)
                )
                result.append(boxlist_for_class)

            result = cat_boxlist(result)
            number_of_detections = len(result)

            # Limit to max_per_image detections **over all classes**
            if number_of_detections > self.fpn_post_nms_top_n > 0:
                cls_scores = result.get_field("scores")
                image_thresh, _ = torch.kthvalue(
                    cls_scores.cpu(),
                    number_of_detections - self.fpn_post_nms_top_n + 1
                )
                keep = cls_scores >= image_thresh.item()
                keep = torch.nonzero(keep).squeeze(1)
                result = result[keep]
            results.append(result)
        return results


_libm = ctypes.CDLL("libm.so.6")
_libm.expf.restype = ctypes.c_float
_libm.expf.argtypes = [ctypes.c_float]


def glibc_sigmoid(t):
    """1 / (1 + expf(-x)) in float32 with glibc's expf: what data/boxes.cpp computes."""
    x = t.detach().numpy().astype(np.float32)
    e = np.array([_libm.expf(float(-v)) for v in x.reshape(-1)], np.float32).reshape(x.shape)
    return torch.from_numpy(np.float32(1) / (np.float32(1) + e))


def run_postprocess(image_h, image_w, levels, cls, reg, ctr, opts):
    global SIGMOID
    outs = []
    for sig in (contiguous_sigmoid, glibc_sigmoid):
        SIGMOID = sig
        pp = FCOSPostProcessor(opts["pre_nms_thresh"], opts["pre_nms_top_n"], opts["nms_thresh"],
                               opts["detections_per_img"], 0, opts["num_classes"])
        locations = [compute_locations_per_level(h, w, s, "cpu") for s, h, w in levels]
        C = opts["num_classes"] - 1
        res = pp(locations,
                 [torch.from_numpy(c).reshape(1, C, h, w) for c, (s, h, w) in zip(cls, levels)],
                 [torch.from_numpy(r).reshape(1, 4, h, w) for r, (s, h, w) in zip(reg, levels)],
                 [torch.from_numpy(c).reshape(1, 1, h, w) for c, (s, h, w) in zip(ctr, levels)],
                 [(image_h, image_w)])[0]
        outs.append(res)
    SIGMOID = contiguous_sigmoid
    a, b = outs
    robust = (torch.equal(a.bbox, b.bbox)
              and torch.equal(a.get_field("labels"), b.get_field("labels"))
              and torch.allclose(a.get_field("scores"), b.get_field("scores"), rtol=2e-7, atol=0))
    return a, robust


def postprocess_case(rng, image_h, image_w, strides, opts, cls_mean=-2.0, ties=0):
    """Random head outputs on 1/16 (logits) and 1/8 (distances) grids, redrawn until the result
    does not depend on the sigmoid's last bits."""
    levels = levels_for(image_h, image_w, strides)
    C = opts["num_classes"] - 1
    for _ in range(50):
        cls = [np.round(rng.normal(cls_mean, 2.0, (C, h, w)) * 16).astype(np.float32) / 16
               for s, h, w in levels]
        ctr = [np.round(rng.normal(0, 1.5, (1, h, w)) * 16).astype(np.float32) / 16
               for s, h, w in levels]
        reg = [np.round(rng.uniform(-2, 5 * s, (4, h, w)) * 8).astype(np.float32) / 8
               for s, h, w in levels]
        # tied scores: copies of one location's logits and distances next to it (same class)
        for _ in range(ties):
            h, w = levels[0][1:]
            y, x = int(rng.integers(0, h - 1)), int(rng.integers(0, w - 2))
            for arr in (cls[0], ctr[0], reg[0]):
                arr[:, y, x + 1] = arr[:, y, x]
                arr[:, y + 1, x] = arr[:, y, x]
            cls[0][0, y, x] = 3.0  # a sure candidate
            cls[0][0, y, x + 1] = 3.0
            cls[0][0, y + 1, x] = 3.0
        res, robust = run_postprocess(image_h, image_w, levels, cls, reg, ctr, opts)
        if robust:
            break
    else:
        raise RuntimeError("no robust draw")
    n_cand = [int((torch.sigmoid(torch.from_numpy(c)) > opts["pre_nms_thresh"]).sum())
              for c in cls]
    return {"image": [image_h, image_w], "options": opts,
            "levels": [{"stride": s, "h": h, "w": w} for s, h, w in levels],
            "cls": [c.reshape(-1).tolist() for c in cls],
            "reg": [r.reshape(-1).tolist() for r in reg],
            "ctr": [c.reshape(-1).tolist() for c in ctr],
            "candidates": n_cand,
            "boxes": res.bbox.tolist(), "scores": res.get_field("scores").tolist(),
            "labels": res.get_field("labels").tolist()}


def fcos_postprocess_cases():
    rng = np.random.default_rng(41)
    cases = []
    base = {"pre_nms_thresh": 0.05, "pre_nms_top_n": 100, "nms_thresh": 0.6,
            "detections_per_img": 30, "num_classes": 5}
    # more candidates than pre_nms_top_n on level 0 (k * 64 > n: nth_element), a capped result
    c = postprocess_case(rng, 90, 130, [8, 16, 32, 64, 128], base, ties=3)
    assert c["candidates"][0] > 100 and c["candidates"][0] < 6400 and len(c["labels"]) >= 30
    cases.append(c)
    # k * 64 <= n on level 0 (partial_sort), no cap (detections_per_img 0), 6 levels
    opts = dict(base, pre_nms_top_n=3, detections_per_img=0, nms_thresh=0.5, num_classes=4)
    c = postprocess_case(rng, 48, 64, [4, 8, 16, 32, 64, 128], opts)
    assert c["candidates"][0] >= 192
    cases.append(c)
    # few candidates (no topk), a high threshold, a small cap
    opts = dict(base, pre_nms_thresh=0.3, pre_nms_top_n=1000, detections_per_img=5)
    c = postprocess_case(rng, 64, 64, [8, 16, 32, 64, 128], opts, cls_mean=-3.0)
    assert len(c["labels"]) == 5
    cases.append(c)
    return cases


def postprocess_tie_case():
    """The kthvalue cap keeps every detection tied with the k-th best: 3 classes at one location
    with equal logits, detections_per_img 2, so 3 come out."""
    opts = {"pre_nms_thresh": 0.05, "pre_nms_top_n": 1000, "nms_thresh": 0.6,
            "detections_per_img": 2, "num_classes": 4}
    levels = [(8, 2, 2)]
    cls = [np.full((3, 2, 2), -6.0, np.float32)]
    cls[0][:, 0, 0] = 1.0
    cls[0][0, 1, 1] = 2.0
    ctr = [np.zeros((1, 2, 2), np.float32)]
    reg = [np.full((4, 2, 2), 3.0, np.float32)]
    res, robust = run_postprocess(16, 16, levels, cls, reg, ctr, opts)
    assert robust and len(res) == 4  # the 2.0 one and all three tied ones
    return {"image": [16, 16], "options": opts,
            "levels": [{"stride": s, "h": h, "w": w} for s, h, w in levels],
            "cls": [c.reshape(-1).tolist() for c in cls],
            "reg": [r.reshape(-1).tolist() for r in reg],
            "ctr": [c.reshape(-1).tolist() for c in ctr], "candidates": [4],
            "boxes": res.bbox.tolist(), "scores": res.get_field("scores").tolist(),
            "labels": res.get_field("labels").tolist()}


def box_conversions():
    """BoxList(xywh, mode="xywh").convert("xyxy") (COCODataset's targets) and back to "xywh"
    (prepare_for_coco_detection), widths and heights below 1 among them (clamped to 0)."""
    rng = np.random.default_rng(51)
    xywh = np.round(rng.uniform(-5, 200, (12, 4)) * 8) / 8
    xywh[:4, 2:] = [[0.5, 3], [0, 0], [0.125, 1], [1, 0.75]]
    xywh[4] = [0.1, 0.2, 0.3, 1.7]  # not exact in float32
    b = BoxList(torch.tensor(xywh.tolist()), (640, 480), mode="xywh")
    xyxy = b.convert("xyxy")
    return {"xywh": xywh.tolist(), "xyxy": xyxy.bbox.tolist(),
            "back": xyxy.convert("xywh").bbox.tolist()}


# ------------------------------------------------------------------------------------------------
# Real-format instances file

def format_files(out):
    images = [
        {"license": 3, "file_name": "000000000139.jpg", "height": 426, "width": 640,
         "date_captured": "2013-11-21 01:34:01", "id": 139},
        {"id": 7.0, "file_name": "caf\u00e9 \"q\" \\ [x].jpg", "width": 320.0, "height": 240,
         "extra": {"x": [1, {"y": "]}\"{["}, [], {}], "n": None, "t": True}},
    ]
    anns = [
        {"segmentation": [[10.5, 20.25, 30.0, 40.0, 50.125, 60.0]], "area": 1234.5678,
         "iscrowd": 0, "image_id": 139, "bbox": [10.5, 20.25, 100.0, 200.75], "category_id": 18,
         "id": 17},
        {"segmentation": {"counts": [3, 5, 7, 9, 11], "size": [426, 640]}, "area": 20000,
         "iscrowd": True, "image_id": 7, "bbox": [0, 0, 300, 240], "category_id": 1, "id": 18},
        {"attributes": {"occluded": [[]], "note": "}]"}, "iscrowd": False, "area": 5e2,
         "bbox": [1.0, 2, 3.5, 4e1], "category_id": 1.0, "image_id": 139, "id": 20,
         "segmentation": {"counts": "PPYo0", "size": [426, 640]}},
        {"id": 21, "image_id": 7, "category_id": 3, "bbox": [0.1, 0.2, 0.3, 0.7], "area": 0.2,
         "iscrowd": 0, "segmentation": []},
    ]
    cats = [{"supercategory": "animal", "id": 18, "name": "dog"},
            {"supercategory": "person", "id": 1, "name": "person", "keypoints": ["a"]},
            {"id": 3, "name": "car", "supercategory": "vehicle"}]
    gt = {"info": {"description": "format test", "year": 2017}, "licenses": [], "images": images,
          "annotations": anns, "categories": cats}
    with open(os.path.join(out, "format_instances.json"), "w") as f:
        f.write(json.dumps(gt, indent=2).replace("1234.5678", "1.2345678E+3"))
    expected = {
        "images": [[int(im["id"]), im["file_name"], int(im["width"]), int(im["height"])]
                   for im in images],
        "annotations": [[a["id"], a["image_id"], int(a["category_id"]), a["bbox"], a["area"],
                         int(bool(a["iscrowd"]))] for a in anns],
        "categories": [[c["id"], c["name"], c["supercategory"]] for c in cats],
    }
    with open(os.path.join(out, "format_instances_expected.json"), "w") as f:
        json.dump(expected, f)


def dump(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "boxes"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="torch.meshgrid")  # the official call, 1.13's warning
    for name, make in (("mixed", case_mixed), ("ties", case_ties), ("crowded", case_crowded),
                       ("no_large", case_no_large)):
        gt, results = make()
        gp = os.path.join(args.out, name + "_gt.json")
        rp = os.path.join(args.out, name + "_results.json")
        write_json(gp, gt)
        write_json(rp, results)
        stats, summary = run_cocoeval(gp, rp)
        with open(os.path.join(args.out, name + "_stats.json"), "w") as f:
            json.dump({"stats": stats, "summary": summary}, f, indent=1)
        print("%-9s %3d images %3d objects %3d results  AP %.4f  AP50 %.4f  AR1 %.4f AR10 %.4f "
              "AR100 %.4f" % (name, len(gt["images"]), len(gt["annotations"]), len(results),
                              stats[0], stats[1], stats[6], stats[7], stats[8]))
    nms = nms_cases()
    dump(os.path.join(args.out, "nms_cases.json"), nms)
    print("nms       %d cases" % len(nms))
    tg = fcos_targets_cases()
    dump(os.path.join(args.out, "fcos_targets.json"), tg)
    dump(os.path.join(args.out, "box_convert.json"), box_conversions())
    pp = fcos_postprocess_cases() + [postprocess_tie_case()]
    dump(os.path.join(args.out, "fcos_postprocess.json"), pp)
    print("postproc  candidates %s, detections %s" % ([c["candidates"] for c in pp],
                                                      [len(c["labels"]) for c in pp]))
    format_files(args.out)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print("total %.1f KB in %s" % (total / 1024, args.out))


if __name__ == "__main__":
    main()
