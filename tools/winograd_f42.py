#!/usr/bin/env python3
"""Derives Winograd F(4, 2)'s matrices (kernels/cpu/conv2d.cpp: the 3x3 stride-2 convolutions
by phases, F(4x4, 2x2)) and measures their float32 rounding error against double sums.

Run: python3 tools/winograd_f42.py [--points 0,1,-1,2] [--channels 256]
Needs sympy and numpy (Debian: python3-sympy, python3-numpy).

For the correlation y_i = sum_j g_j d_{i+j} (i < 4, j < 2, d of 5 values), Y = A^T [(G g) (.)
(B^T d)] with A^T the Vandermonde rows of the four finite points (plus the point at infinity)
and G's rows a_k^j / prod_{l != k} (a_k - a_l); B^T is solved from the identity. The 2-D form
(4x4 outputs of 2x2 filters over 5x5 patches) is Y = A^T [(G g G^T) (.) (B^T d B)] A, summed
over the channels before A^T . A; the error is measured that way, channels of unit-variance
data and filters, relative to the output's rms.
"""
import argparse

import numpy as np
import sympy as sp


def derive(points, m=4, r=2):
    n = m + r - 1
    AT, G = sp.zeros(m, n), sp.zeros(n, r)
    for k, a in enumerate(points):
        f = sp.Integer(1)
        for l, b in enumerate(points):
            if l != k:
                f *= a - b
        for i in range(m):
            AT[i, k] = a**i
        for j in range(r):
            G[k, j] = a**j / f
    AT[m - 1, n - 1] = 1
    G[n - 1, r - 1] = 1
    BT = sp.Matrix(n, n, lambda k, l: sp.Symbol(f"b{k}_{l}"))
    eqs = [sum(AT[i, k] * G[k, j] * BT[k, l] for k in range(n)) - (1 if l == i + j else 0)
           for i in range(m) for j in range(r) for l in range(n)]
    sol = sp.solve(eqs, list(BT), dict=True)
    if not sol:
        raise SystemExit(f"no B^T for points {points}")
    BT = BT.subs(sol[0])
    return AT, G, BT.subs({s: 0 for s in BT.free_symbols})


def error(AT, G, BT, channels, trials=100, seed=0):
    at, g_, bt = (np.array(M.tolist(), dtype=np.float64) for M in (AT, G, BT))
    rng = np.random.default_rng(seed)
    errs = []
    for _ in range(trials):
        d = rng.standard_normal((channels, 5, 5)).astype(np.float32)
        g = rng.standard_normal((channels, 2, 2)).astype(np.float32)
        ref = np.array([[np.sum(d[:, i:i + 2, j:j + 2].astype(np.float64) * g) for j in range(4)]
                        for i in range(4)])
        U = np.einsum("kj,cjl,ml->ckm", g_, g, g_).astype(np.float32)
        V = np.einsum("kj,cjl,ml->ckm", bt, d, bt).astype(np.float32)
        M = (U * V).sum(0, dtype=np.float32)
        Y = at.astype(np.float32) @ M @ at.T.astype(np.float32)
        errs.append(np.sqrt(np.mean((Y - ref) ** 2) / np.mean(ref**2)))
    return float(np.mean(errs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", default="0,1,-1,2", help="the four finite points")
    ap.add_argument("--channels", type=int, default=64)
    args = ap.parse_args()
    points = [sp.nsimplify(p) for p in args.points.split(",")]
    AT, G, BT = derive(points)
    for name, M in (("B^T", BT), ("G", G), ("A^T", AT)):
        print(f"{name} = {M.tolist()}")
    err = error(AT, G, BT, args.channels)
    print(f"rms error / rms output, {args.channels} channels: {err:.3g}")


if __name__ == "__main__":
    main()
