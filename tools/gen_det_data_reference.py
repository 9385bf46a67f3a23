#!/usr/bin/python3
"""Reference data for tests/test_det_data.cpp: HRNet-FCOS's (maskrcnn-benchmark's) detection data
pipeline run by its own code (data/transforms/transforms.py, structures/bounding_box.py,
structures/image_list.py and data/datasets/coco.py's filtering, copied below with the parts the
pipeline uses) on torchvision 0.14 and Pillow 9.4.

Run:  /usr/bin/python3 tools/gen_det_data_reference.py --out tests/data/det
Needs Debian's python3-torch (1.13), python3-torchvision (0.14), python3-pil (9.4) and numpy.
Writes det_reference.safetensors (tools/safetensors_out.py) and instances_tiny.json.

Cases (tensors "<case>/<role>", options in the metadata):
  resize_*     src u8 [H,W,3] -> out u8 [h,w,3]: PIL Image.resize((w, h), BILINEAR)
  get_size     rows i64 [N,6]: w, h, min_size, max_size (-1: None), oh, ow (Resize.get_size)
  boxes_*      xywh f32 [N,4] in a (w, h) image -> xyxy (convert), clipped + keep i64 (clip_to_image
               remove_empty=True), resized to (new_w, new_h), flipped (transpose(0)), back to
               xywh (convert("xywh") of the resized boxes: prepare_for_coco_detection)
  transform_*  src u8, boxes xyxy f32 -> image u8 (Resize [+ flip]), out_boxes, padded f32
               [3,H,W]: ToTensor + Normalize, then to_image_list(size_divisible) padding
  records      instances_tiny.json through COCODataset's filtering and __getitem__'s targets:
               ids i64 (kept, in order), then per kept image <id>/boxes f32 [n,4], <id>/labels i64
"""
import argparse
import json
import math
import os
import random

import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image
from safetensors_out import write_safetensors  # noqa: E402

CASES = {}
TENSORS = {}


def put(case, role, a):
    TENSORS[f"{case}/{role}"] = np.ascontiguousarray(a)


# ---- maskrcnn_benchmark/structures/bounding_box.py (the methods the data pipeline uses) ----

FLIP_LEFT_RIGHT = 0


class BoxList(object):
    def __init__(self, bbox, image_size, mode="xyxy"):
        device = bbox.device if isinstance(bbox, torch.Tensor) else torch.device("cpu")
        bbox = torch.as_tensor(bbox, dtype=torch.float32, device=device)
        self.bbox = bbox
        self.size = image_size  # (image_width, image_height)
        self.mode = mode
        self.extra_fields = {}

    def add_field(self, field, field_data):
        self.extra_fields[field] = field_data

    def get_field(self, field):
        return self.extra_fields[field]

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
        elif self.mode == "xywh":
            TO_REMOVE = 1
            xmin, ymin, w, h = self.bbox.split(1, dim=-1)
            return (
                xmin,
                ymin,
                xmin + (w - TO_REMOVE).clamp(min=0),
                ymin + (h - TO_REMOVE).clamp(min=0),
            )

    def resize(self, size, *args, **kwargs):
        ratios = tuple(float(s) / float(s_orig) for s, s_orig in zip(size, self.size))
        if ratios[0] == ratios[1]:
            ratio = ratios[0]
            scaled_box = self.bbox * ratio
            bbox = BoxList(scaled_box, size, mode=self.mode)
            for k, v in self.extra_fields.items():
                bbox.add_field(k, v)
            return bbox

        ratio_width, ratio_height = ratios
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        scaled_xmin = xmin * ratio_width
        scaled_xmax = xmax * ratio_width
        scaled_ymin = ymin * ratio_height
        scaled_ymax = ymax * ratio_height
        scaled_box = torch.cat(
            (scaled_xmin, scaled_ymin, scaled_xmax, scaled_ymax), dim=-1
        )
        bbox = BoxList(scaled_box, size, mode="xyxy")
        for k, v in self.extra_fields.items():
            bbox.add_field(k, v)
        return bbox.convert(self.mode)

    def transpose(self, method):
        image_width, image_height = self.size
        xmin, ymin, xmax, ymax = self._split_into_xyxy()
        TO_REMOVE = 1
        transposed_xmin = image_width - xmax - TO_REMOVE
        transposed_xmax = image_width - xmin - TO_REMOVE
        transposed_ymin = ymin
        transposed_ymax = ymax
        transposed_boxes = torch.cat(
            (transposed_xmin, transposed_ymin, transposed_xmax, transposed_ymax), dim=-1
        )
        bbox = BoxList(transposed_boxes, self.size, mode="xyxy")
        for k, v in self.extra_fields.items():
            bbox.add_field(k, v)
        return bbox.convert(self.mode)

    def __getitem__(self, item):
        bbox = BoxList(self.bbox[item], self.size, self.mode)
        for k, v in self.extra_fields.items():
            bbox.add_field(k, v[item])
        return bbox

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


# ---- maskrcnn_benchmark/data/transforms/transforms.py ----

class Compose(object):
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target


class Resize(object):
    def __init__(self, min_size, max_size):
        if not isinstance(min_size, (list, tuple)):
            min_size = (min_size,)
        self.min_size = min_size
        self.max_size = max_size

    # modified from torchvision to add support for max size
    def get_size(self, image_size):
        w, h = image_size
        size = random.choice(self.min_size)
        max_size = self.max_size
        if max_size is not None:
            min_original_size = float(min((w, h)))
            max_original_size = float(max((w, h)))
            if max_original_size / min_original_size * size > max_size:
                size = int(round(max_size * min_original_size / max_original_size))

        if (w <= h and w == size) or (h <= w and h == size):
            return (h, w)

        if w < h:
            ow = size
            oh = int(size * h / w)
        else:
            oh = size
            ow = int(size * w / h)

        return (oh, ow)

    def __call__(self, image, target):
        size = self.get_size(image.size)
        image = F.resize(image, size)
        target = target.resize(image.size)
        return image, target


class RandomHorizontalFlip(object):
    def __init__(self, prob=0.5):
        self.prob = prob

    def __call__(self, image, target):
        if random.random() < self.prob:
            image = F.hflip(image)
            target = target.transpose(0)
        return image, target


class ToTensor(object):
    def __call__(self, image, target):
        return F.to_tensor(image), target


class Normalize(object):
    def __init__(self, mean, std, to_bgr255=True):
        self.mean = mean
        self.std = std
        self.to_bgr255 = to_bgr255

    def __call__(self, image, target):
        if self.to_bgr255:
            image = image[[2, 1, 0]] * 255
        image = F.normalize(image, mean=self.mean, std=self.std)
        return image, target


# ---- maskrcnn_benchmark/structures/image_list.py to_image_list (a list of tensors) ----

def to_image_list(tensors, size_divisible=0):
    max_size = tuple(max(s) for s in zip(*[img.shape for img in tensors]))
    if size_divisible > 0:
        stride = size_divisible
        max_size = list(max_size)
        max_size[1] = int(math.ceil(max_size[1] / stride) * stride)
        max_size[2] = int(math.ceil(max_size[2] / stride) * stride)
        max_size = tuple(max_size)
    batch_shape = (len(tensors),) + max_size
    batched_imgs = tensors[0].new(*batch_shape).zero_()
    for img, pad_img in zip(tensors, batched_imgs):
        pad_img[: img.shape[0], : img.shape[1], : img.shape[2]].copy_(img)
    return batched_imgs


# ---- maskrcnn_benchmark/data/datasets/coco.py (the filtering and the target) ----

def _has_only_empty_bbox(anno):
    return all(any(o <= 1 for o in obj["bbox"][2:]) for obj in anno)


def has_valid_annotation(anno):
    if len(anno) == 0:
        return False
    if _has_only_empty_bbox(anno):
        return False
    if "keypoints" not in anno[0]:
        return True
    return False


def coco_records(data, remove_images_without_annotations):
    """COCODataset.__init__ + __getitem__'s target (pycocotools' index: annotations per image in
    file order, getCatIds() in the file's category order: pycocotools does not sort it)."""
    imgs = {im["id"]: im for im in data["images"]}
    img_to_anns = {i: [] for i in imgs}
    for a in data["annotations"]:
        img_to_anns[a["image_id"]].append(a)
    ids = sorted(imgs.keys())
    if remove_images_without_annotations:
        ids = [i for i in ids if has_valid_annotation(img_to_anns[i])]
    cat_ids = [c["id"] for c in data["categories"]]
    contiguous = {v: i + 1 for i, v in enumerate(cat_ids)}
    out = []
    for i in ids:
        anno = [obj for obj in img_to_anns[i] if obj["iscrowd"] == 0]
        boxes = [obj["bbox"] for obj in anno]
        boxes = torch.as_tensor(boxes).reshape(-1, 4)
        size = (imgs[i]["width"], imgs[i]["height"])
        target = BoxList(boxes, size, mode="xywh").convert("xyxy")
        classes = torch.tensor([contiguous[obj["category_id"]] for obj in anno], dtype=torch.int64)
        target.add_field("labels", classes)
        target = target.clip_to_image(remove_empty=True)
        out.append((i, target.bbox.numpy(), target.get_field("labels").numpy()))
    return out


def image(rng, h, w, noise=40):
    """Smooth structure plus noise: resampling weights matter everywhere, never a flat image."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 100 * np.sin(xx / (3 + c) + yy / (5 + 2 * c)) for c in range(3)], -1)
    return np.clip(base + rng.integers(-noise, noise + 1, (h, w, 3)), 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/det")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(2027)

    # Pillow's bilinear resize: reductions near 1 and far, enlargements, one axis, odd sizes
    shapes = [((48, 64), (47, 63)), ((47, 63), (48, 64)), ((50, 67), (30, 40)),
              ((31, 17), (93, 51)), ((90, 120), (19, 25)), ((1, 57), (3, 20)),
              ((64, 80), (64, 81)), ((81, 64), (80, 64)), ((53, 80), (64, 95)),
              ((37, 25), (74, 49)), ((49, 51), (50, 50)), ((2, 2), (7, 5))]
    for _ in range(28):  # small random shapes and scales
        h, w = (int(v) for v in rng.integers(1, 41, 2))
        oh, ow = (int(v) for v in rng.integers(1, 61, 2))
        shapes.append(((h, w), (oh, ow)))
    for k, ((h, w), (oh, ow)) in enumerate(shapes):
        name = f"resize_{k:02d}"
        src = image(rng, h, w) if k % 2 == 0 else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        CASES[name] = {"op": "resize"}
        put(name, "src", src)
        put(name, "out", np.asarray(Image.fromarray(src).resize((ow, oh), Image.BILINEAR)))

    # Resize.get_size over many sizes, with and without the cap; ties of round() included
    rows = []
    fixed = [(640, 480, 800, 1333), (480, 640, 800, 1333), (800, 600, 800, 1333),
             (600, 800, 600, 1000), (2666, 1001, 800, 1333), (2666, 1003, 800, 1333),
             (1001, 2666, 800, 1333), (100, 100, 100, 200), (100, 100, 64, None),
             (333, 500, 256, 320), (500, 333, 256, 320), (1, 1000, 10, 1333), (1000, 1, 10, 100),
             (320, 256, 256, 320), (256, 320, 256, 320), (320, 256, 224, 320)]
    for w, h, s, m in fixed:
        rows.append((w, h, s, m))
    for _ in range(400):
        w, h = (int(v) for v in rng.integers(1, 2000, 2))
        s = int(rng.integers(1, 1400))
        m = None if rng.random() < 0.2 else int(rng.integers(s, 2 * s + 400))
        rows.append((w, h, s, m))
    table = []
    for w, h, s, m in rows:
        oh, ow = Resize(s, m).get_size((w, h))
        table.append((w, h, s, -1 if m is None else m, oh, ow))
    CASES["get_size"] = {"op": "get_size"}
    put("get_size", "rows", np.array(table, dtype=np.int64))

    # box conversions: xywh (some widths < 1, some outside the image) -> xyxy -> clip -> resize ->
    # flip, and xywh of the resized ones
    for name, (w, h), (nw, nh), n in (("boxes_same_ratio", (64, 48), (96, 72), 40),
                                      ("boxes_two_ratios", (333, 500), (512, 769), 60),
                                      ("boxes_down", (640, 427), (400, 266), 60),
                                      ("boxes_identity", (50, 70), (50, 70), 20)):
        x = rng.uniform(-0.2 * w, 1.1 * w, n)
        y = rng.uniform(-0.2 * h, 1.1 * h, n)
        bw = np.where(rng.random(n) < 0.1, rng.uniform(0, 1.5, n), rng.uniform(0, 0.7 * w, n))
        bh = np.where(rng.random(n) < 0.1, rng.uniform(0, 1.5, n), rng.uniform(0, 0.7 * h, n))
        xywh = np.stack([x, y, bw, bh], 1).astype(np.float32)
        xywh[::5] = np.round(xywh[::5])  # whole pixels as well
        CASES[name] = {"op": "boxes", "w": w, "h": h, "new_w": nw, "new_h": nh}
        put(name, "xywh", xywh)
        b = BoxList(torch.from_numpy(xywh), (w, h), mode="xywh").convert("xyxy")
        put(name, "xyxy", b.bbox.numpy().copy())
        b.add_field("idx", torch.arange(n, dtype=torch.int64))
        c = b.clip_to_image(remove_empty=True)
        put(name, "clipped", c.bbox.numpy())
        put(name, "keep", c.get_field("idx").numpy())
        r = c.resize((nw, nh))
        put(name, "resized", r.bbox.numpy())
        put(name, "flipped", r.transpose(FLIP_LEFT_RIGHT).bbox.numpy())
        # prepare_for_coco_detection: resized boxes of a (nw, nh) image back to (w, h), as xywh
        back = BoxList(r.bbox.clone(), (nw, nh)).resize((w, h)).convert("xywh")
        put(name, "coco_xywh", back.bbox.numpy())

    # the whole transform: Resize (+ flip), ToTensor, Normalize, to_image_list
    for name, (h, w), s, m, flip, bgr, mean, std, div in (
            ("transform_train_flip", (23, 31), 30, 100, True, True,
             [102.9801, 115.9465, 122.7717], [1.0, 1.0, 1.0], 32),
            ("transform_cap", (20, 45), 30, 50, False, True,
             [102.9801, 115.9465, 122.7717], [1.0, 1.0, 1.0], 32),
            ("transform_down_rgb", (50, 37), 21, 1333, True, False,
             [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], 8),
            ("transform_same", (24, 32), 24, 1333, False, True,
             [102.9801, 115.9465, 122.7717], [57.375, 57.12, 58.395], 0)):
        src = image(rng, h, w)
        n = 6
        bx = rng.uniform(0, w - 2, n)
        by = rng.uniform(0, h - 2, n)
        boxes = np.stack([bx, by, np.minimum(bx + rng.uniform(1, w / 2, n), w - 1),
                          np.minimum(by + rng.uniform(1, h / 2, n), h - 1)], 1).astype(np.float32)
        CASES[name] = {"op": "transform", "min_size": s, "max_size": m, "flip": flip,
                       "to_bgr255": bgr, "mean": mean, "std": std, "div": div}
        put(name, "src", src)
        put(name, "boxes", boxes)
        target = BoxList(torch.from_numpy(boxes), (w, h))
        img, target = Compose([Resize(s, m), RandomHorizontalFlip(1.0 if flip else 0.0)])(
            Image.fromarray(src), target)
        put(name, "image", np.asarray(img))
        put(name, "out_boxes", target.bbox.numpy())
        tensor, _ = Compose([ToTensor(), Normalize(mean, std, bgr)])(img, target)
        put(name, "padded", to_image_list([tensor], div)[0].numpy())

    # COCODataset's filtering and targets on a small instances file
    cats = [{"id": 13, "name": "stop sign", "supercategory": "outdoor"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"}]
    images, anns = [], []
    aid = 100
    specs = {  # image id: [(category, bbox, iscrowd)]
        7: [(1, [3.5, 4.25, 20.0, 30.0], 0), (3, [50, 40, 30, 12], 0)],
        2: [],                                                     # no annotation
        5: [(13, [1, 1, 1.0, 9], 0), (1, [4, 4, 8, 0.5], 0)],      # only empty boxes
        3: [(1, [10, 10, 20, 20], 1)],                             # only a crowd: kept, no box
        9: [(3, [-5, -3, 30, 20], 0), (13, [60, 50, 40, 40], 0),   # clipped
            (1, [70, 10, 10, 10], 0), (1, [5, 5, 1.0, 1.0], 0),   # outside; w = 1: removed
            (13, [20, 20, 15, 15], 1)],
        4: [(1, [0, 0, 1.5, 30], 0), (3, [10, 10, 0.8, 0.9], 0)],  # one usable box
    }
    for i, (img_id, objs) in enumerate(specs.items()):
        images.append({"id": img_id, "file_name": f"{img_id:012d}.jpg", "width": 64 + i,
                       "height": 48 + 2 * i})
        for cat, bbox, crowd in objs:
            aid += 1
            anns.append({"id": aid, "image_id": img_id, "category_id": cat, "bbox": bbox,
                         "area": float(bbox[2] * bbox[3]), "iscrowd": crowd,
                         "segmentation": [[bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1],
                                           bbox[0] + bbox[2], bbox[1] + bbox[3]]]})
    data = {"images": images, "annotations": anns, "categories": cats}
    with open(os.path.join(args.out, "instances_tiny.json"), "w") as f:
        json.dump(data, f, indent=1)
    for name, remove in (("records_train", True), ("records_test", False)):
        recs = coco_records(data, remove)
        CASES[name] = {"op": "records", "remove": remove}
        put(name, "ids", np.array([r[0] for r in recs], dtype=np.int64))
        for img_id, boxes, labels in recs:
            put(name, f"{img_id}/boxes", boxes.reshape(-1, 4).astype(np.float32))
            put(name, f"{img_id}/labels", labels.astype(np.int64))

    meta = {k: json.dumps(v, sort_keys=True) for k, v in CASES.items()}
    import PIL
    import torchvision
    meta["_generator"] = (f"tools/gen_det_data_reference.py, torch {torch.__version__}, "
                          f"torchvision {torchvision.__version__}, Pillow {PIL.__version__}")
    out = os.path.join(args.out, "det_reference.safetensors")
    write_safetensors(out, TENSORS, meta)
    print(f"{out}: {len(CASES)} cases, {len(TENSORS)} tensors, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
