#!/usr/bin/python3
"""Writes the checkpoint fixtures in tests/data/ckpt_* that tests/test_checkpoint_io.cpp reads.

Run:   /usr/bin/python3 tools/make_checkpoint_fixtures.py [out_dir]   (default: tests/data)
Needs: torch (1.13, Debian python3-torch) and the official `safetensors` package:
       /usr/bin/python3 -m pip install --break-system-packages safetensors
The C++ test needs no Python: it regenerates every expected value from the formulas below.

Tensor values (i = flat row-major index of the tensor as the state dict holds it; every value
is exactly representable in its dtype, so the test compares exactly):
  conv1.weight            f32  [4,3,3,3]  ((7*i) % 61) * 0.0625 - 2
  bn1.weight              f16  [5]        0.5*i - 1
  bn1.running_var         f16  [3,4]      transpose of base[4,3], base[k] = 0.25*k + 0.5:
                                          r, c = divmod(i, 4) -> 0.25*(3*c + r) + 0.5   (strides (1,3))
  bn1.num_batches_tracked i64  []         12345678901
  head.bias               bf16 [7]        0.25*i - 0.75
  head.weight             bf16 [3,3]      base[3,6][:, 1::2], base[k] = 0.125*k - 1:
                                          r, c = divmod(i, 3) -> 0.125*(6*r + 1 + 2*c) - 1
                                          (storage offset 1, strides (6,2))
  index.table             i64  [2,3]      1000000007*i - 3
  fc.weight               f32  [3,5]      0.5*i - 3
  fc.weight_t             f32  [5,3]      fc.weight.t() (same storage): r, c = divmod(i, 3) ->
                                          0.5*(5*c + r) - 3
  shared.a                f32  [6]        big[0:6],   big[k] = 0.25*k + 1 (k < 12): 0.25*i + 1
  shared.b                f32  [2,3]      big[4:10] (same storage, offset 4): 0.25*(i + 4) + 1
  scale                   f32  []         0.75
  empty                   f32  [0,4]      (no values)
  mask                    u8   [6]        (37*i + 5) % 256

Files:
  ckpt_state.pth          torch.save of that OrderedDict (with the _metadata attribute a module's
                          state_dict carries), default pickle protocol 2.
  ckpt_state.safetensors  the same tensors (made contiguous) written by safetensors.torch, with
                          metadata {"format": "pt", "origin": "make_checkpoint_fixtures"}.
  ckpt_nested.pth         pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL...): a training
                          checkpoint {'epoch', 'arch', ints incl. 2**70, floats, bytes, a tuple, a
                          list, 'model': {'decoy': ones(2)}, 'state_dict': the state dict above with
                          conv1.weight as an nn.Parameter plus a non-tensor entry 'note', 'optimizer':
                          a float64 momentum buffer}. The reader must pick 'state_dict' over 'model'
                          and ignore the float64 tensor outside it.
  ckpt_zip64.pth          the entries of ckpt_state.pth renamed under 'renamed_prefix/' and written
                          by write_zip64() below with every ZIP64 field in use (torch.load checks it).
  ckpt_torch2.pth         hand-assembled pickle in the torch 2.x forms, under 'exported/':
                          {'meta': 1, 'state_dict_ema': {
                             'v3.bf16':  _rebuild_tensor_v3 on a torch.storage.UntypedStorage of 12
                                         bytes with dtype torch.bfloat16, size (2,3), stride (1,2);
                                         storage values base[k] = 0.5*k - 1 (k < 6):
                                         r, c = divmod(i, 3) -> 0.5*(r + 2*c) - 1
                             'tag.f16':  _rebuild_tensor_v2 whose storage type is the dtype
                                         torch.float16, size (4,): 0.25*i + 2 }}
  ckpt_forbidden.pth      {'w': ones(2), 'payload': an object that reduces to os.system} -- the
                          reader must refuse the global 'posix.system' without running anything.
  ckpt_legacy.pth         the pre-1.6 (non-zip) torch.save format: refused with a clear error
                          (its bytes change from run to run: the format embeds random keys).
  ckpt_nometa.safetensors the tensors of ckpt_state.safetensors, no metadata: the test checks that
                          write_safetensors reproduces it byte for byte (same layout rules: data
                          ordered by dtype, header padded with spaces to a multiple of 8).
"""
import collections
import os
import pickle
import struct
import sys
import zipfile
import zlib

import torch

try:
    import safetensors.torch
except ImportError:
    sys.exit("needs the safetensors package: /usr/bin/python3 -m pip install --break-system-packages safetensors")


def formula(n, f, dtype):
    i = torch.arange(n, dtype=torch.float64)
    return f(i).to(dtype)


def state_dict():
    sd = collections.OrderedDict()
    sd["conv1.weight"] = formula(108, lambda i: ((7 * i) % 61) * 0.0625 - 2, torch.float32).reshape(4, 3, 3, 3)
    sd["bn1.weight"] = formula(5, lambda i: 0.5 * i - 1, torch.float16)
    sd["bn1.running_var"] = formula(12, lambda k: 0.25 * k + 0.5, torch.float16).reshape(4, 3).t()
    sd["bn1.num_batches_tracked"] = torch.tensor(12345678901, dtype=torch.int64)
    sd["head.bias"] = formula(7, lambda i: 0.25 * i - 0.75, torch.bfloat16)
    sd["head.weight"] = formula(18, lambda k: 0.125 * k - 1, torch.bfloat16).reshape(3, 6)[:, 1::2]
    sd["index.table"] = (torch.arange(6, dtype=torch.int64) * 1000000007 - 3).reshape(2, 3)
    fc = formula(15, lambda i: 0.5 * i - 3, torch.float32).reshape(3, 5)
    sd["fc.weight"] = fc
    sd["fc.weight_t"] = fc.t()
    big = formula(12, lambda k: 0.25 * k + 1, torch.float32)
    sd["shared.a"] = big[0:6]
    sd["shared.b"] = big[4:10].view(2, 3)
    sd["scale"] = torch.tensor(0.75, dtype=torch.float32)
    sd["empty"] = torch.zeros(0, 4, dtype=torch.float32)
    sd["mask"] = ((torch.arange(6, dtype=torch.int64) * 37 + 5) % 256).to(torch.uint8)
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    return sd


def check_layout(sd):
    assert not sd["bn1.running_var"].is_contiguous() and sd["bn1.running_var"].stride() == (1, 3)
    hw = sd["head.weight"]
    assert hw.storage_offset() == 1 and hw.stride() == (6, 2)
    assert sd["fc.weight_t"].data_ptr() == sd["fc.weight"].data_ptr()
    assert sd["shared.b"].storage_offset() == 4
    assert sd["shared.a"].storage().data_ptr() == sd["shared.b"].storage().data_ptr()


def write_zip64(path, entries):
    """A zip with STORED entries where every size and offset goes through the ZIP64 extra field,
    the ZIP64 end-of-central-directory record and locator (as torch writes files over 4 GiB).
    Data is 64-byte aligned with an 'FB' padding extra field, like torch's writer."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        nb = name.encode()
        crc = zlib.crc32(data)
        offset = len(out)
        extra = struct.pack("<HHQQ", 0x0001, 16, len(data), len(data))
        pad = (-(offset + 30 + len(nb) + len(extra) + 4)) % 64
        extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 0, 0, 0x21, crc,
                           0xFFFFFFFF, 0xFFFFFFFF, len(nb), len(extra)) + nb + extra + data
        cextra = struct.pack("<HHQQQ", 0x0001, 24, len(data), len(data), offset)
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc,
                               0xFFFFFFFF, 0xFFFFFFFF, len(nb), len(cextra), 0, 0, 0, 0,
                               0xFFFFFFFF) + nb + cextra
    cd_offset = len(out)
    out += central
    z64 = len(out)
    n = len(entries)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, len(central), cd_offset)
    out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF,
                       0xFFFFFFFF, 0xFFFFFFFF, 0)
    with open(path, "wb") as f:
        f.write(out)


# ---- a tiny pickle assembler for the torch 2.x forms torch 1.13 cannot write
def p_str(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(v):
    return b"J" + struct.pack("<i", v)


def p_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def p_tuple(*parts):
    return b"(" + b"".join(parts) + b"t"


def p_pid(storage_type, key, numel):
    return p_tuple(p_str("storage"), storage_type, p_str(key), p_str("cpu"), p_int(numel)) + b"Q"


EMPTY_ORDERED_DICT = p_global("collections", "OrderedDict") + b")R"


def torch2_pickle():
    v3 = (p_global("torch._utils", "_rebuild_tensor_v3") +
          p_tuple(p_pid(p_global("torch.storage", "UntypedStorage"), "0", 12), p_int(0),
                  p_tuple(p_int(2), p_int(3)), p_tuple(p_int(1), p_int(2)), b"\x89",
                  EMPTY_ORDERED_DICT, p_global("torch", "bfloat16")) + b"R")
    v2 = (p_global("torch._utils", "_rebuild_tensor_v2") +
          p_tuple(p_pid(p_global("torch", "float16"), "1", 4), p_int(0), p_tuple(p_int(4)),
                  p_tuple(p_int(1)), b"\x89", EMPTY_ORDERED_DICT) + b"R")
    inner = b"}(" + p_str("v3.bf16") + v3 + p_str("tag.f16") + v2 + b"u"
    return b"\x80\x02}(" + p_str("meta") + p_int(1) + p_str("state_dict_ema") + inner + b"u."


def check_torch2(data_pkl, storages):
    """Load the hand-made pickle with a Python unpickler that implements the torch 2.x forms,
    and compare with the documented formulas."""
    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16}

    def rebuild_v3(storage, offset, size, stride, requires_grad, hooks, dtype):
        flat = torch.frombuffer(bytearray(storage), dtype=dtype)
        return torch.as_strided(flat, size, stride, offset).clone()

    def rebuild_v2(storage, offset, size, stride, requires_grad, hooks):
        return torch.as_strided(storage, size, stride, offset).clone()

    class U(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v3"):
                return rebuild_v3
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return rebuild_v2
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            if (module, name) == ("torch.storage", "UntypedStorage"):
                return "untyped"
            if module == "torch" and name in dtypes:
                return dtypes[name]
            raise pickle.UnpicklingError(f"{module}.{name}")

        def persistent_load(self, pid):
            _, typ, key, _, numel = pid
            raw = storages[key]
            if typ == "untyped":
                assert len(raw) == numel
                return raw
            flat = torch.frombuffer(bytearray(raw), dtype=typ)
            assert flat.numel() == numel
            return flat

    import io
    obj = U(io.BytesIO(data_pkl)).load()
    sd = obj["state_dict_ema"]
    r, c = torch.meshgrid(torch.arange(2.0), torch.arange(3.0), indexing="ij")
    assert torch.equal(sd["v3.bf16"], (0.5 * (r + 2 * c) - 1).to(torch.bfloat16))
    assert torch.equal(sd["tag.f16"], (0.25 * torch.arange(4.0) + 2).to(torch.float16))


class Evil:
    def __reduce__(self):
        return (os.system, ("echo the checkpoint reader executed a pickled call",))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "data")
    os.makedirs(out, exist_ok=True)
    p = lambda name: os.path.join(out, name)

    sd = state_dict()
    check_layout(sd)
    torch.save(sd, p("ckpt_state.pth"))
    back = torch.load(p("ckpt_state.pth"))
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)

    safetensors.torch.save_file({k: v.contiguous().clone() for k, v in sd.items()},
                                p("ckpt_state.safetensors"),
                                metadata={"format": "pt", "origin": "make_checkpoint_fixtures"})
    st = safetensors.torch.load_file(p("ckpt_state.safetensors"))
    assert all(torch.equal(st[k], sd[k]) for k in sd)
    safetensors.torch.save_file(st, p("ckpt_nometa.safetensors"))

    nested_sd = state_dict()
    nested_sd["conv1.weight"] = torch.nn.Parameter(nested_sd["conv1.weight"])
    nested_sd["note"] = "not a tensor"
    ckpt = {
        "epoch": 7, "arch": "hrnet_w18", "best_acc": 0.875, "step": -5, "big": 2**40,
        "huge": 2**70, "flags": [True, False, None], "blob": b"\x00\x01", "shape": (1, 2, 3),
        "model": {"decoy": torch.ones(2)},
        "state_dict": nested_sd,
        "optimizer": {"state": {0: {"momentum_buffer": torch.arange(3, dtype=torch.float64)}},
                      "param_groups": [{"lr": 0.1, "params": [0]}]},
    }
    torch.save(ckpt, p("ckpt_nested.pth"), pickle_protocol=4)
    assert torch.equal(torch.load(p("ckpt_nested.pth"))["state_dict"]["fc.weight_t"], sd["fc.weight_t"])

    with zipfile.ZipFile(p("ckpt_state.pth")) as z:
        entries = [("renamed_prefix/" + i.filename.split("/", 1)[1], z.read(i)) for i in z.infolist()]
    write_zip64(p("ckpt_zip64.pth"), entries)
    with zipfile.ZipFile(p("ckpt_zip64.pth")) as z:
        assert z.testzip() is None
    back = torch.load(p("ckpt_zip64.pth"))
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)

    storages = {
        "0": formula(6, lambda k: 0.5 * k - 1, torch.bfloat16).view(torch.uint8).numpy().tobytes(),
        "1": formula(4, lambda i: 0.25 * i + 2, torch.float16).view(torch.uint8).numpy().tobytes(),
    }
    pkl = torch2_pickle()
    check_torch2(pkl, storages)
    with zipfile.ZipFile(p("ckpt_torch2.pth"), "w", zipfile.ZIP_STORED) as z:
        for name, b in [("data.pkl", pkl), ("byteorder", b"little"), ("data/0", storages["0"]),
                        ("data/1", storages["1"]), ("version", b"3\n")]:
            z.writestr(zipfile.ZipInfo("exported/" + name, date_time=(2020, 1, 1, 0, 0, 0)), b)

    torch.save({"w": torch.ones(2), "payload": Evil()}, p("ckpt_forbidden.pth"))
    torch.save({"w": torch.ones(2)}, p("ckpt_legacy.pth"), _use_new_zipfile_serialization=False)

    total = 0
    for name in sorted(os.listdir(out)):
        if name.startswith("ckpt_"):
            size = os.path.getsize(p(name))
            total += size
            print(f"{name:28s} {size:6d} bytes")
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
