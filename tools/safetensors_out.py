"""The one safetensors writer of the reference-data scripts in tools/ (numpy arrays -> a file the
engine's reader takes): an 8-byte little-endian header length, the JSON header (with
"__metadata__"), the raw little-endian bytes; int64 tensors first so that every tensor is
naturally aligned, then by name; written to PATH.tmp and renamed. The `safetensors` package is
not needed."""
import json
import os
import struct

import numpy as np

DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8"}


def write_safetensors(path, tensors, metadata):
    """tensors: {name: numpy array}; metadata: {str: str}."""
    names = sorted(tensors, key=lambda k: (tensors[k].dtype != np.int64, k))
    header, blobs, off = {"__metadata__": metadata}, [], 0
    for k in names:
        a = np.asarray(tensors[k], order="C")  # keeps 0-d arrays 0-d (ascontiguousarray would not)
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[k] = {"dtype": DTYPES[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
