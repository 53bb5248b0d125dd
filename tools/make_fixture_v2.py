#!/usr/bin/env python3
"""Generate tests/fixtures/keras_narrow_v2/: a narrow Keras ResNet V2 and its reference numbers.

    python tools/make_fixture_v2.py [--out tests/fixtures/keras_narrow_v2]

The V2 counterpart of tools/make_fixture.py (read that first; the method is the same).
The network has exactly keras.applications.ResNet50V2's topology and layer names
(tools/keras_resnet.py:build_resnet_v2, checked here against the real ResNet50V2) at
tiny widths: stem 8, stage widths 4/8/8/16 with expansion 4, two blocks per stage (a
V2 stage needs two: Keras builds its first and last block separately), 32x32x3 input,
batch 3. That exercises every V2 path: the stem without BN max-pooling signed values
over real zero padding, pre-activation BN + ReLU, the projection shortcut on the
pre-activated input (block1), the 1x1 max-pool shortcut of a striding last block
(block2 of conv2..conv4), the plain identity (conv5_block2, stride 1), the stride on
the 3x3 after an explicit pad, bias-free convs, post_bn + post_relu, and 1x1 maps in
conv4 and conv5.

The weights are written straight to safetensors under their Keras names (the h5
converter, tools/keras_to_safetensors.py, checks the V1 structure and does not read
V2 files yet).

See tests/fixtures/keras_narrow_v2/README.md for every tensor.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN reorders float sums; keep TF's reference kernels

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import keras_resnet as kr  # noqa: E402
import keras_to_safetensors as k2s  # noqa: E402
from make_fixture import rel_diff  # noqa: E402

CONFIG = dict(stem=8, widths=(4, 8, 8, 16), depths=(2, 2, 2, 2), input_shape=(32, 32, 3), classes=10)
BATCH = 3
WEIGHT_SEED = 4321
DATA_SEED = 8765
KINK_MARGIN = 1e-4  # see keras_resnet.clear_relu_kinks
MOMENTUM = 0.99


def probe_layers(depths):
    names = ["conv1_conv", "pool1_pool"]
    for s, d in enumerate(depths):
        names += [f"conv{s + 2}_block{b}_out" for b in range(1, d + 1)]
    return names + ["post_relu", "avg_pool"]


def bn_feeder(model, bn):
    """The layer whose output batchnorm `bn` normalizes (a conv, a block's add, pool1)."""
    return model.get_layer(bn).input._keras_history[0].name


def bias_cancelled(key):
    """In training mode every conv bias but conv1's has a zero true gradient in V2:
    a per-channel constant added by `_0_conv` or `_3_conv` travels along the identity
    shortcuts into batchnorms only (the next blocks' preact_bn, or post_bn), each of
    which subtracts it back out with its batch mean. Both engines hold rounding noise
    there (conv1's bias survives: pool1_pad's zeros do not shift with it)."""
    return key.endswith("_conv/bias") and not key.endswith("conv1_conv/bias")


def structure(model):
    return [(l.name, type(l).__name__, tuple(l.output.shape[1:])) for l in model.layers
            if not l.name.startswith("max_pooling2d")], [w.name for w in model.weights]


def check_builder_is_keras(tf_keras, log):
    """build_resnet_v2 at ResNet50V2's sizes == keras.applications.ResNet50V2 (no top)."""
    tf_keras.backend.clear_session()
    ours = kr.build_resnet_v2(tf_keras, input_shape=(32, 32, 3), classes=None)
    tf_keras.backend.clear_session()
    keras_own = tf_keras.applications.ResNet50V2(weights=None, include_top=False, input_shape=(32, 32, 3))
    a, b = structure(ours), structure(keras_own)
    if a[0][1:] != b[0][1:] or sorted(a[1]) != sorted(b[1]):
        raise SystemExit("tools/keras_resnet.py:build_resnet_v2 differs from keras.applications.ResNet50V2")
    log(f"build_resnet_v2 == keras.applications.ResNet50V2: {len(a[0]) - 1} layers, {len(a[1])} weights")


def run_both_modes(tf, keras, model, x, y, layers, bns, weights):
    """Inference and training-mode references from the same starting weights, and
    the moving statistics after the training-mode forward."""
    kr.assign_weights(model, weights)
    infer = kr.run_reference(tf, keras, model, x, y, layers, training=False)
    before = kr.moving_stats(model)
    feeders = {b: bn_feeder(model, b) for b in bns}
    train = kr.run_reference(tf, keras, model, x, y, layers, training=True,
                             extra_layers=list(feeders.values()))
    after = kr.moving_stats(model)
    rule = kr.variance_rule(before, after, {b: train[f] for b, f in feeders.items()}, MOMENTUM)
    return infer, train, after, rule


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "keras_narrow_v2"))
    args = ap.parse_args(argv)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731

    import tensorflow as tf
    import tf_keras

    check_builder_is_keras(tf_keras, log)
    tf.random.set_seed(0)
    tf_keras.backend.clear_session()
    model = kr.build_resnet_v2(tf_keras, **CONFIG)
    kr.assign_weights(model, kr.seeded_weights(model, WEIGHT_SEED))
    rng = np.random.default_rng(DATA_SEED)
    x = rng.uniform(0.0, 1.0, (BATCH,) + CONFIG["input_shape"]).astype(np.float32)
    y = rng.integers(0, CONFIG["classes"], BATCH).astype(np.float32)
    margin_before = kr.relu_margin(tf_keras, model, x)
    nudged, shift, _ = kr.clear_relu_kinks(tf_keras, model, x, KINK_MARGIN)
    margin_after = kr.relu_margin(tf_keras, model, x)
    log(f"ReLU kink margin: {margin_before:.1e} before, {margin_after:.1e} after nudging {nudged} BN betas "
        f"(largest shift {shift:.1e} of the layer scale)")
    weights = {k: np.asarray(v).copy() for k, v in kr.named_weights(model).items()}
    wpath = os.path.join(out_dir, "weights.safetensors")
    k2s.write_safetensors(wpath, weights, {
        "producer": "tools/make_fixture_v2.py", "bn_epsilon": repr(kr.BN_EPSILON),
        "keras_version": tf_keras.__version__, "layout": "conv kernels HWIO, dense [in, out]"})
    log(f"wrote {wpath} ({len(weights)} tensors)")

    layers = probe_layers(CONFIG["depths"])
    bns = kr.bn_layer_names(model)
    infer, train, after, rule = run_both_modes(tf, tf_keras, model, x, y, layers, bns, weights)
    log(f"tf_keras moving-stat update vs batch stats (max rel err): {rule}")

    # float64: how far float32 Keras is from exact arithmetic here.
    tf_keras.backend.set_floatx("float64")
    try:
        m64 = kr.build_resnet_v2(tf_keras, **CONFIG)
    finally:
        tf_keras.backend.set_floatx("float32")
    f64 = {}
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    for tag, ref, training in (("infer", infer, False), ("train", train, True)):
        kr.assign_weights(m64, w64)
        exact = kr.run_reference(tf, tf_keras, m64, x.astype(np.float64), y, layers, training)
        outs = [k for k in exact if not k.startswith("grad/") and k in ref]
        grads = [k for k in exact if k.startswith("grad/") and not (training and bias_cancelled(k))]
        f64[f"{tag} outputs"] = max(rel_diff(ref[k], exact[k]) for k in outs)
        f64[f"{tag} grads"] = max(rel_diff(ref[k], exact[k]) for k in grads)
        worst = max(grads, key=lambda k: rel_diff(ref[k], exact[k]))
        f64[f"{tag} worst grad"] = worst
    log(f"this fixture (float32) vs the same network in float64: {f64}")

    ref = {"x": x, "y": y}
    for prefix, res in (("infer", infer), ("train", train)):
        for n in layers:
            ref[f"{prefix}/{n}"] = res[n]
        for k in ("logits", "probs", "loss"):
            ref[f"{prefix}/{k}"] = res[k]
        for k, v in res.items():
            if k.startswith("grad/"):
                ref[f"grad_{prefix}/{k[len('grad/'):]}"] = v
    for k, v in after.items():
        ref[f"train_stats/{k}"] = v

    meta = {
        "generator": "tools/make_fixture_v2.py",
        "keras": f"tf_keras {tf_keras.__version__} (Keras 2 API), TensorFlow {tf.__version__}",
        "config": (f"V2 (pre-activation) stem={CONFIG['stem']} widths={list(CONFIG['widths'])} expansion=4 "
                   f"depths={list(CONFIG['depths'])} input={list(CONFIG['input_shape'])} batch={BATCH} "
                   f"classes={CONFIG['classes']}"),
        "seeds": f"weights={WEIGHT_SEED} data={DATA_SEED} (numpy default_rng)",
        "relu_margin": f"every ReLU input is at least {margin_after:.1e} x its layer's max|input| from 0 "
                       f"({nudged} BN betas nudged by <= {shift:.1e} x layer scale)",
        "bn_epsilon": repr(kr.BN_EPSILON),
        "bn_momentum": repr(MOMENTUM),
        "train_stats": f"moving stats after ONE training-mode forward (tf_keras: unbiased batch variance; "
                       f"measured {rule})",
        "float64_agreement": ", ".join(f"{k} {v:.1e}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in f64.items()),
    }

    try:
        import keras as k3
        if not k3.__version__.startswith("3"):
            raise ImportError(k3.__version__)
    except Exception as e:  # pragma: no cover
        log(f"Keras 3 not importable ({e}); train_stats_k3 skipped")
    else:
        m3 = kr.build_resnet_v2(k3, **CONFIG)
        i3, t3, after3, rule3 = run_both_modes(tf, k3, m3, x, y, layers, bns, weights)
        agree = {tag: max(rel_diff(b[k], a[k]) for k in a if k in b and not k.startswith("grad/"))
                 for tag, a, b in (("infer", infer, i3), ("train", train, t3))}
        log(f"Keras {k3.__version__}: moving-stat rule {rule3}, outputs vs tf_keras {agree}")
        for k, v in after3.items():
            ref[f"train_stats_k3/{k}"] = v
        meta["train_stats_k3"] = f"same through Keras {k3.__version__} (biased batch variance; measured {rule3})"

    ref = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in ref.items()}
    rpath = os.path.join(out_dir, "reference.safetensors")
    k2s.write_safetensors(rpath, ref, meta)
    log(f"wrote {rpath} ({len(ref)} tensors, {os.path.getsize(rpath)} bytes); "
        f"weights {os.path.getsize(wpath)} bytes")
    for k, v in meta.items():
        log(f"  {k}: {v}")


if __name__ == "__main__":
    main()
