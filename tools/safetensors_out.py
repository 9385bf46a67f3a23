"""The one safetensors writer and reader of the scripts in tools/ and the Python tests (numpy arrays <-> a file the
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


def read_safetensors(path):
    """The tensors of a safetensors file as {name: numpy array} (F32, F16, I64, U8)."""
    kinds = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "U8": np.uint8}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = np.frombuffer(data[a:b], dtype=np.dtype(kinds[v["dtype"]]).newbyteorder("<")) \
            .reshape(v["shape"]).astype(kinds[v["dtype"]])
    return out
