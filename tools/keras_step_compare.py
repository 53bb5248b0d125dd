#!/usr/bin/env python3
"""Step-by-step training-loss comparison: Keras 3 vs this engine, same start, same batches.

Issue 13 part 4(b). Both engines start from the same initial weights (made and saved
by Keras), train with the tutorial's recipe (Adam 1e-4, batch 64, x / 255, no
augmentation) on the same images in the same order, and log each step's own loss; the
compare step lines the two logs up.

How the two see the same batches: ``prepare`` takes the images from the engine's
decoded cache (the exact pixels the engine trains on), puts the chosen ones in a fixed
order, and writes them as a CIFAR-10 *binary-release* folder (``data_batch_{1..5}.bin``,
``test_batch.bin``, ``batches.meta.txt``), which the engine reads with ``--data``. Both
then train on that folder in file order: the engine with ``--shuffle none``, Keras with
``shuffle=False``. The folder holds exactly STEPS x BATCH training images, so one epoch
is the STEPS steps of the comparison (no epoch boundary, nothing to reshuffle).

    PY=/work/venv/bin/python   # tensorflow-cpu==2.21.0 (Keras 3.15), h5py
    W=/tmp/kcmp                # work folder

    # 1. data folder + Keras's initial weights (W/data/, W/init.weights.h5)
    nice $PY tools/keras_step_compare.py prepare --out $W --steps 300
    # 2. the engine (every run writes W/engine/steps.csv, train::fit::StepLog)
    nice cargo run -p train --release -- --recipe keras-tutorial --weights $W/init.weights.h5 \\
        --data $W/data --shuffle none --epochs 1 --out $W/engine --overwrite
    # 3. Keras on the same folder from the same weights (writes W/keras_steps.csv)
    nice $PY tools/keras_step_compare.py keras --out $W
    # 3b. the noise floor: Keras again with other kernels (oneDNN), same everything else
    TF_ENABLE_ONEDNN_OPTS=1 nice $PY tools/keras_step_compare.py keras --out $W --csv keras_steps_onednn.csv
    # 4. side by side (with --floor: the Keras-vs-Keras difference in extra columns)
    $PY tools/keras_step_compare.py compare $W/engine/steps.csv $W/keras_steps.csv \
        --floor $W/keras_steps_onednn.csv

Why the noise floor matters: Adam's first updates move almost every weight by about
+-lr whatever its gradient's size, so a weight whose gradient is mostly rounding noise
(training-mode BN makes many such) gets a sign chosen by the rounding; from the second
step on, two float32 implementations follow measurably different trajectories. Measured
on one batch of 64 (the smoke test below): step 1 agrees to 6e-6 (engine vs Keras) and
7e-7 (Keras oneDNN off vs on); step 2 already differs by 1.5% between the two Keras runs,
as much as between the engine and Keras. So per-step agreement to ~1e-3 is a test of
step 1 only; later steps are judged by the window means against the floor.

Smoke test without the engine's --shuffle none / StepLog wiring: one batch per epoch
makes the order irrelevant and the engine's metrics.csv a per-step log (compare reads
a metrics.csv as steps = epochs):

    nice $PY tools/keras_step_compare.py prepare --out $W --steps 1 --test-images 64
    target/release/train --recipe keras-tutorial --weights $W/init.weights.h5 --data $W/data \
        --epochs 5 --out $W/engine --overwrite --quiet
    nice $PY tools/keras_step_compare.py keras --out $W --epochs 5
    $PY tools/keras_step_compare.py compare $W/engine/metrics.csv $W/keras_steps.csv --window 2

Options: ``prepare --order shuffled`` (default: a seeded permutation of the 50,000
training images, so batches mix the classes) or ``--order cache`` (the cache's own
order, which for the JPEG folders is class by class); ``--test-images`` (default 1000)
sets the test set both evaluate after the epoch (Keras's result: keras_steps_eval.json;
the engine's: test_loss in its metrics.csv); ``--seed`` seeds Keras's initializers.
``--cache FILE`` names the decoded cache if more than one is found (default folder:
``$RESNET_RS_CACHE/decoded``, else ``$XDG_CACHE_HOME/resnet-rs/decoded``, else
``~/.cache/resnet-rs/decoded``; any real run of the engine creates it).

Per-step losses in Keras: Keras 3's per-batch logs are running means over the epoch.
The ``keras`` step trains with ``model.fit`` itself (the tutorial's call) and a callback
that, after reading each batch's logs, resets the model's metrics, so the next batch's
logged loss is that batch's own; it also checks that the loss tracker's count is one
batch at every read (it fails loudly if Keras ever aggregates differently). The logged
loss is the one computed by the forward pass before the step's update, as in the
engine's ``steps.csv``.

Both CSVs have the columns ``epoch,step,global_step,loss,correct,lr``. ``compare``
prints the first 10 steps side by side with relative differences, the mean of each
20-step window for both and their difference, and a verdict line: the first step must
agree to 1e-3 (relative), and the window differences must show no bias (mean window
difference within 3 standard errors of 0). Exit status 0 on both, 1 otherwise, 2 on
unusable input. Not in CI (needs TensorFlow and minutes of CPU per 100 steps).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import os
import struct
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

IMAGE_BYTES = 32 * 32 * 3
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
COLUMNS = ["epoch", "step", "global_step", "loss", "correct", "lr"]
WINDOW = 20


# ---------------------------------------------------------------- the engine's cache


def default_cache_dir():
    env = os.environ.get("RESNET_RS_CACHE")
    if env:
        return os.path.join(env, "decoded")
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "resnet-rs", "decoded")
    return os.path.join(os.path.expanduser("~"), ".cache", "resnet-rs", "decoded")


def find_cache(path):
    if path:
        return path
    d = default_cache_dir()
    found = sorted(glob.glob(os.path.join(d, "cifar10-*.bin")))
    # The full dataset's cache is the largest one (a --data folder made by this
    # script gets a small cache of its own).
    full = [f for f in found if os.path.getsize(f) > 50_000 * IMAGE_BYTES]
    if len(full) != 1:
        raise SystemExit(
            f"error: {len(full)} full-size decoded caches in {d} ({found}): "
            "run the engine once (any training) to create it, or name one with --cache")
    return full[0]


def read_cache(path):
    """The engine's decoded cache (format: top of crates/train/src/data/cache.rs)."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(buf):
            raise SystemExit(f"error: {path}: truncated at byte {pos}")
        b = buf[pos:pos + n]
        pos += n
        return b

    def u32():
        return struct.unpack("<I", take(4))[0]

    if take(8) != b"CIFARCCH":
        raise SystemExit(f"error: {path}: not a decoded cache (magic)")
    version = u32()
    if version != 1:
        raise SystemExit(f"error: {path}: cache version {version}, this script reads 1")
    identity = take(u32()).decode()
    classes = [take(u32()).decode() for _ in range(u32())]
    n_train, n_test = struct.unpack("<QQ", take(16))
    out = {"identity": identity, "classes": classes}
    for split, n in (("train", n_train), ("test", n_test)):
        x = np.frombuffer(take(n * IMAGE_BYTES), np.uint8).reshape(n, 32, 32, 3)
        y = np.frombuffer(take(n), np.uint8)
        out[split] = (x, y)
    if pos != len(buf):
        raise SystemExit(f"error: {path}: {len(buf) - pos} bytes after the test labels")
    return out


# ---------------------------------------------------------------- binary-release folder


def write_binary_split(path, x, y):
    """CIFAR-10 binary records: label byte, then R, G, B planes (the engine's binary.rs)."""
    planes = np.ascontiguousarray(x.transpose(0, 3, 1, 2)).reshape(len(x), IMAGE_BYTES)
    rec = np.concatenate([y.reshape(-1, 1).astype(np.uint8), planes], axis=1)
    with open(path, "wb") as f:
        f.write(rec.tobytes())


def read_binary_split(paths):
    xs, ys = [], []
    for p in paths:
        rec = np.fromfile(p, np.uint8).reshape(-1, 1 + IMAGE_BYTES)
        ys.append(rec[:, 0])
        xs.append(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.concatenate(xs), np.concatenate(ys)


def write_data_folder(folder, classes, x, y, tx, ty):
    os.makedirs(folder, exist_ok=True)
    # The engine needs all five training files, each non-empty.
    for name, idx in zip(TRAIN_FILES, np.array_split(np.arange(len(x)), 5)):
        write_binary_split(os.path.join(folder, name), x[idx], y[idx])
    write_binary_split(os.path.join(folder, "test_batch.bin"), tx, ty)
    with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
        f.write("\n".join(classes) + "\n")


# ---------------------------------------------------------------- Keras side


def import_keras(seed):
    import keras  # Keras 3, as in the run that gave 0.457
    import keras_resnet as kr
    keras.utils.set_random_seed(seed)  # initial weights only; fit below never shuffles
    return keras, kr


def cmd_prepare(a):
    if a.steps < 1 or a.batch < 1 or a.test_images < 1:
        raise SystemExit("error: --steps, --batch and --test-images must be positive")
    if a.steps * a.batch < 5:
        raise SystemExit("error: need at least 5 training images (five data_batch files)")
    cache = find_cache(a.cache)
    c = read_cache(cache)
    (x, y), (tx, ty) = c["train"], c["test"]
    n = a.steps * a.batch
    if n > len(x) or a.test_images > len(tx):
        raise SystemExit(f"error: {a.steps} steps of {a.batch} need {n} of the {len(x)} "
                         f"training images, --test-images {a.test_images} of {len(tx)}")
    rng = np.random.default_rng(a.order_seed)
    order = rng.permutation(len(x))[:n] if a.order == "shuffled" else np.arange(n)
    test_order = rng.permutation(len(tx))[:a.test_images]
    folder = os.path.join(a.out, "data")
    write_data_folder(folder, c["classes"], x[order], y[order], tx[test_order], ty[test_order])
    np.save(os.path.join(a.out, "train_indices.npy"), order)
    np.save(os.path.join(a.out, "test_indices.npy"), test_order)

    keras, kr = import_keras(a.seed)
    model = kr.applications_resnet50_with_head(keras, (32, 32, 3), len(c["classes"]))
    wpath = os.path.join(a.out, "init.weights.h5")
    model.save_weights(wpath)
    meta = {"cache": cache, "cache_identity": c["identity"], "steps": a.steps, "batch": a.batch,
            "order": a.order, "order_seed": a.order_seed, "seed": a.seed,
            "test_images": a.test_images, "keras": keras.__version__}
    with open(os.path.join(a.out, "prepare.json"), "w") as f:
        json.dump(meta, f, indent=2)
    counts = np.bincount(y[order], minlength=len(c["classes"]))
    print(f"cache {cache} ({c['identity']})")
    print(f"wrote {folder}: {n} training images ({a.order} order, per class {counts.tolist()}), "
          f"{a.test_images} test images; {wpath} (Keras {keras.__version__}, seed {a.seed})")
    print("engine:\n  nice cargo run -p train --release -- --recipe keras-tutorial "
          f"--weights {wpath} --data {folder} --shuffle none --epochs 1 --batch-size {a.batch} "
          f"--out {os.path.join(a.out, 'engine')} --overwrite")
    print(f"keras:\n  nice {sys.executable} {sys.argv[0]} keras --out {a.out}")


class PerStepLoss:
    """Records each batch's own loss from model.fit's logs (see the module doc)."""

    def __init__(self, keras, batch):
        base = keras.callbacks.Callback

        class Cb(base):
            def __init__(cb):
                super().__init__()
                cb.rows, cb.epoch = [], 0

            def on_epoch_begin(cb, epoch, logs=None):
                cb.epoch = epoch + 1

            def on_train_batch_end(cb, step, logs=None):
                tracker = next(m for m in cb.model.metrics if m.name == "loss")
                count = float(np.asarray(tracker.count))
                if count != batch:
                    raise SystemExit(
                        f"error: Keras's loss tracker covers {count:g} samples at step {step + 1}, "
                        f"not one batch of {batch}: the logged loss would not be the step's own")
                lr = float(np.asarray(cb.model.optimizer.learning_rate))
                cb.rows.append((cb.epoch, step + 1, float(logs["loss"]),
                                int(round(float(logs["accuracy"]) * batch)), lr))
                cb.model.reset_metrics()
                if len(cb.rows) % 10 == 0 or len(cb.rows) == 1:
                    print(f"step {len(cb.rows)}: loss {cb.rows[-1][2]:.5f}", flush=True)

        self.cb = Cb()


def cmd_keras(a):
    with open(os.path.join(a.out, "prepare.json")) as f:
        meta = json.load(f)
    folder = os.path.join(a.out, "data")
    x, y = read_binary_split([os.path.join(folder, n) for n in TRAIN_FILES])
    tx, ty = read_binary_split([os.path.join(folder, "test_batch.bin")])
    batch, steps = meta["batch"], meta["steps"]
    if len(x) != batch * steps:
        raise SystemExit(f"error: {folder} holds {len(x)} training images, not {steps} x {batch}")
    with open(os.path.join(folder, "batches.meta.txt")) as f:
        classes = [line.strip() for line in f if line.strip()]

    keras, kr = import_keras(meta["seed"])
    model = kr.applications_resnet50_with_head(keras, (32, 32, 3), len(classes))
    wpath = os.path.join(a.out, "init.weights.h5")
    model.load_weights(wpath)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    per_step = PerStepLoss(keras, batch)
    xf, txf = x.astype("float32") / 255.0, tx.astype("float32") / 255.0
    # shuffle=False: the folder's order, the engine's --shuffle none, in every epoch.
    model.fit(xf, y.astype("int64"), batch_size=batch, epochs=a.epochs, shuffle=False,
              callbacks=[per_step.cb], verbose=a.verbose)
    rows = per_step.cb.rows
    out = os.path.join(a.out, a.csv)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for i, (epoch, step, loss, correct, lr) in enumerate(rows):
            w.writerow([epoch, step, i + 1, repr(loss), correct, repr(lr)])
    test_loss, test_acc = model.evaluate(txf, ty.astype("int64"), batch_size=256, verbose=0)
    with open(os.path.join(a.out, os.path.splitext(a.csv)[0] + "_eval.json"), "w") as f:
        json.dump({"test_loss": test_loss, "test_acc": test_acc, "test_images": len(tx)}, f)
    print(f"wrote {out} ({len(rows)} steps); after them, test loss {test_loss:.4f} "
          f"accuracy {test_acc:.4f} on {len(tx)} images")


# ---------------------------------------------------------------- compare


def read_steps(path):
    try:
        with open(path, newline="") as f:
            r = csv.DictReader(f)
            names = r.fieldnames or []
            if "global_step" not in names and {"epoch", "train_loss"} <= set(names):
                # The engine's metrics.csv: per-step only when an epoch is one step
                # (a prepared folder of one batch, trained for several epochs).
                print(f"note: {path} is a per-epoch log: its epochs are taken as steps")
                return {int(row["epoch"]): float(row["train_loss"]) for row in r}
            missing = [c for c in ("global_step", "loss") if c not in names]
            if missing:
                raise SystemExit(f"error: {path}: no column {missing[0]!r} (columns {r.fieldnames})")
            steps = {}
            for i, row in enumerate(r, start=2):
                try:
                    steps[int(row["global_step"])] = float(row["loss"])
                except (TypeError, ValueError):
                    raise SystemExit(f"error: {path} line {i}: bad row {row}")
            return steps
    except OSError as e:
        raise SystemExit(f"error: {e}")


def window_means(steps, keys, window):
    return [sum(steps[s] for s in keys[i:i + window]) / len(keys[i:i + window])
            for i in range(0, len(keys), window)]


def bias(diffs):
    """Mean of the full windows' differences, its standard error and t."""
    if len(diffs) < 2:
        return None
    mean = sum(diffs) / len(diffs)
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    se = sd / math.sqrt(len(diffs))
    t = mean / se if se > 0 else (0.0 if mean == 0 else math.inf)
    return mean, se, t


def compare(engine, keras, first_tol=1e-3, window=WINDOW, floor=None):
    """Lines for the report, and whether the verdict passed. `floor`: a second Keras
    run's steps (other kernels, e.g. TF_ENABLE_ONEDNN_OPTS=1), whose difference from
    `keras` is float32 rounding amplified by training: the noise floor."""
    both = set(engine) & set(keras)
    if floor is not None:
        both &= set(floor)
    common = sorted(both)
    if not common:
        return [f"no common global steps (engine {len(engine)} steps, keras {len(keras)})"], False
    lines = []
    if len(engine) != len(keras) or len(common) != len(keras):
        lines.append(f"note: engine has {len(engine)} steps, keras {len(keras)}; comparing the "
                     f"{len(common)} all have")
    lines.append("first steps:")
    head = f"{'step':>6} {'engine':>12} {'keras':>12} {'diff':>11} {'rel diff':>10}"
    if floor is not None:
        head += f" {'keras (2nd)':>12} {'rel 2nd-1st':>11}"
    lines.append(head)
    for s in common[:10]:
        e, k = engine[s], keras[s]
        row = f"{s:6d} {e:12.6f} {k:12.6f} {e - k:+11.3e} {abs(e - k) / max(abs(k), 1e-30):10.2e}"
        if floor is not None:
            row += f" {floor[s]:12.6f} {abs(floor[s] - k) / max(abs(k), 1e-30):11.2e}"
        lines.append(row)
    lines.append(f"\nwindows of {window} steps (mean loss):")
    lines.append(f"{'steps':>11} {'engine':>10} {'keras':>10} {'diff':>10}"
                 + ("" if floor is None else f" {'2nd-1st':>10}"))
    me, mk = window_means(engine, common, window), window_means(keras, common, window)
    mf = window_means(floor, common, window) if floor is not None else None
    full = len(common) // window
    for i in range(len(me)):
        w = common[i * window:(i + 1) * window]
        lines.append(f"{w[0]:5d}-{w[-1]:<5d} {me[i]:10.4f} {mk[i]:10.4f} {me[i] - mk[i]:+10.4f}"
                     + ("" if mf is None else f" {mf[i] - mk[i]:+10.4f}")
                     + ("" if i < full else "  (partial, not in the bias test)"))
    first = common[0]
    rel0 = abs(engine[first] - keras[first]) / max(abs(keras[first]), 1e-30)
    first_ok = rel0 <= first_tol
    verdict = [f"first step rel diff {rel0:.2e} ({'<=' if first_ok else '>'} {first_tol:g})"]
    b = bias([me[i] - mk[i] for i in range(full)])
    bias_ok = True
    if b is None:
        verdict.append(f"fewer than 2 full windows of {window}: no bias test")
    else:
        mean, se, t = b
        bias_ok = abs(t) <= 3
        verdict.append(f"window diff (engine - keras) mean {mean:+.4f} +- {se:.4f} over {full} "
                       f"windows (t = {t:+.2f}): "
                       + ("no detectable bias" if bias_ok else
                          ("engine higher" if mean > 0 else "engine lower")))
        if mf is not None:
            fm, fse, ft = bias([mf[i] - mk[i] for i in range(full)])
            rms = lambda d: math.sqrt(sum(x * x for x in d) / len(d))  # noqa: E731
            verdict.append(f"Keras 2nd - 1st run mean {fm:+.4f} +- {fse:.4f} (t = {ft:+.2f}); "
                           f"rms window diff engine {rms([me[i] - mk[i] for i in range(full)]):.4f}"
                           f" vs Keras-Keras {rms([mf[i] - mk[i] for i in range(full)]):.4f}")
    ok = first_ok and bias_ok
    lines.append("\nVERDICT: " + ("PASS" if ok else "FAIL") + ": " + "; ".join(verdict))
    return lines, ok


def cmd_compare(a):
    engine, keras = read_steps(a.engine_csv), read_steps(a.keras_csv)
    floor = read_steps(a.floor) if a.floor else None
    lines, ok = compare(engine, keras, a.first_tol, a.window, floor)
    print("\n".join(lines))
    sys.exit(0 if ok else 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="See the module docstring for the whole procedure.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare", help="data folder + Keras's initial weights")
    pp.add_argument("--out", required=True)
    pp.add_argument("--steps", type=int, default=300)
    pp.add_argument("--batch", type=int, default=64)
    pp.add_argument("--order", choices=["shuffled", "cache"], default="shuffled")
    pp.add_argument("--order-seed", type=int, default=0)
    pp.add_argument("--test-images", type=int, default=1000)
    pp.add_argument("--seed", type=int, default=0, help="Keras's initializers")
    pp.add_argument("--cache", help="the engine's decoded cache file")
    pk = sub.add_parser("keras", help="train Keras on the prepared folder, write keras_steps.csv")
    pk.add_argument("--out", required=True)
    pk.add_argument("--epochs", type=int, default=1,
                    help="passes over the folder, each in its order (the engine's --shuffle none)")
    pk.add_argument("--csv", default="keras_steps.csv", help="file name in --out")
    pk.add_argument("--verbose", type=int, default=0,
                    help="model.fit's verbose (its bar shows the reset metrics: zeros)")
    pc = sub.add_parser("compare", help="engine steps.csv vs keras_steps.csv")
    pc.add_argument("engine_csv")
    pc.add_argument("keras_csv")
    pc.add_argument("--first-tol", type=float, default=1e-3)
    pc.add_argument("--window", type=int, default=WINDOW)
    pc.add_argument("--floor", help="a second Keras run's CSV (other kernels): the noise floor")
    a = p.parse_args()
    if a.cmd != "compare":
        os.makedirs(a.out, exist_ok=True)
    {"prepare": cmd_prepare, "keras": cmd_keras, "compare": cmd_compare}[a.cmd](a)


if __name__ == "__main__":
    main()
