#!/usr/bin/env python3
"""Generate tests/fixtures/keras_narrow/: a narrow Keras ResNet and its reference numbers.

    python tools/make_fixture.py [--out tests/fixtures/keras_narrow]

Why a narrow network: the Rust ResNet50 must match Keras layer by layer, and that is
only testable offline with numbers Keras itself produced.  A ResNet with ResNet50's
exact topology and layer names but tiny widths (stem 8, stage widths 4/8/8/16 with
expansion 4, two blocks per stage, 32x32x3 input, batch 3) keeps the fixture to a few
hundred KB while exercising every code path: the 7x7/2 stem, max-pool padding, stride on
the first 1x1 conv and on the projection, identity blocks, and a 1x1 spatial map in
conv5 (where BN's n-1 vs n variance distinction is largest).

The model is built with tf_keras (Keras 2) so that its legacy h5 writer produces the
same layout as the official ImageNet file; the weights go through
tools/keras_to_safetensors.py, i.e. the Rust test loads exactly what the converter makes.
If Keras 3 is importable the same network and weights are also run through it, and its
moving-statistics update is stored as train_stats_k3/ (the two Kerases differ there).

See tests/fixtures/keras_narrow/README.md for every tensor.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN reorders float sums; keep TF's reference kernels

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import keras_resnet as kr  # noqa: E402
import keras_to_safetensors as k2s  # noqa: E402

CONFIG = dict(stem=8, widths=(4, 8, 8, 16), depths=(2, 2, 2, 2), input_shape=(32, 32, 3), classes=10)
BATCH = 3
WEIGHT_SEED = 1234
DATA_SEED = 5678
KINK_MARGIN = 1e-4  # see keras_resnet.clear_relu_kinks
MOMENTUM = 0.99  # Keras BatchNormalization default, used by keras.applications.resnet


def probe_layers(depths):
    names = ["conv1_relu", "pool1_pool"]
    for s, d in enumerate(depths):
        names += [f"conv{s + 2}_block{b}_out" for b in range(1, d + 1)]
    return names + ["avg_pool"]


def rel_diff(a, b):
    """max|a-b| / max|b| -- the metric used throughout (b is the reference)."""
    return float(np.max(np.abs(a - b))) / max(1e-30, float(np.max(np.abs(b))))


def is_conv_bias_grad(key):
    # A conv bias followed by a training-mode BN is cancelled by the batch mean:
    # its gradient is exactly zero in theory and rounding noise in practice.
    return key.endswith("_conv/bias")


def conv_feeding(bn):
    return bn[: -len("_bn")] + "_conv"


def float64_agreement(tf, tf_keras, weights, x, y, layers, infer, train):
    """How far float32 Keras is from exact arithmetic on this fixture, i.e. what
    tolerance a correct float32 implementation needs (it has its own, similar error)."""
    tf_keras.backend.set_floatx("float64")
    try:
        model = kr.build_resnet(tf_keras, **CONFIG)
    finally:
        tf_keras.backend.set_floatx("float32")
    nw = kr.named_weights(model)
    res = {}
    for tag, ref, training in (("infer", infer, False), ("train", train, True)):
        for k, v in weights.items():  # a training-mode call moves the stats: start from the file's
            nw[k].assign(v.astype(np.float64))
        exact = kr.run_reference(tf, tf_keras, model, x.astype(np.float64), y, layers, training)
        outs = [k for k in exact if not k.startswith("grad/") and k in ref]
        grads = [k for k in exact if k.startswith("grad/") and not (training and is_conv_bias_grad(k))]
        res[f"{tag} outputs"] = max(rel_diff(ref[k], exact[k]) for k in outs)
        res[f"{tag} grads"] = max(rel_diff(ref[k], exact[k]) for k in grads)
    return res


def run_keras3(weights, x, y, layers, log):
    """Same network in Keras 3: check it agrees with tf_keras, return its moving stats."""
    try:
        import keras as k3
    except Exception as e:  # pragma: no cover
        log(f"Keras 3 not importable ({e}); train_stats_k3 skipped")
        return None
    if not k3.__version__.startswith("3"):
        log(f"'keras' is {k3.__version__}, not Keras 3; train_stats_k3 skipped")
        return None
    import tensorflow as tf
    model = kr.build_resnet(k3, **CONFIG)
    kr.assign_weights(model, weights)
    bns = kr.bn_layer_names(model)
    before = kr.moving_stats(model)
    infer = kr.run_reference(tf, k3, model, x, y, layers, training=False)
    train = kr.run_reference(tf, k3, model, x, y, layers, training=True,
                             extra_layers=[conv_feeding(b) for b in bns])
    after = kr.moving_stats(model)
    rule = kr.variance_rule(before, after, {b: train[conv_feeding(b)] for b in bns}, MOMENTUM)
    return k3.__version__, infer, train, after, rule


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "keras_narrow"))
    ap.add_argument("--no-keras3", action="store_true", help="skip the Keras 3 comparison")
    args = ap.parse_args(argv)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731

    import tensorflow as tf
    import tf_keras

    tf.random.set_seed(0)
    model = kr.build_resnet(tf_keras, **CONFIG)
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

    # Weights go through the real converter from a real legacy h5 file.
    with tempfile.TemporaryDirectory() as tmp:
        h5 = os.path.join(tmp, "keras_narrow.h5")
        model.save_weights(h5)
        wpath = os.path.join(out_dir, "weights.safetensors")
        k2s.convert(h5, wpath, "f32")
    converted, wmeta = k2s.read_safetensors(wpath)
    for k, v in weights.items():
        if not np.array_equal(converted[k], v):
            raise SystemExit(f"converter changed {k}")
    log(f"wrote {wpath} ({len(converted)} tensors)")

    layers = probe_layers(CONFIG["depths"])
    bns = kr.bn_layer_names(model)

    ref = {"x": x, "y": y}
    infer = kr.run_reference(tf, tf_keras, model, x, y, layers, training=False)
    # The softmax we report must be the model's own; logits are recomputed from features.
    sm = np.exp(infer["logits"] - infer["logits"].max(1, keepdims=True))
    assert np.allclose(sm / sm.sum(1, keepdims=True), infer["probs"], atol=1e-6)
    before = kr.moving_stats(model)
    train = kr.run_reference(tf, tf_keras, model, x, y, layers, training=True,
                             extra_layers=[conv_feeding(b) for b in bns] + bns)
    after = kr.moving_stats(model)
    rule = kr.variance_rule(before, after, {b: train[conv_feeding(b)] for b in bns}, MOMENTUM)
    log(f"tf_keras moving-stat update vs batch stats (max rel err): {rule}")
    norm_err = kr.train_norm_error(train, weights, bns, kr.BN_EPSILON)
    log(f"tf_keras training-mode BN output vs float64 recomputation (max abs err): {norm_err}")
    if norm_err["biased"] > 1e-4:
        raise SystemExit("training-mode BN output does not match normalisation by the biased variance")
    for k, v in before.items():
        if np.array_equal(v, after[k]):
            raise SystemExit(f"training-mode forward did not update {k}")

    for prefix, res in (("infer", infer), ("train", train)):
        for n in layers:
            ref[f"{prefix}/{n}"] = res[n]
        ref[f"{prefix}/logits"] = res["logits"]
        ref[f"{prefix}/probs"] = res["probs"]
        ref[f"{prefix}/loss"] = res["loss"]
        for k, v in res.items():
            if k.startswith("grad/"):
                ref[f"grad_{prefix}/{k[len('grad/'):]}"] = v
    for k, v in after.items():
        ref[f"train_stats/{k}"] = v

    k2_rule = min(("biased", "unbiased"), key=lambda r: rule[r])
    meta = {
        "generator": "tools/make_fixture.py",
        "keras": f"tf_keras {tf_keras.__version__} (Keras 2 API), TensorFlow {tf.__version__}",
        "config": (f"stem={CONFIG['stem']} widths={list(CONFIG['widths'])} expansion=4 "
                   f"depths={list(CONFIG['depths'])} input={list(CONFIG['input_shape'])} batch={BATCH} "
                   f"classes={CONFIG['classes']}"),
        "seeds": f"weights={WEIGHT_SEED} data={DATA_SEED} (numpy default_rng)",
        "relu_margin": (f"every ReLU input (inference and training mode) is at least {margin_after:.1e} x its "
                        f"layer's max|input| away from 0 ({nudged} BN betas nudged by <= {shift:.1e} x layer "
                        f"scale), so inference-mode float32 noise (~1e-6) cannot flip a ReLU and change gradients wholesale"),
        "bn_epsilon": repr(kr.BN_EPSILON),
        "bn_momentum": repr(MOMENTUM),
        "layout": "activations NHWC; x [N,H,W,C]; y holds integer class ids stored as F32",
        "loss": "mean sparse categorical cross-entropy computed from logits (no probability clipping)",
        "logits": "features @ predictions/kernel + predictions/bias (pre-softmax)",
        "train_stats": (f"moving stats after ONE training-mode forward from the values in weights.safetensors; "
                        f"new = {MOMENTUM}*old + {1 - MOMENTUM:.2f}*batch; tf_keras folds in the "
                        f"{k2_rule.upper()} batch variance (measured: biased err {rule['biased']:.2e}, "
                        f"unbiased err {rule['unbiased']:.2e}) while it normalises with the BIASED variance "
                        f"(max abs err {norm_err['biased']:.1e} vs {norm_err['unbiased']:.1e} for unbiased)"),
    }

    f64 = float64_agreement(tf, tf_keras, weights, x, y, layers, infer, train)
    log(f"this fixture (float32) vs the same network in float64, max rel diff: {f64}")
    meta["float64_agreement"] = ("max rel diff of these float32 references vs a float64 run of the same network: "
                                 + ", ".join(f"{k} {v:.1e}" for k, v in f64.items())
                                 + " (train grads exclude conv biases). Training mode is ill-conditioned here: "
                                 "conv5's BN sees 3 samples per channel and amplifies rounding ~5x per layer")

    if not args.no_keras3:
        k3res = run_keras3(weights, x, y, layers, log)
        if k3res:
            k3ver, k3infer, k3train, k3after, k3rule = k3res
            log(f"Keras {k3ver} moving-stat update vs batch stats (max rel err): {k3rule}")
            agree = {}
            for tag, a, b in (("infer", infer, k3infer), ("train", train, k3train)):
                for kind in ("outputs", "grads"):
                    keys = [k for k in a if k in b and k.startswith("grad/") == (kind == "grads")
                            and not (tag == "train" and is_conv_bias_grad(k))]
                    agree[f"{tag} {kind}"] = max(rel_diff(b[k], a[k]) for k in keys)
            log(f"tf_keras vs Keras 3 outputs+grads, max rel diff: {agree}")
            for k, v in k3after.items():
                ref[f"train_stats_k3/{k}"] = v
            k3_rule = min(("biased", "unbiased"), key=lambda r: k3rule[r])
            meta["train_stats_k3"] = (f"same, run through Keras {k3ver}: it folds in the {k3_rule.upper()} batch "
                                      f"variance (biased err {k3rule['biased']:.2e}, unbiased err "
                                      f"{k3rule['unbiased']:.2e})")
            meta["keras3_agreement"] = ("max rel diff of Keras 3 vs this fixture: " + ", ".join(
                f"{k} {v:.1e}" for k, v in agree.items()) + " (train grads exclude conv biases, which are "
                "mathematically zero before a training-mode BN; the training-mode gap is the conditioning "
                "described in float64_agreement, not an error of either Keras)")

    ref = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in ref.items()}
    rpath = os.path.join(out_dir, "reference.safetensors")
    k2s.write_safetensors(rpath, ref, meta)
    log(f"wrote {rpath} ({len(ref)} tensors, {os.path.getsize(rpath)} bytes); "
        f"weights {os.path.getsize(wpath)} bytes")
    for k, v in meta.items():
        log(f"  {k}: {v}")


if __name__ == "__main__":
    main()
