#!/usr/bin/env python3
"""PyTorch peer of `train bench`: the same Keras-topology ResNet50 at 32x32,
timed the same way, printed in the same line format.

The model is written by hand to match keras.applications.ResNet50 exactly
(not torchvision's "v1.5", which puts the stride on the 3x3 conv):

* stem: ZeroPad 3 -> Conv 7x7/2 valid (bias) -> BN -> ReLU -> ZeroPad 1 ->
  MaxPool 3x3/2 valid;
* stages of [3, 4, 6, 3] bottleneck blocks, widths 64/128/256/512, expansion 4;
  the first block of a stage (Keras `conv_block`) puts the stride (1 for the
  first stage, 2 after) on its FIRST 1x1 conv and on the 1x1 projection
  shortcut (conv + BN); the 3x3 convs are 'same' (stride 1, pad 1);
* every conv has a bias; BN eps 1.001e-5, Keras momentum 0.99 (0.01 in torch);
* global average pool -> Linear(2048, classes) (logits; the softmax lives in
  the cross-entropy loss).

Measured, as in the Rust bench: a full training step (zero grads, forward,
cross-entropy, backward, Adam lr 1e-4, betas (0.9, 0.999), eps 1e-7) on one
fixed random batch, `--warmup` untimed steps then the median of `--steps`;
inference (eval mode, inference_mode) at each `--inference-batches` size, the
same warm-up and step counts. Training and inference each run in their own
child process, so each peak RSS (getrusage ru_maxrss) belongs to one mode
only; both memory formats (NCHW contiguous and channels_last) are measured
unless `--memory-format` picks one, and the faster is reported as PyTorch's
number. FLOP rates use the model's conv+dense cost at 32x32: 157.4 MFLOP per
image forward, 3x that (472.3) per training step, like the Rust bench.

    python tools/peer_bench.py [--threads 2] [--batch-size 64] [--steps 10]
        [--warmup 3] [--inference-batches 64,256] [--memory-format both]
        [--only training|inference]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

FWD_MFLOP = 157.4  # conv + dense MFLOP per image, forward, at 32x32
TRAIN_MFLOP = 472.3  # 3x forward: forward + both backward products
FORMATS = ("contiguous", "channels_last")
RESULT_TAG = "PEER_BENCH_RESULT "


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--batch-size", type=int, default=64, help="training batch (default 64)")
    p.add_argument("--steps", type=int, default=10, help="timed steps; the median is reported (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--inference-batches", default="64,256", help="comma-separated (default 64,256)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--memory-format", choices=("both",) + FORMATS, default="both",
                   help="measure both and report the faster (default), or just one")
    p.add_argument("--only", choices=("training", "inference"),
                   help="skip inference (training) or training (inference)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("train", "infer"), help=argparse.SUPPRESS)  # child process
    a = p.parse_args(argv)
    a.inference_batches = [int(s) for s in a.inference_batches.split(",") if s.strip()]
    if a.steps < 1 or a.warmup < 0 or a.batch_size < 1 or a.threads < 1:
        p.error("--steps, --batch-size and --threads must be >= 1, --warmup >= 0")
    return a


# ---------------------------------------------------------------- the model


def build_model(classes, keras_bn_momentum=0.99):
    import torch
    from torch import nn

    def bn(c):
        # Keras BatchNormalization(epsilon=1.001e-5, momentum=M) is torch's
        # momentum 1 - M (0.99 -> 0.01).
        return nn.BatchNorm2d(c, eps=1.001e-5, momentum=1.0 - keras_bn_momentum)

    class Block(nn.Module):
        """Keras resnet.block1: 1x1 (stride) -> 3x3 same -> 1x1 (x4), with a
        1x1-conv+BN projection shortcut (stride) in a conv_block."""

        def __init__(self, cin, filters, stride, conv_shortcut):
            super().__init__()
            cout = 4 * filters
            self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=True), bn(cout))
                             if conv_shortcut else None)
            self.conv1 = nn.Conv2d(cin, filters, 1, stride=stride, bias=True)
            self.bn1 = bn(filters)
            self.conv2 = nn.Conv2d(filters, filters, 3, stride=1, padding=1, bias=True)
            self.bn2 = bn(filters)
            self.conv3 = nn.Conv2d(filters, cout, 1, bias=True)
            self.bn3 = bn(cout)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            s = x if self.shortcut is None else self.shortcut(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return self.relu(y + s)

    class KerasResNet50(nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.stem = nn.Sequential(
                nn.ZeroPad2d(3),
                nn.Conv2d(3, 64, 7, stride=2, bias=True),  # valid
                bn(64),
                nn.ReLU(inplace=True),
                nn.ZeroPad2d(1),
                nn.MaxPool2d(3, stride=2),  # valid
            )
            blocks, cin = [], 64
            for filters, depth, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                blocks.append(Block(cin, filters, stride, True))
                cin = 4 * filters
                blocks += [Block(cin, filters, 1, False) for _ in range(depth - 1)]
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, classes)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    return KerasResNet50(classes)


def count_forward_mflop(model, hw=32):
    """Conv + dense forward MFLOP (2 x MACs) of one image, from layer shapes."""
    import torch
    from torch import nn
    total = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        total[0] += 2 * out.numel() * k

    def fc_hook(m, inp, out):
        total[0] += 2 * out.numel() * m.in_features

    hs = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hs += [m.register_forward_hook(fc_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        model(torch.zeros(1, 3, hw, hw))
    model.train(was_training)
    for h in hs:
        h.remove()
    return total[0] / 1e6


# ---------------------------------------------------------------- measuring


def median(v):
    # Same convention as the Rust bench: the upper median.
    return sorted(v)[len(v) // 2]


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if platform.system() == "Darwin" else r / 1024


def train_line(batch, t):
    rate = batch / t
    return (f"training step   batch {batch:4}: median {t * 1e3:7.1f} ms  {rate:7.1f} images/s  "
            f"{rate * TRAIN_MFLOP / 1e3:6.1f} GFLOP/s")


def infer_line(batch, t):
    rate = batch / t
    return (f"inference       batch {batch:4}: median {t * 1e3:7.1f} ms  {rate:7.1f} images/s  "
            f"{rate * FWD_MFLOP / 1e3:6.1f} GFLOP/s")


def child(a):
    """One mode, one memory format, in this process; prints a result line."""
    import torch
    rss_import = peak_rss_mb()  # the torch libraries alone (~0.5 GB for a CUDA wheel)
    load_before = os.getloadavg()[0]
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    fmt = torch.channels_last if a.memory_format == "channels_last" else torch.contiguous_format
    model = build_model(a.classes).to(memory_format=fmt)
    result = {"mode": a.mode, "format": a.memory_format, "rss_import_mb": rss_import,
              "rss_before_mb": peak_rss_mb(), "load_before": load_before}

    def batch_of(n):
        return torch.rand(n, 3, 32, 32).contiguous(memory_format=fmt)

    if a.mode == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-7)
        loss_fn = torch.nn.CrossEntropyLoss()
        x = batch_of(a.batch_size)
        y = torch.arange(a.batch_size) % a.classes
        times = []
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            if i >= a.warmup:
                times.append(dt)
        if not torch.isfinite(loss):
            raise SystemExit(f"training loss is not finite: {loss.item()}")
        result["train"] = {"batch": a.batch_size, "median_s": median(times), "times_s": times}
    else:
        model.eval()
        result["infer"] = {}
        with torch.inference_mode():
            for n in a.inference_batches:
                x = batch_of(n)
                times = []
                for i in range(a.warmup + a.steps):
                    t0 = time.perf_counter()
                    model(x)
                    dt = time.perf_counter() - t0
                    if i >= a.warmup:
                        times.append(dt)
                result["infer"][str(n)] = {"median_s": median(times), "times_s": times}
    result["peak_rss_mb"] = peak_rss_mb()
    result["load_after"] = os.getloadavg()[0]
    print(RESULT_TAG + json.dumps(result), flush=True)


def run_child(a, mode, fmt):
    cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--memory-format", fmt,
           "--threads", str(a.threads), "--batch-size", str(a.batch_size), "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--classes", str(a.classes), "--seed", str(a.seed),
           "--inference-batches", ",".join(map(str, a.inference_batches))]
    env = dict(os.environ)
    # Size the OpenMP/MKL pools from the start, too (set_num_threads does it
    # again inside); leave a caller's explicit setting alone.
    env.setdefault("OMP_NUM_THREADS", str(a.threads))
    env.setdefault("MKL_NUM_THREADS", str(a.threads))
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stdout.write(p.stdout)
        raise SystemExit(f"peer_bench: {mode}/{fmt} child failed with exit code {p.returncode}")
    for line in p.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise SystemExit(f"peer_bench: {mode}/{fmt} child printed no result")


def main():
    a = parse_args()
    if a.mode:
        return child(a)

    import torch
    torch.set_num_threads(a.threads)
    mflop = count_forward_mflop(build_model(a.classes))
    print(f"1-min load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"PyTorch {torch.__version__}; MKLDNN/oneDNN available: {torch.backends.mkldnn.is_available()} "
          f"(enabled: {torch.backends.mkldnn.enabled}); MKL: {torch.backends.mkl.is_available()}; "
          f"{a.threads} thread(s) (torch.set_num_threads)")
    print(f"ResNet50 (Keras topology) 32x32, {a.threads} thread(s); {mflop:.1f} MFLOP/image forward "
          f"(rates use {FWD_MFLOP} forward, {TRAIN_MFLOP} per training step)")
    formats = FORMATS if a.memory_format == "both" else (a.memory_format,)
    modes = [m for m, skip in (("train", "inference"), ("infer", "training")) if a.only != skip]

    res = {}
    for mode in modes:
        for fmt in formats:
            r = res[(mode, fmt)] = run_child(a, mode, fmt)
            tag = f"  [{fmt:13}]"
            ctx = (f"import torch {r['rss_import_mb']:.0f} MB, model built {r['rss_before_mb']:.0f} MB; "
                   f"1-min load {r['load_before']:.2f} -> {r['load_after']:.2f}")
            if mode == "train":
                print(f"{tag} {train_line(a.batch_size, r['train']['median_s'])}"
                      f"   peak RSS {r['peak_rss_mb']:.0f} MB ({ctx})", flush=True)
            else:
                for n in a.inference_batches:
                    print(f"{tag} {infer_line(n, r['infer'][str(n)]['median_s'])}", flush=True)
                print(f"{tag} peak RSS {r['peak_rss_mb']:.0f} MB ({ctx})", flush=True)

    # The faster format per measurement, in the Rust bench's exact line format.
    print("PyTorch best (memory format chosen per measurement):")
    if "train" in modes:
        best = min(formats, key=lambda f: res[("train", f)]["train"]["median_s"])
        r = res[("train", best)]
        print(f"memory format for training: {best}")
        print(train_line(a.batch_size, r["train"]["median_s"]))
        print(f"peak RSS after training steps: {r['peak_rss_mb']:.0f} MB")
        print(f"RSS after import torch (training process): {r['rss_import_mb']:.0f} MB")
    if "infer" in modes:
        chosen = []
        for n in a.inference_batches:
            best = min(formats, key=lambda f: res[("infer", f)]["infer"][str(n)]["median_s"])
            chosen.append((n, best))
        print("memory format for inference: " + ", ".join(f"batch {n} {f}" for n, f in chosen))
        for n, best in chosen:
            print(infer_line(n, res[("infer", best)]["infer"][str(n)]["median_s"]))
        peak = max(res[("infer", f)]["peak_rss_mb"] for f in {f for _, f in chosen})
        print(f"peak RSS: {peak:.0f} MB")


if __name__ == "__main__":
    main()
