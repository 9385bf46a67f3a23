#!/usr/bin/env python3
"""A synthetic annotation file with the shape of COCO's person_keypoints_train2017.json (~250 MB),
to time load_coco_keypoints on a file of the real size (the file is not committed; writing it
takes about a minute).

Run:  python3 tools/make_big_coco.py /tmp/big_train2017.json
      /usr/bin/time -v <a program that calls hr::data::load_coco_keypoints on it>

118287 images with the real entry fields; 262465 person annotations (the train2017 count), ~1%
of them crowds with uncompressed-RLE segmentations, the rest polygons of 10-150 points with two
decimals (COCO's typical lengths), keypoints as ints with random visibilities; plus 5000
annotations of other categories, which the loader drops. Compact JSON as in the real file.
"""
import json
import sys

import numpy as np


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/big_train2017.json"
    rng = np.random.default_rng(2017)
    n_img, n_person, n_other = 118287, 262465, 5000
    ids = rng.choice(600000, n_img, replace=False) + 1
    with open(out, "w") as f:
        f.write('{"info":{"description":"COCO 2017 Dataset","url":"http://cocodataset.org",'
                '"version":"1.0","year":2017,"contributor":"COCO Consortium",'
                '"date_created":"2017/09/01"},"licenses":[{"url":"http://creativecommons.org/'
                'licenses/by-nc-sa/2.0/","id":1,"name":"Attribution-NonCommercial-ShareAlike '
                'License"}],"images":[')
        for k, i in enumerate(ids):
            f.write(("," if k else "") + (
                '{"license":%d,"file_name":"%012d.jpg","coco_url":"http://images.cocodataset.org/'
                'train2017/%012d.jpg","height":%d,"width":%d,"date_captured":"2013-11-14 '
                '11:18:45","flickr_url":"http://farm9.staticflickr.com/8186/8119368305_4e622c8349'
                '_z.jpg","id":%d}') % (1 + k % 8, i, i, 427 + k % 213, 640, i))
        f.write('],"annotations":[')
        total = n_person + n_other
        for k in range(total):
            person = k % (total // n_other) != 7 or k >= n_other * (total // n_other)
            img = int(ids[rng.integers(0, n_img)])
            x, y = rng.uniform(0, 500, 2)
            w, h = rng.uniform(5, 300, 2)
            crowd = person and rng.uniform() < 0.01
            if crowd:
                counts = rng.integers(1, 2000, int(rng.integers(100, 600)))
                seg = '{"counts":[%s],"size":[%d,640]}' % (",".join(map(str, counts.tolist())), 480)
            else:
                npts = int(np.clip(rng.normal(40, 25), 10, 150))
                pts = np.round(rng.uniform(0, 640, 2 * npts), 2)
                seg = "[[%s]]" % ",".join(map(str, pts.tolist()))
            ann = ('{"segmentation":%s,"area":%s,"iscrowd":%d,"image_id":%d,"bbox":[%s],'
                   '"category_id":%d,"id":%d') % (
                seg, round(w * h * 0.6, 4), int(crowd), img,
                ",".join(str(round(v, 2)) for v in (x, y, w, h)), 1 if person else 18,
                900000 + k)
            if person:
                v = rng.integers(0, 3, 17)
                kp = np.zeros((17, 3), int)
                kp[:, 0] = np.where(v > 0, rng.integers(0, 640, 17), 0)
                kp[:, 1] = np.where(v > 0, rng.integers(0, 480, 17), 0)
                kp[:, 2] = v
                ann += ',"num_keypoints":%d,"keypoints":[%s]' % (
                    int(np.count_nonzero(v)), ",".join(map(str, kp.flatten().tolist())))
            f.write(("," if k else "") + ann + "}")
        names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                 "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                 "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
        skeleton = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                    [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                    [4, 6], [5, 7]]
        f.write('],"categories":[%s]}' % json.dumps(
            {"supercategory": "person", "id": 1, "name": "person", "keypoints": names,
             "skeleton": skeleton}, separators=(",", ":")))


if __name__ == "__main__":
    main()
