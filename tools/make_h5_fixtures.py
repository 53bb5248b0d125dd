#!/usr/bin/env python3
"""Generate tests/fixtures/h5/: a tiny Keras ResNet's weights in every Keras h5 layout.

    python tools/make_h5_fixtures.py [--out tests/fixtures/h5]

The Rust h5 reader (crates/nn/src/keras_h5/) must read the files Keras itself writes,
so every file here except two comes from a real Keras writer; the Rust test
(crates/nn/tests/keras_h5.rs) checks that each one gives, bit for bit, the tensors that
tools/keras_to_safetensors.py makes of it.

The network has ResNet50's exact topology and layer names (tools/keras_resnet.py) at
tiny widths (stem 4, stage widths 2/2/4/4 with expansion 4, two blocks per stage, a
3-class head), so all the files together stay a few hundred KB. One set of seeded
weights (seed 4321) is written as:

| file | writer | layout |
|---|---|---|
| legacy.h5 | tf_keras `save_weights` | root `layer_names`, `<layer>/<layer>/<w>:0` |
| full_model.h5 | tf_keras `model.save` | the same under `model_weights`, plus the model config |
| nested.h5 | tf_keras `save_weights` of base-in-a-model (the tutorial's shape) | one group for the whole base |
| keras3_full_model.h5 | Keras 3 `model.save('x.h5')` (its legacy writer) | as full_model.h5, weight names without `:0` |
| keras3.weights.h5 | Keras 3 `save_weights` | `layers/<class>_<n>/vars/<i>`, `name` attributes |
| keras3_nested.weights.h5 | Keras 3 `save_weights`, nested | `layers/functional/layers/...` |
| keras3_model.keras | Keras 3 `model.save('x.keras')` | a zip holding config.json, metadata.json, model.weights.h5 (stored) |
| keras3_deflated.keras | keras3_model.keras re-zipped with deflate (zipfile) | the same, compressed entries |
| keras3_unnamed.weights.h5 | keras3.weights.h5 without its `name` attributes (h5py) | mapped by Keras 3's layer order |
| int_bias.h5 | h5py | an error case: legacy layout, one conv whose bias is int32 |
| caffe.h5 | h5py, like the old caffe-named release | `res2a_branch2a`..., fixed-length bytes attributes split into `layer_names0`, `layer_names1`, chunked + gzip datasets, newest-format superblock |

and, through tools/keras_to_safetensors.py, `weights.safetensors` (from legacy.h5) and
`caffe.safetensors` (from caffe.h5: the same tensors, metadata bn_epsilon 0.001).

The h5 files are committed gzipped (`legacy.h5.gz` ...): HDF5 spends about 1 KB of
mostly empty B-tree and heap space per group, so the ten files are 2.5 MB raw and
260 KB compressed; the Rust test unpacks them into a temporary folder.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import keras_resnet as kr  # noqa: E402
import keras_to_safetensors as k2s  # noqa: E402

# Keep in sync with crates/nn/tests/keras_h5.rs (tiny_config).
CONFIG = dict(stem=4, widths=(2, 2, 4, 4), depths=(2, 2, 2, 2), input_shape=(32, 32, 3), classes=3)
WEIGHT_SEED = 4321


def nested_model(keras, weights):
    """The tutorial's shape: the base (no head) as one layer of an outer model."""
    L = keras.layers
    base = kr.build_resnet(keras, **{**CONFIG, "classes": None})
    inp = L.Input(shape=CONFIG["input_shape"])
    x = base(inp)
    x = L.GlobalAveragePooling2D(name="avg_pool")(x)
    x = L.Dense(CONFIG["classes"], activation="softmax", name="predictions")(x)
    outer = keras.Model(inp, x, name="tutorial")
    kr.assign_weights(base, {k: v for k, v in weights.items() if not k.startswith("predictions/")})
    head = outer.get_layer("predictions")
    head.kernel.assign(weights["predictions/kernel"])
    head.bias.assign(weights["predictions/bias"])
    return outer


def caffe_name(layer):
    """``conv2_block1_1_conv`` -> ``res2a_branch2a`` (the converter's mapping, reversed)."""
    if layer == "predictions":
        return "fc1000"
    if layer.startswith("conv1_"):
        return "conv1" if layer.endswith("_conv") else "bn_conv1"
    stage, rest = layer[len("conv"):].split("_block")
    block, branch, kind = rest.split("_")
    base = f"{stage}{chr(ord('a') + int(block) - 1)}_branch{ {'0': '1', '1': '2a', '2': '2b', '3': '2c'}[branch]}"
    return ("res" if kind == "conv" else "bn") + base


def fixed_strings(values):
    return np.array([v.encode() for v in values], dtype="S")  # fixed-length bytes, as in the official file


def write_caffe(path, weights):
    """The old caffe-named Keras 2 release's layout, written with h5py."""
    with h5py.File(path, "w", libver="latest") as f:  # superblock v3, new-style groups
        layers = []
        for key, arr in weights.items():
            layer, w = key.split("/")
            old = caffe_name(layer)
            if old not in f:
                f.create_group(old)
                layers.append(old)
            f[old].create_dataset(f"{old}/{w}:0", data=arr, chunks=True, compression="gzip")
        for layer in layers:
            f[layer].attrs["weight_names"] = fixed_strings([f"{layer}/{w}" for w in f[layer][layer].keys()])
        # Keras splits an attribute over HDF5's 64 KiB limit into name0, name1, ...
        half = len(layers) // 2
        f.attrs["layer_names0"] = fixed_strings(layers[:half])
        f.attrs["layer_names1"] = fixed_strings(layers[half:])
        f.attrs["keras_version"] = b"2.1.2"
        f.attrs["backend"] = b"tensorflow"


def write_int_bias(path, weights):
    """An error case: the legacy layout with one layer whose bias is int32."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array(["conv1_conv"], dtype=h5py.string_dtype())
        g = f.create_group("conv1_conv")
        g.attrs["weight_names"] = np.array(["conv1_conv/kernel:0", "conv1_conv/bias:0"], dtype=h5py.string_dtype())
        g.create_dataset("conv1_conv/kernel:0", data=weights["conv1_conv/kernel"])
        g.create_dataset("conv1_conv/bias:0", data=np.arange(weights["conv1_conv/bias"].size, dtype=np.int32))


def strip_names(src, dst):
    """A Keras 3 weights file as writers before `name` attributes made it."""
    with open(src, "rb") as fi, open(dst, "wb") as fo:
        fo.write(fi.read())
    with h5py.File(dst, "r+") as f:
        def visit(_, obj):
            if "name" in obj.attrs and obj.name.endswith("/vars") and obj.name.startswith("/layers/"):
                del obj.attrs["name"]
        f.visititems(visit)


H5_FILES = ("legacy.h5", "full_model.h5", "nested.h5", "keras3_full_model.h5", "keras3_model.keras",
            "keras3_deflated.keras", "keras3.weights.h5",
            "keras3_nested.weights.h5", "keras3_unnamed.weights.h5", "caffe.h5")


def write_gzip(src, dst):
    """gzip without a timestamp, so the same file gives the same bytes."""
    with open(src, "rb") as fi, open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                                        filename="") as fo:
        fo.write(fi.read())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "h5"))
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)

    import keras as k3
    import tf_keras

    with tempfile.TemporaryDirectory() as tmp:
        p = lambda name: os.path.join(tmp, name)  # noqa: E731
        model = kr.build_resnet(tf_keras, **CONFIG)
        weights = kr.seeded_weights(model, WEIGHT_SEED)
        kr.assign_weights(model, weights)
        model.save_weights(p("legacy.h5"))
        model.save(p("full_model.h5"))
        nested_model(tf_keras, weights).save_weights(p("nested.h5"))

        model3 = kr.build_resnet(k3, **CONFIG)
        kr.assign_weights(model3, weights)
        model3.save_weights(p("keras3.weights.h5"))
        model3.save(p("keras3_full_model.h5"))
        model3.save(p("keras3_model.keras"))
        with zipfile.ZipFile(p("keras3_model.keras")) as zi, \
                zipfile.ZipFile(p("keras3_deflated.keras"), "w", zipfile.ZIP_DEFLATED) as zo:
            for info in zi.infolist():
                zo.writestr(info.filename, zi.read(info))
        nested_model(k3, weights).save_weights(p("keras3_nested.weights.h5"))
        strip_names(p("keras3.weights.h5"), p("keras3_unnamed.weights.h5"))

        write_caffe(p("caffe.h5"), weights)

        write_int_bias(p("int_bias.h5"), weights)
        write_gzip(p("int_bias.h5"), os.path.join(out, "int_bias.h5.gz"))

        k2s.convert(p("legacy.h5"), os.path.join(out, "weights.safetensors"))
        k2s.convert(p("caffe.h5"), os.path.join(out, "caffe.safetensors"))

        # Every layout must give the same tensors through the converter.
        for name in H5_FILES:
            conv = p(name + ".safetensors")
            _, meta = k2s.convert(p(name), conv)
            got, _ = k2s.read_safetensors(conv)
            if set(got) != set(weights) or any(not np.array_equal(got[k], weights[k]) for k in weights):
                raise SystemExit(f"{name}: the converter does not give back the weights written")
            write_gzip(p(name), os.path.join(out, name + ".gz"))
            print(f"{name}: {os.path.getsize(p(name))} bytes ({os.path.getsize(os.path.join(out, name + '.gz'))} "
                  f"gzipped), {meta['source_format']}, bn_epsilon {meta['bn_epsilon']}")
    total = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f"{len(weights)} tensors, {sum(v.size for v in weights.values())} parameters; {total} bytes in {out}")


if __name__ == "__main__":
    main()
