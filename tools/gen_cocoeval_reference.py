#!/usr/bin/env python3
"""Reference data for tests/test_coco_eval.cpp and tests/test_coco.cpp (tests/data/cocoeval/).

Run:  python3 tools/gen_cocoeval_reference.py [--out tests/data/cocoeval]
Needs numpy and pycocotools (pip install pycocotools). Deterministic (fixed numpy seeds).

Evaluation cases, each <case>_gt.json (COCO person keypoints), <case>_results.json (COCO keypoint
results) and <case>_stats.json ({"stats": COCOeval.stats, "summary": what summarize() printed}),
the stats computed by pycocotools' COCOeval(iouType="keypoints"):
  mixed       images with many people of every size, crowd regions, people without labelled
              joints (ignored), people with num_keypoints > 0 but no visible joint (OKS by the
              box rule), an image with 30 detections (beyond maxDets 20), images without
              detections, detections on images without people, results of another category,
              detections at several noise levels; scores on a 1/64 grid, so some tie
  ties        few distinct scores, many ties inside and across images
  large_only  only large people (the medium figures are -1), an image whose only person is a crowd
All coordinates lie on a 1/8 pixel grid and scores on a 1/64 grid: they are exact in float32, so
the C++ side (which keeps floats) sees the very numbers pycocotools sees.

nms_case.json: the official HRNet post-processing (lib/dataset/coco.py evaluate: rescoring with
in_vis_thre 0.2; lib/nms/nms.py oks_nms at 0.9), implemented here from its formulas with the
numerics of the numpy 1.x it ran on: joint maxima compared with 0.2 and summed in float64, the
keypoints float32 in oks_iou, argsort()[::-1] (stable below 17 elements: equal scores come out
highest index first). "preds" are the inputs, "expected" the kept predictions in output order
(index into preds, rescored score); "oks_nms" calls oks_nms directly per image with float32 scores.

format_*.json: files in the real formats with ints, floats, bools, exponents, escapes, unknown
fields and whitespace; format_expected.json holds the values the loaders must return.
"""
import argparse
import contextlib
import io
import json
import os

import numpy as np

SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                   .89, .89]) / 10.0
NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
         "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
         "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
SKELETON = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
            [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
# a standing person, joint positions as fractions of its box
TEMPLATE = np.array([[.5, .08], [.46, .06], [.54, .06], [.42, .08], [.58, .08], [.32, .22],
                     [.68, .22], [.24, .38], [.76, .38], [.2, .52], [.8, .52], [.38, .55],
                     [.62, .55], [.37, .75], [.63, .75], [.36, .95], [.64, .95]])
SIZES = {"small": (300, 900), "medium": (1500, 8000), "large": (12000, 60000)}


def q(x, step):
    """Round to a multiple of step (a power of two): exact in float32 and short in decimal."""
    return float(np.round(np.float64(x) / step) * step)


def write_json(path, obj):
    """Compact JSON, one record per line."""
    def dump(v):
        return json.dumps(v, separators=(",", ":"))
    with open(path, "w") as f:
        if isinstance(obj, list):
            f.write("[\n" + ",\n".join(dump(r) for r in obj) + "\n]\n")
        else:
            parts = []
            for k, v in obj.items():
                if isinstance(v, list) and k in ("images", "annotations"):
                    parts.append(dump(k) + ":[\n" + ",\n".join(dump(r) for r in v) + "\n]")
                else:
                    parts.append(dump(k) + ":" + dump(v))
            f.write("{" + ",\n".join(parts) + "}\n")


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.images, self.anns, self.results = [], [], []
        self.next_ann = 1

    def image(self, img_id, w=640, h=480):
        self.images.append({"id": img_id, "file_name": "%012d.jpg" % img_id, "width": w,
                            "height": h})
        return img_id

    def box(self, size, W=640, H=480):
        lo, hi = SIZES[size]
        area = self.rng.uniform(lo, hi)
        bw = np.sqrt(area / 0.6 / 2.0)
        bh = 2.0 * bw * self.rng.uniform(0.8, 1.2)
        x = self.rng.uniform(0, max(1.0, W - bw))
        y = self.rng.uniform(0, max(1.0, H - bh))
        return [q(x, .25), q(y, .25), q(bw, .25), q(bh, .25)], q(area, .25)

    def pose(self, bbox, jitter=0.04):
        xy = TEMPLATE + self.rng.normal(0, jitter, TEMPLATE.shape)
        return np.stack([bbox[0] + xy[:, 0] * bbox[2], bbox[1] + xy[:, 1] * bbox[3]], 1)

    def person(self, img_id, size, crowd=False, vis_p=(0.15, 0.2, 0.65), labelled=True,
               num_keypoints=None):
        """A GT person; labelled=False gives v=0 everywhere; num_keypoints overrides the count."""
        bbox, area = self.box(size)
        xy = self.pose(bbox)
        v = self.rng.choice([0, 1, 2], size=17, p=vis_p) if labelled else np.zeros(17, int)
        kps = []
        for j in range(17):
            if v[j] == 0:
                kps += [0, 0, 0]
            else:
                kps += [q(xy[j, 0], .125), q(xy[j, 1], .125), int(v[j])]
        nk = int(np.count_nonzero(v)) if num_keypoints is None else num_keypoints
        ann = {"id": self.next_ann, "image_id": img_id, "category_id": 1,
               "segmentation": [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1],
                                 bbox[0] + bbox[2], bbox[1] + bbox[3], bbox[0],
                                 bbox[1] + bbox[3]]],
               "area": area, "bbox": bbox, "iscrowd": int(crowd), "num_keypoints": nk,
               "keypoints": kps}
        self.next_ann += 1
        self.anns.append(ann)
        return ann

    def score(self):
        return q(self.rng.uniform(0.02, 1.0), 1 / 64)

    def detect(self, ann, noise, score=None, category=1):
        """A detection of `ann`: labelled joints moved by noise*sqrt(area) pixels (std), the
        others anywhere in its box."""
        s = np.sqrt(max(ann["area"], 1.0))
        bb = ann["bbox"]
        guess = self.pose(bb, jitter=0.08)
        kps = []
        for j in range(17):
            x, y, v = ann["keypoints"][3 * j:3 * j + 3]
            if v > 0:
                x = x + self.rng.normal(0, noise * s)
                y = y + self.rng.normal(0, noise * s)
            else:
                x, y = guess[j]
            kps += [q(x, .125), q(y, .125), q(self.rng.uniform(0, 1), 1 / 256)]
        r = {"image_id": ann["image_id"], "category_id": category, "keypoints": kps,
             "score": self.score() if score is None else score}
        self.results.append(r)
        return r

    def false_positive(self, img_id, size, score=None):
        bbox, _ = self.box(size)
        xy = self.pose(bbox, jitter=0.06)
        kps = []
        for j in range(17):
            kps += [q(xy[j, 0], .125), q(xy[j, 1], .125), q(self.rng.uniform(0, 1), 1 / 256)]
        self.results.append({"image_id": img_id, "category_id": 1, "keypoints": kps,
                             "score": self.score() if score is None else score})

    def gt(self):
        return {"info": {"description": "tools/gen_cocoeval_reference.py"}, "licenses": [],
                "images": self.images, "annotations": self.anns,
                "categories": [{"supercategory": "person", "id": 1, "name": "person",
                                "keypoints": NAMES, "skeleton": SKELETON}]}


NOISE = [0.005, 0.02, 0.04, 0.07, 0.12, 0.25]


def case_mixed():
    b = Builder(1)
    ids = [397133, 37777, 252219, 87038, 174482, 403385, 6818, 480985, 458054, 331352, 296649,
           386912]
    for i in ids:
        b.image(i)
    # regular people of every size with detections at several noise levels
    for i in ids[:8]:
        for k in range(int(b.rng.integers(1, 5))):
            a = b.person(i, ["small", "medium", "large"][int(b.rng.integers(0, 3))])
            for _ in range(int(b.rng.integers(0, 3))):
                b.detect(a, NOISE[int(b.rng.integers(0, len(NOISE)))])
    # crowd regions: one unlabelled (OKS by the box rule), one with joints, detections inside
    c1 = b.person(ids[0], "large", crowd=True, labelled=False)
    c2 = b.person(ids[1], "large", crowd=True)
    for c in (c1, c2):
        for _ in range(3):
            b.detect(c, 0.1)
    # people without labelled joints (ignored), one whose count says 0 though joints are labelled
    b.person(ids[2], "medium", labelled=False)
    z = b.person(ids[3], "large", num_keypoints=0)
    b.detect(z, 0.02)
    # counted as labelled though no joint is visible: matched by the box rule
    nb = b.person(ids[4], "large", labelled=False, num_keypoints=3)
    b.detect(nb, 0.0)
    b.false_positive(ids[4], "large")
    # an image with 30 detections (maxDets is 20) of 4 people
    crowded = [b.person(ids[8], s) for s in ("large", "medium", "medium", "large")]
    for k in range(30):
        b.detect(crowded[k % 4], NOISE[k % len(NOISE)])
    # an image with people and no detections; images with only false positives
    b.person(ids[9], "medium")
    b.person(ids[9], "large")
    for i in (ids[10], ids[11]):
        for s in ("small", "medium", "large"):
            b.false_positive(i, s)
    # false positives among people; results of another category (ignored by catIds=[1])
    for i in ids[:6]:
        b.false_positive(i, ["small", "medium", "large"][int(b.rng.integers(0, 3))])
    b.detect(b.anns[0], 0.01, category=2)
    order = b.rng.permutation(len(b.results))
    results = [b.results[k] for k in order]
    # the HRNet results carry center and scale too; unknown fields must be ignored
    for r in results[::7]:
        r["center"] = [100.5, 200.25]
        r["scale"] = [1.5, 2.0]
    return b.gt(), results


def case_ties():
    b = Builder(2)
    ids = [5, 3, 9, 1, 7, 2]
    for i in ids:
        b.image(i)
    scores = [0.25, 0.5, 0.75]
    for i in ids[:5]:
        for _ in range(int(b.rng.integers(1, 4))):
            a = b.person(i, ["medium", "large"][int(b.rng.integers(0, 2))])
            for _ in range(int(b.rng.integers(1, 4))):
                b.detect(a, NOISE[int(b.rng.integers(1, len(NOISE)))],
                         score=scores[int(b.rng.integers(0, 3))])
        b.false_positive(i, "medium", score=scores[int(b.rng.integers(0, 3))])
    b.false_positive(ids[5], "large", score=0.5)
    return b.gt(), b.results


def case_large_only():
    b = Builder(3)
    ids = [11, 22, 33, 44]
    for i in ids:
        b.image(i)
    for i in ids[:3]:
        for _ in range(2):
            a = b.person(i, "large")
            b.detect(a, NOISE[int(b.rng.integers(0, len(NOISE)))])
            b.detect(a, 0.3)
        b.false_positive(i, "medium")
    c = b.person(ids[3], "large", crowd=True)
    b.detect(c, 0.05)
    b.false_positive(ids[3], "large")
    return b.gt(), b.results


def run_cocoeval(gt_path, res_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(res_path)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ev.summarize()
    return [float(s) for s in ev.stats], out.getvalue()


# ------------------------------------------------------------------------------------------------
# The official post-processing, from its formulas (numpy 1.x numerics)

def rescore(kpts, box_score, in_vis_thre=0.2):
    s, n = 0.0, 0
    for j in range(17):
        t = float(kpts[j, 2])  # float32 -> float64, as 0 + np.float32 in numpy 1.x
        if t > in_vis_thre:
            s += t
            n += 1
    return (s / n if n else 0.0) * float(box_score)


def oks_iou(g, d, a_g, a_d):
    """g [51] float32, d [N, 51] float32, a_g float64, a_d [N] float64."""
    var = (SIGMAS * 2) ** 2
    out = np.zeros(d.shape[0])
    for n in range(d.shape[0]):
        dx = d[n, 0::3] - g[0::3]  # float32
        dy = d[n, 1::3] - g[1::3]
        e = (dx ** 2 + dy ** 2) / var / ((a_g + a_d[n]) / 2 + np.spacing(1)) / 2
        out[n] = np.sum(np.exp(-e)) / e.shape[0]
    return out


def oks_nms(kpts, scores, areas, thresh=0.9):
    assert len(scores) <= 16  # where numpy 1.x's argsort is stable
    order = np.array(sorted(range(len(scores)), key=lambda i: scores[i])[::-1], dtype=int)
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        ovr = oks_iou(kpts[i], kpts[order[1:]], areas[i], areas[order[1:]])
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def case_nms():
    rng = np.random.default_rng(4)
    preds = []
    for img in (42, 7, 1000, 3):
        for base in range(int(rng.integers(1, 4))):
            w, h = rng.uniform(40, 200), rng.uniform(80, 400)
            x, y = rng.uniform(0, 400), rng.uniform(0, 300)
            xy = TEMPLATE * [w, h] + [x, y]
            area = np.float32(np.float32(w * 1.25) * np.float32(h * 1.25))
            # duplicates: identical, tiny, borderline and large displacements
            for noise in (0.0, 0.002, 0.01, 0.02, 0.035, 0.08):
                if rng.uniform() < 0.25:
                    continue
                p = xy + rng.normal(0, noise * np.sqrt(w * h), xy.shape)
                maxv = rng.uniform(0, 1, 17)
                kp = np.zeros((17, 3), np.float32)
                kp[:, 0:2] = p
                kp[:, 2] = maxv
                preds.append({"image_id": img, "kp": kp,
                              "box_score": np.float32(rng.uniform(.3, 1)),
                              "area": np.float32(area * np.float32(rng.uniform(.9, 1.1)))})
    # people far from the rest (kept by NMS): one whose joint scores are exactly float32(0.2)
    # (above 0.2 in float64), one with no joint above the threshold (score 0), and two with
    # equal scores in one image
    def extra(img, dx, maxv, box_score):
        kp = preds[0]["kp"].copy()
        kp[:, 0] += np.float32(dx)
        kp[:, 2] = maxv
        preds.append({"image_id": img, "kp": kp, "box_score": np.float32(box_score),
                      "area": preds[0]["area"]})
    extra(3, 1000, np.float32(0.2), 0.75)
    extra(3, 1300, np.float32(0.1), 0.75)
    extra(1000, 1000, rng.uniform(0, 1, 17), 0.625)
    extra(1000, 1300, preds[-1]["kp"][:, 2], 0.625)
    # interleave the images: the output follows their first appearance
    order = rng.permutation(len(preds))
    preds = [preds[k] for k in order]

    by_image = {}
    for i, p in enumerate(preds):
        by_image.setdefault(p["image_id"], []).append(i)
    expected, direct = [], []
    for img, idx in by_image.items():
        kpts = np.array([preds[i]["kp"].flatten() for i in idx])  # float32
        scores = np.array([rescore(preds[i]["kp"], preds[i]["box_score"]) for i in idx])
        areas = np.array([float(preds[i]["area"]) for i in idx])
        keep = oks_nms(kpts, scores, areas)
        if not keep:
            keep = list(range(len(idx)))
        expected += [{"index": idx[k], "score": float(scores[k])} for k in keep]
        s32 = scores.astype(np.float32)
        direct.append({"indices": idx, "scores": [float(s) for s in s32],
                       "keep": oks_nms(kpts, s32.astype(np.float64), areas)})
    return {"in_vis_thre": 0.2, "oks_thre": 0.9,
            "preds": [{"image_id": p["image_id"],
                       "keypoints": [float(v) for v in p["kp"].flatten()],
                       "box_score": float(p["box_score"]), "area": float(p["area"])}
                      for p in preds],
            "expected": expected, "oks_nms": direct}


# ------------------------------------------------------------------------------------------------
# Real-format parsing

def format_files(out):
    rng = np.random.default_rng(5)
    kp_int = []
    for j in range(17):
        v = int(rng.integers(0, 3))
        kp_int += [0, 0, 0] if v == 0 else [int(rng.integers(0, 640)), int(rng.integers(0, 480)), v]
    kp_float = [q(rng.uniform(0, 600), 1 / 16) if k % 3 != 2 else int(rng.integers(0, 3))
                for k in range(51)]
    kp_float[2], kp_float[5] = 2, 1.0  # a visibility written as float
    kp_mix = list(kp_int)
    kp_mix[0], kp_mix[1], kp_mix[2] = 150.0625, 12.5, 2  # 150.0625 is written as 1.500625E+2
    images = [
        {"license": 3, "file_name": "000000000139.jpg",
         "coco_url": "http://images.cocodataset.org/val2017/000000000139.jpg", "height": 426,
         "width": 640, "date_captured": "2013-11-21 01:34:01",
         "flickr_url": "http://farm9.staticflickr.com/8035/8024364858_9c41dc1666_z.jpg",
         "id": 139},
        {"id": 7.0, "file_name": "caf\u00e9 \"q\" \\ [x].jpg", "width": 320.0, "height": 240,
         "extra": {"x": [1, {"y": "]}\"{["}, [], {}], "n": None, "t": True}},
        {"height": 100, "width": 200, "file_name": "a/b.png", "id": 12345678901},
    ]
    anns = [
        {"segmentation": [[10.5, 20.25, 30.0, 40.0, 50.125, 60.0]], "num_keypoints": 0,
         "area": 1234.5678, "iscrowd": 0, "keypoints": kp_int, "image_id": 139,
         "bbox": [10.5, 20.25, 100.0, 200.75], "category_id": 1, "id": 17},
        {"segmentation": {"counts": [int(c) for c in rng.integers(1, 500, 40)], "size": [426, 640]},
         "area": 20000, "iscrowd": True, "keypoints": kp_float, "image_id": 7,
         "bbox": [0, 0, 300, 240], "category_id": 1, "id": 18},
        {"id": 19, "image_id": 139, "category_id": 18, "bbox": [1, 2, 3, 4], "area": 12,
         "iscrowd": 0, "segmentation": [[1, 2, 3, 4, 5, 6]]},
        {"attributes": {"occluded": [[]], "note": "}]"}, "iscrowd": False, "area": 5e2,
         "bbox": [1.0, 2, 3.5, 4], "category_id": 1.0, "keypoints": kp_mix, "image_id": 12345678901,
         "id": 20, "num_keypoints": 11},
    ]
    gt = {"info": {"description": "format test", "year": 2017, "nested": {"a": [1, 2, {"b": []}]}},
          "licenses": [{"url": "http://x", "id": 1, "name": "L"}], "images": images,
          "annotations": anns,
          "categories": [{"supercategory": "person", "id": 1, "name": "person", "keypoints": NAMES,
                          "skeleton": SKELETON},
                         {"supercategory": "animal", "id": 18, "name": "dog"}]}
    text = json.dumps(gt, indent=2).replace("150.0625", "1.500625E+2")
    with open(os.path.join(out, "format_gt.json"), "w") as f:
        f.write(text)

    results = [
        {"image_id": 139, "category_id": 1, "keypoints": kp_float, "score": 0.734375,
         "center": [100.0, 120.5], "scale": [1.2, 2.4]},
        {"score": 1, "keypoints": kp_int, "category_id": 1.0, "image_id": 7},
    ]
    with open(os.path.join(out, "format_results.json"), "w") as f:
        f.write(json.dumps(results, indent=1))
    dets = [
        {"bbox": [258.15, 41.29, 348.26, 243.78], "category_id": 1, "image_id": 139,
         "score": 0.9995}, {"image_id": 139, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.5},
        {"image_id": 7, "category_id": 1, "bbox": [0, 0, 10, 2.5e1], "score": 5e-3},
    ]
    with open(os.path.join(out, "format_dets.json"), "w") as f:
        f.write(json.dumps(dets))

    def person(a):
        v = a["keypoints"][2::3]
        nk = a.get("num_keypoints", sum(1 for x in v if x > 0))
        return {"id": a["id"], "image_id": int(a["image_id"]), "bbox": a["bbox"],
                "area": a["area"], "iscrowd": int(bool(a["iscrowd"])), "num_keypoints": nk,
                "keypoints": a["keypoints"]}
    expected = {
        "images": [[int(im["id"]), im["file_name"], int(im["width"]), int(im["height"])]
                   for im in images],
        "annotations": [person(a) for a in anns if a["category_id"] == 1],
        "keypoint_names": NAMES, "skeleton": SKELETON,
        "results": [{"image_id": int(r["image_id"]), "category_id": int(r["category_id"]),
                     "keypoints": r["keypoints"], "score": r["score"]} for r in results],
        "detections": [{"image_id": d["image_id"], "bbox": d["bbox"], "score": d["score"]}
                       for d in dets if d["category_id"] == 1],
    }
    with open(os.path.join(out, "format_expected.json"), "w") as f:
        json.dump(expected, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                                                  "cocoeval"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for name, make in (("mixed", case_mixed), ("ties", case_ties),
                       ("large_only", case_large_only)):
        gt, results = make()
        gp = os.path.join(args.out, name + "_gt.json")
        rp = os.path.join(args.out, name + "_results.json")
        write_json(gp, gt)
        write_json(rp, results)
        stats, summary = run_cocoeval(gp, rp)
        with open(os.path.join(args.out, name + "_stats.json"), "w") as f:
            json.dump({"stats": stats, "summary": summary}, f, indent=1)
        print("%-10s %3d images %3d people %3d results  AP %.4f  AR %.4f  AP(M) %.4f" % (
            name, len(gt["images"]), len(gt["annotations"]), len(results), stats[0], stats[5],
            stats[3]))
    nms = case_nms()
    with open(os.path.join(args.out, "nms_case.json"), "w") as f:
        json.dump(nms, f)
    print("nms        %d predictions, %d kept" % (len(nms["preds"]), len(nms["expected"])))
    format_files(args.out)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print("total %.1f KB in %s" % (total / 1024, args.out))


if __name__ == "__main__":
    main()
