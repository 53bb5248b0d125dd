#!/usr/bin/env python3
"""Full-size parity check: keras.applications.ResNet50 vs the Rust engine's probe CLI.

    python tools/keras_parity.py                 # Keras side, then the Rust probes
    python tools/keras_parity.py --skip-rust     # Keras side only (writes the inputs + reference)
    python tools/keras_parity.py --keras 3       # source model and weights file from Keras 3
    python tools/keras_parity.py --rust-reads h5 # the Rust probes read Keras's own file (no converter)

The narrow fixture (tools/make_fixture.py) pins the arithmetic; this script checks the
real thing end to end: the real ResNet50 (include_top=False + GAP ``avg_pool`` + Dense(10)
``predictions``) with seeded weights whose BN statistics and biases are far from their
defaults (see keras_resnet.calibrate_bn_stats for why the moving stats are scaled to the
data, and keras_resnet.clear_relu_kinks for why BN betas are nudged), saved by Keras, converted by tools/keras_to_safetensors.py, and run by

    cargo run -p train --release -- forward --weights W --input X --output OUT --layers L,... [--training]
    cargo run -p train --release -- grad --weights W --input X --labels Y --output G [--frozen-bn]

``forward`` must write each requested layer output under its Keras layer name plus
``features``, ``logits`` and ``probs``; ``grad`` must write ``loss`` and the gradient of
every trainable parameter under its weight name (``conv1_conv/kernel``...).  Inputs:
``x`` NHWC float32 in X; ``y`` float32 holding integer class ids in Y.

Metric: max|rust - keras| / max|keras| per tensor.  Pass: inference outputs within 1e-5,
frozen-BN loss and gradients within 1e-4.  Training-mode results are reported against a
loose 1e-3 and never fail the run: BN over conv5's 1x1 maps sees only ``batch`` samples
per channel and amplifies rounding, so float32 Keras itself is ~1e-2 (outputs) and ~1e-1
(gradients) from a float64 run in training mode (the script prints this noise floor); and conv biases in front of a training-mode
BN have a gradient that is zero up to rounding, so they are reported relative to the
gradient scale of their layer's kernel.

Exit status: 0 all strict checks passed, 1 a check failed, 2 the probe CLI failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import keras_resnet as kr  # noqa: E402
import keras_to_safetensors as k2s  # noqa: E402

LAYERS = ["conv1_relu", "pool1_pool", "conv2_block1_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]
HEAD_OUTPUTS = ["features", "logits", "probs"]
TOL_INFER, TOL_FROZEN_GRAD, TOL_TRAIN = 1e-5, 1e-4, 1e-3


def rel_diff(got, ref):
    return float(np.max(np.abs(got - ref))) / max(1e-30, float(np.max(np.abs(ref))))


class ProbeError(Exception):
    pass


def run_probe(cmd_prefix, args, log):
    cmd = cmd_prefix + args
    log("$ " + " ".join(shlex.quote(c) for c in cmd))
    t0 = time.time()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise ProbeError(f"cannot start {cmd[0]!r}: {e}") from e
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-25:])
        raise ProbeError(f"probe command failed with exit status {r.returncode}:\n  {' '.join(cmd)}\n{tail}")
    out = args[args.index("--output") + 1]
    if not os.path.exists(out):
        raise ProbeError(f"probe command exited 0 but wrote no {out}:\n  {' '.join(cmd)}")
    log(f"  ok ({time.time() - t0:.1f}s)")
    return k2s.read_safetensors(out)[0]


class Report:
    def __init__(self):
        self.rows, self.failed = [], False

    def add(self, group, name, got, ref, tol, strict, scale=None):
        if got is None:
            self.rows.append((group, name, None, tol, "FAIL" if strict else "MISSING", "missing from probe output"))
            self.failed |= strict
            return
        got = np.asarray(got, np.float64)
        ref = np.asarray(ref, np.float64)
        if got.size != ref.size or (got.ndim > 1 and got.shape != ref.shape):
            self.rows.append((group, name, None, tol, "FAIL" if strict else "SHAPE",
                              f"shape {list(got.shape)} vs keras {list(ref.shape)}"))
            self.failed |= strict
            return
        got, ref = got.reshape(-1), ref.reshape(-1)
        if not np.all(np.isfinite(got)):
            d, note = float("inf"), "non-finite values"
        elif scale is not None:
            d, note = float(np.max(np.abs(got - ref))) / scale, "relative to its kernel-gradient scale"
        else:
            d, note = rel_diff(got, ref), ""
        ok = d <= tol
        self.rows.append((group, name, d, tol, "pass" if ok else ("FAIL" if strict else "loose-miss"), note))
        self.failed |= strict and not ok

    def print(self, log, detail):
        groups = []
        for r in self.rows:
            if r[0] not in groups:
                groups.append(r[0])
        for g in groups:
            rows = [r for r in self.rows if r[0] == g]
            worst = max(rows, key=lambda r: float("inf") if r[2] is None else r[2])
            bad = [r for r in rows if r[4] not in ("pass",)]
            log(f"\n== {g}: {len(rows)} tensors, worst {worst[1]} = "
                f"{'n/a' if worst[2] is None else f'{worst[2]:.3e}'} (tol {worst[3]:.0e}), "
                f"{len(rows) - len(bad)} within tolerance")
            show = rows if (detail or len(rows) <= 12) else sorted(
                rows, key=lambda r: -(float("inf") if r[2] is None else r[2]))[:8]
            for grp, name, d, tol, status, note in show:
                ds = "   n/a   " if d is None else f"{d:.3e}"
                log(f"  {status:10s} {ds}  {name}{'  (' + note + ')' if note else ''}")


def float64_floor(tf, keras, args, weights, x, y, infer, train):
    """How far float32 Keras itself is from exact arithmetic, per probe group."""
    keras.backend.set_floatx("float64")
    try:
        model = kr.applications_resnet50_with_head(keras, (args.size, args.size, 3), 10)
    finally:
        keras.backend.set_floatx("float32")
    nw = kr.named_weights(model)
    out = {}
    for tag, ref, training in (("inference", infer, False), ("training", train, True)):
        for k, v in weights.items():
            nw[k].assign(np.asarray(v, np.float64))
        exact = kr.run_reference(tf, keras, model, x.astype(np.float64), y, LAYERS, training)
        outs = LAYERS + HEAD_OUTPUTS
        grads = [k for k in exact if k.startswith("grad/") and not (training and k.endswith("_conv/bias"))]
        out[f"{tag} outputs"] = max(rel_diff(ref[k], exact[k]) for k in outs)
        out[f"{tag} grads"] = max(rel_diff(ref[k], exact[k]) for k in grads + ["loss"])
    return out


def build_keras_side(args, work, log):
    import tensorflow as tf
    tf.random.set_seed(0)
    if args.keras == "2":
        import tf_keras as keras
    else:
        import keras
    model = kr.applications_resnet50_with_head(keras, (args.size, args.size, 3), 10)
    kr.assign_weights(model, kr.seeded_weights(model, args.seed))
    rng = np.random.default_rng(args.seed + 1)
    # iid noise images all look alike to a deep net; a per-image colour gain and offset
    # keeps the samples (and so their outputs) distinguishable, so batch mix-ups show.
    gain = rng.uniform(0.2, 1.0, (args.batch, 1, 1, 3))
    offset = rng.uniform(0.0, 0.6, (args.batch, 1, 1, 3))
    x = (rng.uniform(0.0, 1.0, (args.batch, args.size, args.size, 3)) * gain + offset).astype(np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.float32)
    if args.bn_stats == "calibrated":
        kr.calibrate_bn_stats(keras, model, x, args.seed + 2)
    if args.kink_margin > 0:
        n, shift, _ = kr.clear_relu_kinks(keras, model, x, args.kink_margin)
        log(f"ReLU kink margin {args.kink_margin:g}: nudged {n} BN betas (largest shift {shift:.1e} of the "
            f"layer scale); smallest |ReLU input| now {kr.relu_margin(keras, model, x):.1e} of its layer's max")
    weights = {k: np.asarray(v) for k, v in kr.named_weights(model).items()}

    if args.keras == "2":
        src = os.path.join(work, "resnet50_keras2.h5")
    else:
        src = os.path.join(work, "resnet50_keras3.weights.h5")
    model.save_weights(src)
    wpath = os.path.join(work, "weights.safetensors")
    _, meta = k2s.convert(src, wpath, "f32")
    conv, _ = k2s.read_safetensors(wpath)
    diff = [k for k in weights if not np.array_equal(conv[k], weights[k])]
    if diff or set(conv) != set(weights):
        raise SystemExit(f"converter output differs from the Keras model's weights: {diff[:5]}")
    log(f"keras {keras.__version__}: saved {os.path.basename(src)}, converted to {wpath} "
        f"({len(conv)} tensors, {meta['source_format']})")

    k2s.write_safetensors(os.path.join(work, "input.safetensors"), {"x": x})
    k2s.write_safetensors(os.path.join(work, "labels.safetensors"), {"y": y})

    infer = kr.run_reference(tf, keras, model, x, y, LAYERS, training=False)
    train = kr.run_reference(tf, keras, model, x, y, LAYERS, training=True)
    if args.keras == "2":
        floor = float64_floor(tf, keras, args, weights, x, y, infer, train)
        log("Keras float32 vs the same model in float64 (the noise floor any float32 engine shares), "
            "max rel diff: " + ", ".join(f"{k} {v:.1e}" for k, v in floor.items()))
    ref = {}
    for prefix, res in (("infer", infer), ("train", train)):
        for k, v in res.items():
            ref[f"{prefix}/{k}"] = np.asarray(v, np.float32)
    k2s.write_safetensors(os.path.join(work, "keras_reference.safetensors"), ref,
                          {"keras": keras.__version__, "seed": str(args.seed)})
    log(f"reference: loss infer {float(infer['loss'][0]):.6f}, train {float(train['loss'][0]):.6f}; "
        f"written to {os.path.join(work, 'keras_reference.safetensors')}")
    return infer, train, [k[len("grad/"):] for k in infer if k.startswith("grad/")], src


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keras", choices=("2", "3"), default="2",
                    help="2: tf_keras + legacy h5 (like the official file, default); 3: Keras 3 .weights.h5")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=32, help="input height = width")
    ap.add_argument("--bn-stats", choices=("calibrated", "random"), default="calibrated",
                    help="BN moving stats: random but scaled to each BN input's size (default; keeps "
                         "activations O(1)) or the raw U/N draws (inference activations reach ~1e3)")
    ap.add_argument("--kink-margin", type=float, default=1e-4,
                    help="keep every ReLU input this far (relative) from 0 by nudging BN betas, so float32 "
                         "noise cannot flip a ReLU between Keras and Rust (0 disables)")
    ap.add_argument("--workdir", help="keep inputs, weights, reference and probe outputs here")
    ap.add_argument("--skip-rust", action="store_true", help="only produce the Keras side")
    ap.add_argument("--probe-cmd", default="cargo run -p train --release --",
                    help="command prefix of the Rust probe CLI (e.g. target/release/train)")
    ap.add_argument("--detail", action="store_true", help="list every tensor, not only the worst")
    ap.add_argument("--rust-reads", choices=("safetensors", "h5"), default="safetensors",
                    help="what the Rust probes load: the converter's safetensors (default) or the file Keras "
                         "wrote, read by the Rust h5 reader (crates/nn/src/keras_h5)")
    args = ap.parse_args(argv)
    log = lambda m: print(m, flush=True)  # noqa: E731

    tmp = None
    if args.workdir:
        work = os.path.abspath(args.workdir)
        os.makedirs(work, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="keras_parity_")
        work = tmp.name
    infer, train, params, keras_file = build_keras_side(args, work, log)
    if args.skip_rust:
        log(f"--skip-rust: Keras side done in {work}")
        return 0

    W, X, Y = (os.path.join(work, f) for f in ("weights.safetensors", "input.safetensors", "labels.safetensors"))
    if args.rust_reads == "h5":
        W = keras_file
    log(f"the Rust probes load {W}")
    prefix = shlex.split(args.probe_cmd)
    layers = ",".join(LAYERS)
    try:
        fwd = run_probe(prefix, ["forward", "--weights", W, "--input", X, "--output",
                                 os.path.join(work, "rust_forward.safetensors"), "--layers", layers], log)
        fwd_t = run_probe(prefix, ["forward", "--weights", W, "--input", X, "--output",
                                   os.path.join(work, "rust_forward_train.safetensors"), "--layers", layers,
                                   "--training"], log)
        g_frozen = run_probe(prefix, ["grad", "--weights", W, "--input", X, "--labels", Y, "--output",
                                      os.path.join(work, "rust_grad_frozen.safetensors"), "--frozen-bn"], log)
        g_train = run_probe(prefix, ["grad", "--weights", W, "--input", X, "--labels", Y, "--output",
                                     os.path.join(work, "rust_grad_train.safetensors")], log)
    except ProbeError as e:
        print(f"\nerror: the Rust probe CLI failed, so parity could not be checked.\n{e}", file=sys.stderr)
        if tmp is None:
            print(f"(Keras-side files are in {work})", file=sys.stderr)
        return 2

    rep = Report()
    for name in LAYERS + HEAD_OUTPUTS:
        rep.add("inference forward", name, fwd.get(name), infer[name], TOL_INFER, True)
    rep.add("frozen-BN gradients", "loss", g_frozen.get("loss"), infer["loss"], TOL_FROZEN_GRAD, True)
    for p in params:
        rep.add("frozen-BN gradients", p, g_frozen.get(p), infer["grad/" + p], TOL_FROZEN_GRAD, True)
    for name in LAYERS + HEAD_OUTPUTS:
        rep.add("training-mode forward (loose)", name, fwd_t.get(name), train[name], TOL_TRAIN, False)
    rep.add("training-mode gradients (loose)", "loss", g_train.get("loss"), train["loss"], TOL_TRAIN, False)
    for p in params:
        scale = None
        if p.endswith("_conv/bias"):
            scale = max(1e-30, float(np.max(np.abs(train["grad/" + p[: -len("bias")] + "kernel"]))))
        rep.add("training-mode gradients (loose)", p, g_train.get(p), train["grad/" + p], TOL_TRAIN, False, scale)
    rep.print(log, args.detail)
    log("\nPARITY " + ("FAILED" if rep.failed else "PASSED")
        + f" (inference tol {TOL_INFER:g}, frozen-BN gradient tol {TOL_FROZEN_GRAD:g}; training mode informational)")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
