#!/usr/bin/env python3
"""The scratch recipe in PyTorch, on the engine's own decoded CIFAR-10: a
reference for how fast the Keras-topology ResNet50 learns per epoch with
this recipe, to tell the architecture's learning speed from the engine's.

The same network as tools/peer_bench.py (keras.applications.ResNet50, 32x32
input, written by hand in PyTorch) with Keras's initialization (glorot
uniform kernels, zero biases, BN gamma 1 / beta 0) and the recipe of
`train --recipe scratch` (crates/train/src/recipe.rs, docs/recipes.md):

* SGD with Nesterov momentum 0.9 in Keras's form (`v = m v - lr g`,
  `w += m v - lr g`; the engine's optim/sgd.rs), L2 weight decay 5e-4 added
  to the gradient of kernels only (rank > 1: not biases, not batchnorm);
* lr 0.05 at batch 128, linear warm-up over 2 epochs (step s gets
  lr (s + 1) / warm-up steps), then linear decay to 0 at the last step;
* label smoothing 0.1; batchnorm momentum 0.9 (Keras's convention);
* random 32x32 crop of the 4-pixel reflect-padded image and a horizontal
  flip with probability 1/2, inputs x / 255; a new order every epoch.

Not reproduced: the EMA of the weights and flip test-time augmentation (both
judge the weights, they do not change how they learn); the engine's exact
random stream (orders and crops are drawn here with numpy). Test accuracy
is of the trained weights, plain (no TTA), after every epoch, like the
engine's `test_acc` column.

    python tools/torch_scratch_reference.py [--epochs 60] [--stop-after N]
        [--threads 2] [--cache FILE] [--out metrics.csv] [--train-limit N]

`--epochs` sets the schedule's length, `--stop-after` ends the run early
(the first N epochs of that schedule, to compare with the engine's table).
Reads the engine's decoded cache (any real run of the engine makes it; see
keras_step_compare.py). Needs requirements-torch.txt.
"""

import argparse
import csv
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keras_step_compare import find_cache, read_cache  # noqa: E402
from peer_bench import build_model  # noqa: E402

BATCH = 128
LR = 0.05
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
WARMUP_EPOCHS = 2
SMOOTHING = 0.1
BN_MOMENTUM = 0.9
PAD = 4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=60, help="the schedule's length (default 60)")
    p.add_argument("--stop-after", type=int, help="stop after this many epochs of it")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", help="the engine's decoded cache (default: found)")
    p.add_argument("--out", default="torch_scratch_metrics.csv")
    p.add_argument("--train-limit", type=int, help="train on a seeded random N images (smoke tests)")
    p.add_argument("--test-limit", type=int, help="evaluate on a seeded random N test images")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.epochs < 1 or (a.stop_after is not None and a.stop_after < 1):
        p.error("--epochs and --stop-after must be >= 1")
    return a


def lr_at(step, warmup, total):
    """The engine's linear schedule with warm-up (optim/schedule.rs)."""
    if step >= total:
        return 0.0
    if step < warmup:
        return LR * (step + 1) / warmup
    return LR * (total - step) / (total - warmup)


def augment(x, rng):
    """Random crop of the reflect-padded batch and a horizontal flip (NHWC u8)."""
    n = len(x)
    padded = np.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")
    dy = rng.integers(0, 2 * PAD + 1, n)
    dx = rng.integers(0, 2 * PAD + 1, n)
    flip = rng.random(n) < 0.5
    out = np.empty_like(x)
    for i in range(n):
        crop = padded[i, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        out[i] = crop[:, ::-1] if flip[i] else crop
    return out


def to_tensor(x, torch):
    t = torch.from_numpy(np.array(x, copy=True)).float().div_(255.0)
    return t.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def keras_init(model, torch):
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)


def evaluate(model, x, y, torch):
    model.eval()
    loss, correct = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(x), 256):
            logits = model(to_tensor(x[i:i + 256], torch))
            target = torch.from_numpy(y[i:i + 256].astype(np.int64))
            loss += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
    model.train()
    return loss / len(x), correct / len(x)


def main(argv=None):
    a = parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    data = read_cache(find_cache(a.cache))
    x, y = data["train"]
    tx, ty = data["test"]
    # Limits take seeded random subsets (the cache is in folder order, one
    # class after another), as the engine's --train-limit / --test-limit do.
    pick = np.random.default_rng(a.seed + 1)
    if a.train_limit:
        keep = pick.permutation(len(x))[:a.train_limit]
        x, y = x[keep], y[keep]
    if a.test_limit:
        keep = pick.permutation(len(tx))[:a.test_limit]
        tx, ty = tx[keep], ty[keep]
    model = build_model(len(data["classes"]), BN_MOMENTUM).to(memory_format=torch.channels_last)
    keras_init(model, torch)
    model.train()
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    decayed = [p.dim() > 1 for p in params]
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=SMOOTHING)
    steps = -(-len(x) // BATCH)
    warmup, total = WARMUP_EPOCHS * steps, a.epochs * steps
    rng = np.random.default_rng(a.seed)
    print(f"torch {torch.__version__}, {a.threads} thread(s); {len(x)} train / {len(tx)} test "
          f"images; {steps} steps per epoch, schedule of {a.epochs} epochs")
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"])
        step = 0
        for epoch in range(a.stop_after or a.epochs):
            started = time.time()
            order = rng.permutation(len(x))
            loss_sum, correct, seen = 0.0, 0, 0
            for b in range(steps):
                idx = order[b * BATCH:(b + 1) * BATCH]
                xb = to_tensor(augment(x[idx], rng), torch)
                yb = torch.from_numpy(y[idx].astype(np.int64))
                logits = model(xb)
                loss = loss_fn(logits, yb)
                for p in params:
                    p.grad = None
                loss.backward()
                lr = lr_at(step, warmup, total)
                with torch.no_grad():
                    for p, v, d in zip(params, velocity, decayed):
                        g = p.grad + WEIGHT_DECAY * p if d else p.grad
                        v.mul_(MOMENTUM).sub_(lr * g)
                        p.add_(MOMENTUM * v - lr * g)
                step += 1
                loss_sum += loss.item() * len(idx)
                correct += (logits.argmax(1) == yb).sum().item()
                seen += len(idx)
            test_loss, test_acc = evaluate(model, tx, ty, torch)
            secs = time.time() - started
            w.writerow([epoch + 1, lr, loss_sum / seen, correct / seen, test_loss, test_acc, secs])
            f.flush()
            print(f"epoch {epoch + 1}/{a.epochs}: lr {lr:.4f} train loss {loss_sum / seen:.4f} "
                  f"acc {correct / seen:.4f} | test loss {test_loss:.4f} acc {test_acc:.4f} | "
                  f"{secs:.1f}s", flush=True)


if __name__ == "__main__":
    main()
