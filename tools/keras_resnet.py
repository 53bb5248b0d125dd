"""Keras ResNet builders and seeded weights shared by the fixture, parity and verify scripts.

Works with either Keras module passed in (``tf_keras`` = Keras 2 with the legacy h5
writer, or Keras 3 ``keras``), so the same network and the same numbers can be run
through both.  The builder copies keras.applications.resnet (ResNet v1, bottleneck
``block1``/``stack1``) line for line, with the widths and depths as parameters, so a
narrow network has exactly ResNet50's topology and layer names.
"""

from __future__ import annotations

import numpy as np

BN_EPSILON = 1.001e-5  # keras.applications.resnet


def block1(layers, x, filters, stride=1, conv_shortcut=True, name=None):
    # Stride sits on the first 1x1 conv and on the projection, as in Keras (not on the 3x3).
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(x)
        shortcut = layers.BatchNormalization(axis=3, epsilon=BN_EPSILON, name=name + "_0_bn")(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=name + "_1_conv")(x)
    x = layers.BatchNormalization(axis=3, epsilon=BN_EPSILON, name=name + "_1_bn")(x)
    x = layers.Activation("relu", name=name + "_1_relu")(x)
    x = layers.Conv2D(filters, 3, padding="SAME", name=name + "_2_conv")(x)
    x = layers.BatchNormalization(axis=3, epsilon=BN_EPSILON, name=name + "_2_bn")(x)
    x = layers.Activation("relu", name=name + "_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
    x = layers.BatchNormalization(axis=3, epsilon=BN_EPSILON, name=name + "_3_bn")(x)
    x = layers.Add(name=name + "_add")([shortcut, x])
    return layers.Activation("relu", name=name + "_out")(x)


def build_resnet(keras, stem=64, widths=(64, 128, 256, 512), depths=(3, 4, 6, 3),
                 input_shape=(224, 224, 3), classes=10):
    """keras.applications.ResNet50(include_top=False) + GAP ``avg_pool`` + Dense ``predictions``.

    ``classes=None`` leaves the head off.  The Dense uses softmax like Keras's top.
    """
    L = keras.layers
    inp = L.Input(shape=input_shape)
    x = L.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(inp)
    x = L.Conv2D(stem, 7, strides=2, use_bias=True, name="conv1_conv")(x)
    x = L.BatchNormalization(axis=3, epsilon=BN_EPSILON, name="conv1_bn")(x)
    x = L.Activation("relu", name="conv1_relu")(x)
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for s, (w, d) in enumerate(zip(widths, depths)):
        name = f"conv{s + 2}"
        x = block1(L, x, w, stride=1 if s == 0 else 2, name=name + "_block1")
        for i in range(2, d + 1):
            x = block1(L, x, w, conv_shortcut=False, name=f"{name}_block{i}")
    if classes is not None:
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
        x = L.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, x, name="resnet")


def block2(layers, x, filters, kernel_size=3, stride=1, conv_shortcut=False, name=None):
    """keras.applications.resnet.residual_block_v2 (tf_keras: block2), line for line.

    Pre-activation: BN + ReLU first; the shortcut is a 1x1 conv of the
    pre-activated input (conv_shortcut) or the raw input, subsampled by an unnamed
    1x1 max pool when the block strides; the stride sits on the 3x3 conv after an
    explicit 1-pixel pad; _1_conv and _2_conv have no bias; no BN or ReLU after the add.
    """
    preact = layers.BatchNormalization(axis=3, epsilon=BN_EPSILON, name=name + "_preact_bn")(x)
    preact = layers.Activation("relu", name=name + "_preact_relu")(preact)
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=name + "_0_conv")(preact)
    else:
        shortcut = layers.MaxPooling2D(1, strides=stride)(x) if stride > 1 else x
    x = layers.Conv2D(filters, 1, strides=1, use_bias=False, name=name + "_1_conv")(preact)
    x = layers.BatchNormalization(axis=3, epsilon=BN_EPSILON, name=name + "_1_bn")(x)
    x = layers.Activation("relu", name=name + "_1_relu")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=name + "_2_pad")(x)
    x = layers.Conv2D(filters, kernel_size, strides=stride, use_bias=False, name=name + "_2_conv")(x)
    x = layers.BatchNormalization(axis=3, epsilon=BN_EPSILON, name=name + "_2_bn")(x)
    x = layers.Activation("relu", name=name + "_2_relu")(x)
    x = layers.Conv2D(4 * filters, 1, name=name + "_3_conv")(x)
    return layers.Add(name=name + "_out")([shortcut, x])


def stack2(layers, x, filters, blocks, stride1=2, name=None):
    """keras.applications.resnet.stack_residual_blocks_v2: the stride on the LAST block."""
    x = block2(layers, x, filters, conv_shortcut=True, name=name + "_block1")
    for i in range(2, blocks):
        x = block2(layers, x, filters, name=name + "_block" + str(i))
    return block2(layers, x, filters, stride=stride1, name=name + "_block" + str(blocks))


def build_resnet_v2(keras, stem=64, widths=(64, 128, 256, 512), depths=(3, 4, 6, 3),
                    input_shape=(224, 224, 3), classes=10):
    """keras.applications.ResNet50V2(include_top=False) + GAP ``avg_pool`` + Dense ``predictions``.

    resnet.ResNet(preact=True): no conv1_bn/conv1_relu, post_bn + post_relu after the
    stacks; every stack but the last has stride 2 (on its last block).
    """
    L = keras.layers
    inp = L.Input(shape=input_shape)
    x = L.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(inp)
    x = L.Conv2D(stem, 7, strides=2, use_bias=True, name="conv1_conv")(x)
    x = L.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = L.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for s, (w, d) in enumerate(zip(widths, depths)):
        x = stack2(L, x, w, d, stride1=1 if s + 1 == len(depths) else 2, name=f"conv{s + 2}")
    x = L.BatchNormalization(axis=3, epsilon=BN_EPSILON, name="post_bn")(x)
    x = L.Activation("relu", name="post_relu")(x)
    if classes is not None:
        x = L.GlobalAveragePooling2D(name="avg_pool")(x)
        x = L.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inp, x, name="resnet_v2")


def applications_resnet50_with_head(keras, input_shape=(32, 32, 3), classes=10):
    """The real keras.applications.ResNet50 (no top) with the same head, as one flat model."""
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=input_shape)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base.output)
    x = keras.layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(base.input, x, name="resnet50_head")


def short_weight_name(var):
    """'conv1_bn/gamma:0' (tf_keras) or 'gamma' (Keras 3) -> 'gamma'."""
    return var.name.split("/")[-1].split(":")[0]


def named_weights(model):
    """{'layer/weight': variable} for every weight of a flat model, in model order."""
    out = {}
    for layer in model.layers:
        for v in layer.weights:
            key = f"{layer.name}/{short_weight_name(v)}"
            if key in out:
                raise ValueError(f"duplicate weight name {key}")
            out[key] = v
    return out


def seeded_weights(model, seed):
    """Deterministic weights for every variable, independent of Keras's initializers.

    BN statistics and biases are deliberately far from their 1/0 defaults so that a
    swapped gamma/beta/mean/variance or a dropped bias changes the outputs.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for key, v in named_weights(model).items():
        shape = tuple(v.shape)
        w = key.split("/")[1]
        if w == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            a = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif w == "bias":
            a = rng.normal(0.0, 0.1, shape)
        elif w == "gamma":
            a = rng.uniform(0.5, 1.5, shape)
        elif w in ("beta", "moving_mean"):
            a = rng.normal(0.0, 0.2, shape)
        elif w == "moving_variance":
            a = rng.uniform(0.5, 1.5, shape)
        else:
            raise ValueError(f"unexpected weight {key}")
        out[key] = a.astype(np.float32)
    return out


def assign_weights(model, weights):
    """Set every model variable from {'layer/weight': array}, by name; all must be present."""
    nw = named_weights(model)
    missing = sorted(set(nw) - set(weights))
    if missing:
        raise KeyError(f"no value for model weights {missing[:5]}")
    for key, v in nw.items():
        a = np.asarray(weights[key], dtype=np.float32)
        if tuple(a.shape) != tuple(v.shape):
            raise ValueError(f"{key}: shape {a.shape} vs model {tuple(v.shape)}")
        v.assign(a)


def run_reference(tf, keras, model, x, y, layers, training, extra_layers=()):
    """One forward (+ backward) of ``model`` on (x, y) through a multi-output probe.

    A single call computes every requested layer output, the loss and all gradients,
    so in training mode the BN moving statistics are updated exactly once.  Returns
    {layer: output} for ``layers`` and ``extra_layers``, plus 'features' (avg_pool),
    'logits' (features @ W + b, the pre-softmax input of ``predictions``), 'probs'
    (the model's softmax output), 'loss' (mean sparse categorical cross-entropy,
    computed from the logits, so without Keras's probability clipping) and
    'grad/<layer>/<weight>' for every trainable weight.
    """
    names = list(layers) + [n for n in extra_layers if n not in layers]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names]
                        + [model.get_layer("avg_pool").output, model.output])
    nw = named_weights(model)
    trainable = [(k, v) for k, v in nw.items() if v.trainable]
    dense_k, dense_b = nw["predictions/kernel"], nw["predictions/bias"]
    xt = tf.constant(x, model.input.dtype)  # float64 models give a rounding-free reference
    labels = tf.constant(np.asarray(y).astype(np.int64))
    with tf.GradientTape() as tape:
        outs = probe(xt, training=training)
        feats, probs = outs[-2], outs[-1]
        logits = tf.matmul(feats, tf.convert_to_tensor(dense_k)) + tf.convert_to_tensor(dense_b)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    grads = tape.gradient(loss, [v for _, v in trainable])
    res = {n: np.asarray(o) for n, o in zip(names, outs[:-2])}
    res.update(features=np.asarray(feats), logits=np.asarray(logits), probs=np.asarray(probs),
               loss=np.asarray(loss, dtype=np.float32).reshape(1))  # shape [1]: simpler than rank 0 for readers
    for (k, _), g in zip(trainable, grads):
        if g is None:
            raise RuntimeError(f"no gradient for {k}")
        res[f"grad/{k}"] = np.asarray(g)
    return res


def bn_layer_names(model):
    return [l.name for l in model.layers if type(l).__name__ == "BatchNormalization"]


def moving_stats(model):
    nw = named_weights(model)
    return {f"{bn}/{s}": np.asarray(nw[f"{bn}/{s}"]).copy()
            for bn in bn_layer_names(model) for s in ("moving_mean", "moving_variance")}


def variance_rule(before, after, bn_inputs, momentum=0.99):
    """Which batch variance did one training step fold into moving_variance?

    Inverts new = m*old + (1-m)*v and compares v with the biased (/n) and unbiased
    (/(n-1)) variance of the BN input.  Returns {'biased': max err, 'unbiased': max err},
    errors relative to the variance scale, worst over all BN layers.
    """
    errs = {"biased": 0.0, "unbiased": 0.0, "mean": 0.0}
    for bn, inp in bn_inputs.items():
        flat = inp.reshape(-1, inp.shape[-1]).astype(np.float64)
        v_impl = (after[f"{bn}/moving_variance"] - momentum * before[f"{bn}/moving_variance"]) / (1 - momentum)
        m_impl = (after[f"{bn}/moving_mean"] - momentum * before[f"{bn}/moving_mean"]) / (1 - momentum)
        scale = max(1e-6, float(np.max(np.abs(flat.var(axis=0)))))
        errs["biased"] = max(errs["biased"], float(np.max(np.abs(v_impl - flat.var(axis=0, ddof=0)))) / scale)
        errs["unbiased"] = max(errs["unbiased"], float(np.max(np.abs(v_impl - flat.var(axis=0, ddof=1)))) / scale)
        errs["mean"] = max(errs["mean"], float(np.max(np.abs(m_impl - flat.mean(axis=0)))) / scale)
    return errs


def train_norm_error(train, weights, bns, eps):
    """Max abs error of each training-mode BN output against a float64 recomputation
    normalising with the biased (/n) and the unbiased (/(n-1)) batch variance."""
    errs = {"biased": 0.0, "unbiased": 0.0}
    for bn in bns:
        c = train[bn[: -len("_bn")] + "_conv"].astype(np.float64)
        c = c.reshape(-1, c.shape[-1])
        out = train[bn].reshape(c.shape)
        for rule, ddof in (("biased", 0), ("unbiased", 1)):
            ref = (c - c.mean(0)) / np.sqrt(c.var(0, ddof=ddof) + eps) * weights[bn + "/gamma"] + weights[bn + "/beta"]
            errs[rule] = max(errs[rule], float(np.max(np.abs(ref - out))))
    return errs


def calibrate_bn_stats(keras, model, x, seed):
    """Scale each BN's moving stats to the real size of its input on ``x``.

    With purely random moving stats, inference-mode activations of the full ResNet50
    grow ~x300 over its 16 residual blocks and saturate the softmax (loss ~500, one-hot
    probs), which makes probs and gradients a weak test.  Using the exact batch mean and
    variance instead would be worse: where a channel's std << |mean| (conv5 has 1x1
    maps, so only `batch` samples), (x - mean) / std cancels catastrophically and two
    correct float32 implementations differ by ~1e-3; per-channel scaling has the same
    problem for channels that are nearly dead on this batch.  So, layer by layer in
    model order (each BN sees the already-calibrated layers before it), with r the RMS
    of the BN's whole input: mean = N(0, 0.2) * r, variance = U(0.5, 1.5) * r^2 -- O(1)
    outputs, well conditioned, and far from both the 0/1 defaults and the batch
    statistics, so swapped statistics or a training/inference mix-up still show.
    """
    rng = np.random.default_rng(seed)
    nw = named_weights(model)
    for bn in bn_layer_names(model):
        probe = keras.Model(model.input, model.get_layer(bn).input)
        c = nw[bn + "/moving_mean"].shape[0]
        a = np.asarray(probe(x, training=False), np.float64).reshape(-1, c)
        rms = np.full(c, np.sqrt(np.mean(a * a)))  # one scale per layer, see docstring
        nw[bn + "/moving_mean"].assign((rng.normal(0.0, 0.2, c) * rms).astype(np.float32))
        nw[bn + "/moving_variance"].assign((rng.uniform(0.5, 1.5, c) * rms * rms).astype(np.float32))


def relu_layers(model):
    return [l.name for l in model.layers
            if type(l).__name__ == "Activation" and getattr(l.activation, "__name__", "") == "relu"]


def bn_before_relu(relu):
    """The BN whose beta shifts this ReLU's input additively (for ``_out``: the residual's ``_3_bn``)."""
    if relu == "conv1_relu":
        return "conv1_bn"
    if relu.endswith("_out"):
        return relu[: -len("_out")] + "_3_bn"
    return relu[: -len("_relu")] + "_bn"


def clear_relu_kinks(keras, model, x, margin=1e-4, max_steps=200):
    """Nudge BN betas so no ReLU input lies within ``margin`` (relative) of zero.

    Two correct float32 implementations differ by ~1e-6 relative; a ReLU input that
    close to 0 can land on opposite sides in each, and that unit's whole gradient then
    differs (seen: 1e-2 relative gradient differences between tf_keras and Keras 3 on
    the full ResNet50).  Such a reference cannot be matched to 1e-4, so we move every
    ReLU input at least ``margin * max|layer input|`` away from 0 in BOTH inference and
    training mode: per channel, beta += the smallest step (multiples of 2.5 * margin *
    scale) that clears every sample.  Layers are treated in model order, so each sees
    the already-adjusted layers before it.  Returns (number of betas changed, largest
    |shift| relative to the layer scale, smallest margin left).
    """
    nw = named_weights(model)
    changed, worst_shift, worst_margin = 0, 0.0, float("inf")
    for relu in relu_layers(model):
        probe = keras.Model(model.input, model.get_layer(relu).input)
        saved = moving_stats(model)  # a training-mode call updates them; undo that
        vi = np.asarray(probe(x, training=False), np.float64)
        vt = np.asarray(probe(x, training=True), np.float64)
        for k, v in saved.items():
            nw[k].assign(v)
        c = vi.shape[-1]
        vals = np.concatenate([vi.reshape(-1, c), vt.reshape(-1, c)], axis=0)
        scale = float(np.max(np.abs(vals)))
        need, step = margin * scale, 2.5 * margin * scale
        beta = nw[bn_before_relu(relu) + "/beta"]
        b = np.asarray(beta).copy()
        for ch in range(c):
            col = vals[:, ch]
            for i in range(max_steps):
                k = (i + 1) // 2 * (1 if i % 2 else -1)  # 0, 1, -1, 2, -2, ...
                if np.min(np.abs(col + k * step)) >= need:
                    break
            else:
                raise RuntimeError(f"{relu}: cannot clear channel {ch} of the ReLU kink")
            if k:
                b[ch] += np.float32(k * step)
                changed += 1
                worst_shift = max(worst_shift, abs(k * step) / scale)
            worst_margin = min(worst_margin, float(np.min(np.abs(col + k * step))) / scale)
        beta.assign(b.astype(np.float32))
    return changed, worst_shift, worst_margin


def relu_margin(keras, model, x):
    """Smallest |ReLU input| / max|that layer's input| over all ReLUs, both BN modes."""
    relus = relu_layers(model)
    probe = keras.Model(model.input, [model.get_layer(r).input for r in relus])
    saved = moving_stats(model)
    nw = named_weights(model)
    worst = float("inf")
    for training in (False, True):
        for v in probe(x, training=training):
            v = np.abs(np.asarray(v, np.float64))
            worst = min(worst, float(v.min() / v.max()))
    for k, v in saved.items():
        nw[k].assign(v)
    return worst
