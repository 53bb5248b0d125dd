#!/usr/bin/env python3
"""Write a converted ResNet safetensors file back as a Keras legacy h5 weights file.

    python tools/safetensors_to_keras.py IN.safetensors OUT.h5 [--verify]

The reverse of tools/keras_to_safetensors.py, so weights trained or modified on the
Rust side can be loaded by ``tf_keras`` / tf.keras with ``model.load_weights(OUT.h5)``
(and by keras_to_safetensors.py again).  The file mirrors the official
``resnet50_weights_tf_dim_ordering_tf_kernels*.h5`` layout: root ``layer_names`` in
Keras's own layer order (weightless layers included), one group per layer with
``weight_names``, datasets at ``<layer>/<layer>/<weight>:0``, string attributes as
fixed-length bytes, split into ``name0``, ``name1``... past HDF5's 64 KiB header limit
exactly as Keras does.  Because layers are in Keras's order, positional loading
(``load_weights`` without ``by_name``) works, not only ``by_name=True``.

``--verify`` (needs TensorFlow + tf_keras) builds the matching tf_keras model, loads the
file both positionally and by name, and checks every weight against the input.
"""

from __future__ import annotations

import argparse
import os
import sys

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import keras_to_safetensors as k2s  # noqa: E402

HDF5_OBJECT_HEADER_LIMIT = 64512  # tf_keras.src.saving.legacy.hdf5_format


def save_str_list_attr(group, name, values, limit=HDF5_OBJECT_HEADER_LIMIT):
    """Keras's save_attributes_to_hdf5_group: fixed-length bytes, chunked if too large."""
    data = np.asarray([v.encode("utf8") for v in values], dtype="S") if values else np.asarray([], dtype="S1")
    if any(len(v.encode("utf8")) > limit for v in values):
        raise ValueError(f"an item of attribute {name} exceeds {limit} bytes")
    n = 1
    chunks = np.array_split(data, n)
    while any(c.nbytes > limit for c in chunks):
        n += 1
        chunks = np.array_split(data, n)
    if n > 1:
        for i, c in enumerate(chunks):
            group.attrs[f"{name}{i}"] = c
    else:
        group.attrs[name] = data


def write_legacy_h5(path, tensors, keras_version="2.21.0", chunk_limit=None):
    """tensors: {'layer/weight': array} (validated ResNet). ``chunk_limit`` is for tests."""
    depths, _ = k2s.validate(tensors, os.path.basename(path))
    head = k2s.HEAD_NAME in {k.split("/")[0] for k in tensors}
    order = k2s.resnet_layer_order(depths, head=head, input_name="input_1")
    limit = chunk_limit or HDF5_OBJECT_HEADER_LIMIT
    with h5py.File(path, "w") as f:
        save_str_list_attr(f, "layer_names", [n for n, _ in order], limit)
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = keras_version.encode()
        for layer, cls in order:
            g = f.create_group(layer)
            wn = list(k2s.weight_names_of(layer)) if cls in ("Conv2D", "BatchNormalization", "Dense") else []
            save_str_list_attr(g, "weight_names", [f"{layer}/{w}:0" for w in wn], limit)
            for w in wn:
                g.create_dataset(f"{layer}/{w}:0", data=np.asarray(tensors[f"{layer}/{w}"], dtype=np.float32))
    return depths, head


def infer_widths(tensors, depths):
    stem = tensors["conv1_conv/kernel"].shape[3]
    widths = [tensors[f"conv{s + 2}_block1_1_conv/kernel"].shape[3] for s in range(len(depths))]
    return stem, tuple(widths)


def verify(h5_path, tensors):
    """Load h5_path into a tf_keras ResNet both ways; compare every weight. Returns a report."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tf_keras
    import keras_resnet as kr

    depths, _ = k2s.validate(tensors, os.path.basename(h5_path))
    head = k2s.HEAD_NAME in {k.split("/")[0] for k in tensors}
    classes = tensors[f"{k2s.HEAD_NAME}/kernel"].shape[1] if head else None
    stem, widths = infer_widths(tensors, depths)

    def build():
        if tuple(depths) == (3, 4, 6, 3) and stem == 64 and widths == (64, 128, 256, 512) and head:
            return kr.applications_resnet50_with_head(tf_keras, (32, 32, 3), classes)
        if tuple(depths) == (3, 4, 6, 3) and stem == 64 and widths == (64, 128, 256, 512):
            return tf_keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
        return kr.build_resnet(tf_keras, stem, widths, depths, (32, 32, 3), classes)

    report = []
    for by_name in (False, True):
        model = build()
        model.load_weights(h5_path, by_name=by_name)
        nw = kr.named_weights(model)
        if set(nw) != set(tensors):
            raise SystemExit(f"verify: model weights {sorted(set(nw) ^ set(tensors))[:5]} differ from the file's")
        bad = [k for k, v in nw.items() if not np.array_equal(np.asarray(v), np.asarray(tensors[k], np.float32))]
        if bad:
            raise SystemExit(f"verify: load_weights(by_name={by_name}) gave different values for {bad[:5]}")
        report.append(f"load_weights(by_name={by_name}): all {len(nw)} weights identical")
    return report


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="safetensors written by keras_to_safetensors.py")
    ap.add_argument("output", help="legacy Keras h5 weights file to write")
    ap.add_argument("--keras-version", default="2.21.0", help="recorded in the file's keras_version attribute")
    ap.add_argument("--verify", action="store_true", help="load the result into tf_keras and compare")
    args = ap.parse_args(argv)
    tensors, meta = k2s.read_safetensors(args.input)
    tensors = {k: np.asarray(v, dtype=np.float32) for k, v in tensors.items()}
    try:
        depths, head = write_legacy_h5(args.output, tensors, args.keras_version)
    except k2s.ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    eps = meta.get("bn_epsilon")
    print(f"wrote {args.output}: {len(tensors)} weights, depths {','.join(map(str, depths))}, "
          f"head {'predictions' if head else 'none'}")
    if eps and abs(float(eps) - k2s.MODERN_BN_EPSILON) > 1e-12:
        print(f"note: source bn_epsilon is {eps}; build the Keras model with that epsilon, not 1.001e-5")
    if args.verify:
        for line in verify(args.output, tensors):
            print("verify: " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
