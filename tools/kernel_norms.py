#!/usr/bin/env python3
"""The L2 norm of every convolution and dense kernel in safetensors files
(a run's model.safetensors or a checkpoint unit's), and their global norm.

Why: weight decay on a kernel that a batchnorm follows only shrinks it (the
layer's output does not depend on its scale), and the step's effect grows as
lr / |w|^2; comparing the norms of two checkpoints shows how far that went.
Standard library only (no numpy), so it runs anywhere the engine does.

    python3 tools/kernel_norms.py runs/r/checkpoints/*/model.safetensors [--match conv5_block3]
"""
import argparse
import array
import json
import math
import struct
import sys


def kernel_norms(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        norms = {}
        for name, t in header.items():
            if name == "__metadata__" or not name.endswith("/kernel"):
                continue
            if t["dtype"] != "F32":
                sys.exit(f"{path}: tensor {name} is {t['dtype']}, expected F32")
            start, end = t["data_offsets"]
            f.seek(8 + n + start)
            x = array.array("f")
            x.frombytes(f.read(end - start))
            if sys.byteorder != "little":
                x.byteswap()
            norms[name] = math.sqrt(math.fsum(v * v for v in x))
    return norms


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--match", default="", help="print only kernels whose name contains this")
    a = ap.parse_args()
    for path in a.files:
        norms = kernel_norms(path)
        total = math.sqrt(math.fsum(v * v for v in norms.values()))
        print(f"{path}: {len(norms)} kernels, global norm {total:.4f}")
        for name, v in norms.items():
            if a.match in name:
                print(f"  {name} {v:.4f}")


if __name__ == "__main__":
    main()
