#!/usr/bin/env python3
"""Convert Keras ResNet weights (ResNet50 and its deeper/narrower siblings) to safetensors.

Usage:
    python tools/keras_to_safetensors.py IN.h5 OUT.safetensors [--dtype f32|f16|bf16]

The output holds one tensor per Keras weight, named ``<layer>/<weight>`` exactly as
Keras names them (``conv1_conv/kernel``, ``conv2_block1_0_bn/moving_mean``,
``predictions/bias`` ...).  Values are stored in Keras's own layouts: conv kernels
HWIO ``[kh, kw, cin, cout]`` and dense kernels ``[in, out]``; nothing is transposed so
that a reader can compare directly against Keras.

Supported inputs (detected from the file, never from its name):

* legacy Keras 2 / tf.keras h5 (``save_weights('x.h5')`` and the official
  ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``), including the variants
  seen in the wild: str or fixed-length bytes attributes, attributes split into
  ``layer_names0``, ``layer_names1``..., a nested model stored as one group, a full
  ``model.save('x.h5')`` file (weights under ``model_weights``), and Keras 3's own
  legacy writer (weight names without ``:0``);
* Keras 3 ``.weights.h5`` (and ``.keras`` archives, which embed one).  Its datasets are
  keyed by class + ordinal (``layers/conv2d_3/vars/0``), not by layer name, so layers
  are identified by the ``name`` attribute when the file has one, otherwise by
  re-deriving Keras 3's layer order from the ResNet architecture;
* the older caffe-named Keras 2 release (``conv1``, ``bn_conv1``, ``res2a_branch2a``,
  ``scale2a_branch2a`` ...), renamed to the modern names; it was trained with BN
  epsilon 1e-3, which is recorded in the metadata.

Every tensor is loaded by name and the result is checked against the ResNet
structure (channel chain, kernel sizes, complete BN statistics) so a half-mapped or
shuffled file fails here, loudly, instead of producing a silently wrong network.

Only h5py, numpy and safetensors' file format are needed (the writer is built in so
bf16 works without torch).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import struct
import sys
import zipfile
from collections import OrderedDict

import h5py
import numpy as np

# Keras's ResNet family uses 1.001e-5 (TF's fused BN refuses anything below 1.001e-5);
# the old caffe-named Keras 2 ResNet50 used the Keras default 1e-3.
MODERN_BN_EPSILON = 1.001e-5
CAFFE_BN_EPSILON = 1e-3

CONV_WEIGHTS = ("kernel", "bias")
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
DENSE_WEIGHTS = ("kernel", "bias")
HEAD_NAME = "predictions"

_CONV_RE = re.compile(r"^(conv1|conv\d+_block\d+_[0-3])_conv$")
_BN_RE = re.compile(r"^(conv1|conv\d+_block\d+_[0-3])_bn$")


class ConversionError(Exception):
    """A problem with the input file, phrased for the person who supplied it."""


# --------------------------------------------------------------------------------------
# Architecture: the layer sequence Keras builds, used both to validate a conversion and
# to name the anonymous class+ordinal keys of Keras 3 files that lack ``name`` attrs.
# --------------------------------------------------------------------------------------

def block_layer_order(stage: int, block: int, shortcut: bool):
    """Layers of one bottleneck block in the order Keras lists them.

    Keras (tf_keras and Keras 3 alike) orders a functional model's layers by graph
    depth, not by creation order.  In a projection block the 1x1 projection
    (``_0_conv``) sits at the same depth as ``_3_conv`` and is listed before it, and
    its BN likewise before ``_3_bn`` -- observed by saving keras.applications.ResNet50
    with Keras 3.15 and tf_keras 2.21.
    """
    p = f"conv{stage}_block{block}"
    seq = [
        (f"{p}_1_conv", "Conv2D"), (f"{p}_1_bn", "BatchNormalization"), (f"{p}_1_relu", "Activation"),
        (f"{p}_2_conv", "Conv2D"), (f"{p}_2_bn", "BatchNormalization"), (f"{p}_2_relu", "Activation"),
    ]
    if shortcut:
        seq += [(f"{p}_0_conv", "Conv2D"), (f"{p}_3_conv", "Conv2D"),
                (f"{p}_0_bn", "BatchNormalization"), (f"{p}_3_bn", "BatchNormalization")]
    else:
        seq += [(f"{p}_3_conv", "Conv2D"), (f"{p}_3_bn", "BatchNormalization")]
    seq += [(f"{p}_add", "Add"), (f"{p}_out", "Activation")]
    return seq


def resnet_layer_order(depths=(3, 4, 6, 3), head=True, input_name="input_layer"):
    """Full Keras layer list ``[(name, class_name)]`` of a Keras ResNet (v1, bottleneck)."""
    seq = [(input_name, "InputLayer"),
           ("conv1_pad", "ZeroPadding2D"), ("conv1_conv", "Conv2D"),
           ("conv1_bn", "BatchNormalization"), ("conv1_relu", "Activation"),
           ("pool1_pad", "ZeroPadding2D"), ("pool1_pool", "MaxPooling2D")]
    for s, depth in enumerate(depths):
        for b in range(1, depth + 1):
            seq += block_layer_order(s + 2, b, shortcut=(b == 1))
    if head:
        seq += [("avg_pool", "GlobalAveragePooling2D"), (HEAD_NAME, "Dense")]
    return seq


def weighted_layer_order(depths, head):
    """Names of the layers that carry weights, in output (canonical) order."""
    names = ["conv1_conv", "conv1_bn"]
    for s, depth in enumerate(depths):
        for b in range(1, depth + 1):
            p = f"conv{s + 2}_block{b}"
            for i in ((0, 1, 2, 3) if b == 1 else (1, 2, 3)):
                names += [f"{p}_{i}_conv", f"{p}_{i}_bn"]
    if head:
        names.append(HEAD_NAME)
    return names


def weight_names_of(layer):
    if layer == HEAD_NAME:
        return DENSE_WEIGHTS
    if layer.endswith("_bn"):
        return BN_WEIGHTS
    return CONV_WEIGHTS


def snake_case(class_name):
    """keras.src.utils.naming.to_snake_case, which Keras 3 uses for its h5 keys."""
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", s).lower()


# --------------------------------------------------------------------------------------
# Structure validation
# --------------------------------------------------------------------------------------

def infer_depths(layers):
    """Blocks per stage, from which ``convN_blockM_*`` layers are present."""
    blocks = {}
    for name in layers:
        m = re.match(r"^conv(\d+)_block(\d+)_", name)
        if m:
            st, bl = int(m.group(1)), int(m.group(2))
            blocks[st] = max(blocks.get(st, 0), bl)
    if not blocks:
        return ()
    stages = sorted(blocks)
    if stages != list(range(2, 2 + len(stages))):
        raise ConversionError(f"stages present are {stages}; expected conv2, conv3, ... with no gaps")
    return tuple(blocks[s] for s in stages)


def validate(tensors, src):
    """Check that ``tensors`` ({'layer/weight': array}) is a complete, consistent ResNet."""
    layers = {k.split("/")[0] for k in tensors}
    depths = infer_depths(layers)
    if not depths:
        raise ConversionError(f"{src}: no convN_blockM_* layers found; this is not a Keras ResNet weights file")
    head = HEAD_NAME in layers
    expected = weighted_layer_order(depths, head)
    missing = [f"{l}/{w}" for l in expected for w in weight_names_of(l) if f"{l}/{w}" not in tensors]
    if missing:
        raise ConversionError(f"{src}: missing tensors: {', '.join(missing[:12])}"
                              + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else ""))
    extra = sorted(set(tensors) - {f"{l}/{w}" for l in expected for w in weight_names_of(l)})
    if extra:
        raise ConversionError(f"{src}: unexpected tensors (not part of a ResNet with depths "
                              f"{list(depths)}): {', '.join(extra[:12])}")

    def shape(name):
        return tuple(tensors[name].shape)

    def check(cond, msg):
        if not cond:
            raise ConversionError(f"{src}: {msg}")

    def conv(layer, ksize, cin):
        k = shape(f"{layer}/kernel")
        check(len(k) == 4, f"tensor {layer}/kernel has shape {k}; expected a 4-D HWIO conv kernel")
        check(k[:2] == (ksize, ksize), f"tensor {layer}/kernel has shape {k}; expected a {ksize}x{ksize} kernel")
        check(cin is None or k[2] == cin,
              f"tensor {layer}/kernel has shape {k}; expected {cin} input channels (HWIO layout)")
        check(shape(f"{layer}/bias") == (k[3],), f"tensor {layer}/bias has shape {shape(layer + '/bias')}; expected ({k[3]},)")
        bn = layer[:-len("_conv")] + "_bn"
        for w in BN_WEIGHTS:
            check(shape(f"{bn}/{w}") == (k[3],), f"tensor {bn}/{w} has shape {shape(bn + '/' + w)}; expected ({k[3]},)")
        var = tensors[f"{bn}/moving_variance"]
        check(np.all(np.isfinite(var)) and np.all(var >= 0), f"tensor {bn}/moving_variance has negative or non-finite values")
        return k[3]

    ch = conv("conv1_conv", 7, None)
    for s, depth in enumerate(depths):
        for b in range(1, depth + 1):
            p = f"conv{s + 2}_block{b}"
            c1 = conv(f"{p}_1_conv", 1, ch)
            c2 = conv(f"{p}_2_conv", 3, c1)
            c3 = conv(f"{p}_3_conv", 1, c2)
            if b == 1:
                c0 = conv(f"{p}_0_conv", 1, ch)
                check(c0 == c3, f"{p}_0_conv outputs {c0} channels but {p}_3_conv outputs {c3}")
            else:
                check(c3 == ch, f"{p}_3_conv outputs {c3} channels but the block input has {ch}")
            ch = c3
    if head:
        k = shape(f"{HEAD_NAME}/kernel")
        check(len(k) == 2 and k[0] == ch,
              f"tensor {HEAD_NAME}/kernel has shape {k}; expected [{ch}, classes] ([in, out] layout)")
        check(shape(f"{HEAD_NAME}/bias") == (k[1],), f"tensor {HEAD_NAME}/bias has shape {shape(HEAD_NAME + '/bias')}; expected ({k[1]},)")
    return depths, expected


# --------------------------------------------------------------------------------------
# h5 helpers
# --------------------------------------------------------------------------------------

def _decode(v):
    if isinstance(v, bytes):
        return v.decode("utf8")
    if isinstance(v, np.bytes_):
        return bytes(v).decode("utf8")
    return str(v)


def read_str_list_attr(group, name):
    """A list-of-strings attribute, reassembling Keras's ``name0``, ``name1``... chunks.

    Keras splits attributes that exceed HDF5's 64 KiB object-header limit; old
    writers stored fixed-length bytes, newer ones variable-length str.
    """
    if name in group.attrs:
        chunks = [group.attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in group.attrs:
            chunks.append(group.attrs[f"{name}{i}"])
            i += 1
        if not chunks:
            return None
    out = []
    for c in chunks:
        arr = np.atleast_1d(np.asarray(c))
        if arr.dtype.kind == "f" and arr.size == 0:  # Keras writes [] for weightless layers
            continue
        out.extend(_decode(v) for v in arr.reshape(-1))
    return out


def read_str_attr(group, name):
    if name not in group.attrs:
        return None
    v = group.attrs[name]
    if isinstance(v, np.ndarray):
        v = v.reshape(-1)[0] if v.size else ""
    return _decode(v)


def _as_array(ds, src, tname):
    try:
        arr = np.asarray(ds[()])
    except Exception as e:  # pragma: no cover - corrupt file
        raise ConversionError(f"{src}: cannot read dataset {ds.name} for tensor {tname}: {e}") from e
    if arr.dtype.kind != "f":
        raise ConversionError(f"{src}: dataset {ds.name} (tensor {tname}) has non-float dtype {arr.dtype}")
    return arr


def _put(out, name, arr, src, origin):
    if name in out:
        raise ConversionError(f"{src}: tensor {name} found twice (second copy at {origin})")
    out[name] = arr


# --------------------------------------------------------------------------------------
# Legacy (Keras 2 / tf.keras) h5
# --------------------------------------------------------------------------------------

_CAFFE_RE = re.compile(r"^(?:(res|bn|scale)(\d)([a-z])(\d*)_branch(1|2a|2b|2c)|(conv1|bn_conv1|scale_conv1)|(fc1000))$")
_CAFFE_BRANCH = {"1": "0", "2a": "1", "2b": "2", "2c": "3"}


def caffe_layer_to_modern(name):
    """``res2a_branch2a`` -> (``conv2_block1_1_conv``, 'conv'); None if not caffe-named."""
    m = _CAFFE_RE.match(name)
    if not m:
        return None
    if m.group(6):
        return {"conv1": ("conv1_conv", "conv"), "bn_conv1": ("conv1_bn", "bn"),
                "scale_conv1": ("conv1_bn", "scale")}[m.group(6)]
    if m.group(7):
        return HEAD_NAME, "dense"
    kind, stage, letter, num, branch = m.group(1, 2, 3, 4, 5)
    if num:  # ResNet101/152 caffe naming: res4a, res4b1, res4b2, ...
        if letter != "b":
            return None
        block = int(num) + 1
    else:
        block = ord(letter) - ord("a") + 1
    base = f"conv{stage}_block{block}_{_CAFFE_BRANCH[branch]}"
    return {"res": (base + "_conv", "conv"), "bn": (base + "_bn", "bn"), "scale": (base + "_bn", "scale")}[kind]


_ROLE = {
    "conv": {"kernel": "kernel", "w": "kernel", "bias": "bias", "b": "bias"},
    "dense": {"kernel": "kernel", "w": "kernel", "bias": "bias", "b": "bias"},
    "bn": {"gamma": "gamma", "beta": "beta", "moving_mean": "moving_mean", "running_mean": "moving_mean",
           "moving_variance": "moving_variance", "running_var": "moving_variance"},
    "scale": {"gamma": "gamma", "beta": "beta"},
}


def _weight_role(kind, wname, layer_name, src, tpath):
    short = wname
    if short.startswith(layer_name + "_"):  # Keras 1 style: res2a_branch2a_W
        short = short[len(layer_name) + 1:]
    key = short.lower()
    if key == "running_std":
        raise ConversionError(
            f"{src}: {tpath} is a Keras 1 'running_std' BatchNormalization statistic; Keras 1 files "
            f"are not supported (load the model in Keras 2 and re-save it)")
    role = _ROLE[kind].get(key)
    if role is None:
        raise ConversionError(f"{src}: dataset {tpath}: unknown weight '{wname}' for a {kind} layer")
    return role


def _legacy_root(f):
    """Group holding ``layer_names``: the file root, or ``model_weights`` of a full-model save."""
    if read_str_list_attr(f, "layer_names") is not None:
        return f
    if "model_weights" in f and read_str_list_attr(f["model_weights"], "layer_names") is not None:
        return f["model_weights"]
    return None


def _split_weight_name(wname):
    """``conv1_bn/gamma:0`` -> ('conv1_bn', 'gamma'); ``gamma:0`` -> (None, 'gamma')."""
    w = re.sub(r":\d+$", "", wname)
    parts = w.split("/")
    return (parts[-2] if len(parts) >= 2 else None), parts[-1]


def read_legacy(f, src):
    root = _legacy_root(f)
    layer_names = read_str_list_attr(root, "layer_names")
    keras_version = read_str_attr(root, "keras_version") or read_str_attr(f, "keras_version")
    backend = read_str_attr(root, "backend") or read_str_attr(f, "backend")
    if backend and backend.lower() == "theano":
        raise ConversionError(f"{src}: saved with the Theano backend (th_dim_ordering kernels are flipped "
                              f"and channels-first); only TensorFlow-ordered files are supported")

    # (layer, weight, dataset, dataset path) under the names the file records.
    raw = []
    for gname in layer_names:
        if gname not in root:
            raise ConversionError(f"{src}: layer_names lists '{gname}' but the file has no such group")
        g = root[gname]
        wnames = read_str_list_attr(g, "weight_names") or []
        owners = {_split_weight_name(w)[0] for w in wnames}
        # A nested model stores all its layers' weights in one group named after it.
        nested = len(owners - {None, gname}) > 1
        for w in wnames:
            if w not in g:
                raise ConversionError(f"{src}: layer '{gname}' lists weight '{w}' but dataset "
                                      f"{g.name}/{w} does not exist")
            owner, wn = _split_weight_name(w)
            # A plain layer's group name is authoritative: weight names can carry a
            # uniquifying suffix (conv1_conv_1/kernel:0) when a model was built twice.
            layer = (owner or gname) if nested else gname
            raw.append((layer, wn, g[w], f"{g.name}/{w}"))

    layers = {r[0] for r in raw}
    caffe = [l for l in layers if caffe_layer_to_modern(l) is not None]
    modern = [l for l in layers if _CONV_RE.match(l) or _BN_RE.match(l)]
    fmt = "keras-legacy-h5"
    eps = MODERN_BN_EPSILON
    notes = []
    if caffe and not modern:
        fmt = "keras2-legacy-h5-caffe-names"
        eps = CAFFE_BN_EPSILON
        notes.append("caffe-named Keras 2 ResNet50 release renamed to modern layer names; "
                     "its BatchNormalization layers use epsilon 1e-3")
        if any(l.startswith("scale") for l in layers):
            notes.append("gamma/beta taken from the caffe 'scale*' layers")
    elif caffe and modern:
        raise ConversionError(f"{src}: mixes caffe-style names ({sorted(caffe)[:3]}) with modern names "
                              f"({sorted(modern)[:3]}); cannot tell which architecture it is")

    out = {}
    for layer, wn, ds, tpath in raw:
        if fmt.endswith("caffe-names"):
            mapped = caffe_layer_to_modern(layer)
            if mapped is None:
                raise ConversionError(f"{src}: dataset {tpath}: layer '{layer}' is not part of the caffe-named ResNet")
            new_layer, kind = mapped
        else:
            new_layer = _strip_suffix(layer)
            if not (_CONV_RE.match(new_layer) or _BN_RE.match(new_layer) or new_layer == HEAD_NAME):
                raise ConversionError(f"{src}: dataset {tpath}: layer '{layer}' is not part of a Keras ResNet "
                                      f"(ResNetV2 and other models are not supported)")
            kind = "dense" if new_layer == HEAD_NAME else ("bn" if new_layer.endswith("_bn") else "conv")
        role = _weight_role(kind, wn, layer, src, tpath)
        name = f"{new_layer}/{role}"
        if kind == "scale" and name in out:
            raise ConversionError(f"{src}: {tpath}: both the BN and the caffe Scale layer define {name}; "
                                  f"folding two affine transforms is not supported")
        _put(out, name, _as_array(ds, src, name), src, tpath)
    return out, {"source_format": fmt, "keras_version": keras_version, "bn_epsilon": eps, "notes": notes}


def _strip_suffix(layer):
    """``conv1_bn_1`` -> ``conv1_bn`` (uniquifying suffix); known names pass unchanged."""
    if _CONV_RE.match(layer) or _BN_RE.match(layer) or layer == HEAD_NAME:
        return layer
    m = re.match(r"^(.*)_\d+$", layer)
    if m and (_CONV_RE.match(m.group(1)) or _BN_RE.match(m.group(1)) or m.group(1) == HEAD_NAME):
        return m.group(1)
    return layer


# --------------------------------------------------------------------------------------
# Keras 3 .weights.h5
# --------------------------------------------------------------------------------------

def _k3_collect(group, path, found):
    """Walk ``layers/<key>`` recursively; returns weighted layers as dicts in file order."""
    if "layers" not in group:
        return
    for key in group["layers"]:
        lg = group["layers"][key]
        entry_path = f"{path}layers/{key}"
        vg = lg.get("vars")
        if isinstance(vg, h5py.Group) and len(vg.keys()) > 0:
            idx = sorted(vg.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
            if not all(i.isdigit() for i in idx):
                raise ConversionError(f"unexpected non-numeric var key under {vg.name}")
            name = read_str_attr(vg, "name") or read_str_attr(lg, "name")
            m = re.match(r"^(.*?)(?:_(\d+))?$", key)
            found.append({"container": path, "key": key, "cls": m.group(1), "ord": int(m.group(2) or 0),
                          "name": name, "vars": [vg[i] for i in idx], "path": vg.name})
        if isinstance(lg, h5py.Group) and "layers" in lg:
            _k3_collect(lg, entry_path + "/", found)


def _k3_map_by_order(found, src):
    """Name anonymous Keras 3 keys by re-deriving Keras 3's layer order.

    Conv2D and BatchNormalization ordinals follow the model's layer list, which Keras 3
    orders by graph depth (see block_layer_order).  The depths are recovered from the
    kernel sizes of the conv2d sequence: a projection block has two 1x1 convs after its
    3x3 (``_0_conv``, ``_3_conv``), an identity block one.  The result is then checked by
    validate(), so a file that merely resembles this pattern still fails loudly.
    """
    by_cls = {}
    for e in found:
        by_cls.setdefault(e["cls"], []).append(e)
    unknown = sorted(set(by_cls) - {"conv2d", "batch_normalization", "dense"})
    if unknown:
        raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: it has weighted layers of "
                              f"classes {unknown}, which a Keras ResNet does not")
    convs = sorted(by_cls.get("conv2d", []), key=lambda e: e["ord"])
    bns = sorted(by_cls.get("batch_normalization", []), key=lambda e: e["ord"])
    dense = by_cls.get("dense", [])
    if len({e["container"] for e in convs + bns}) > 1:
        raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: conv/BN layers are spread "
                              f"over several sub-models")
    if [e["ord"] for e in convs] != list(range(len(convs))) or [e["ord"] for e in bns] != list(range(len(bns))):
        raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: conv2d/batch_normalization "
                              f"ordinals are not contiguous from 0")
    if len(dense) > 1:
        raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: {len(dense)} Dense layers, "
                              f"expected at most one ('{HEAD_NAME}')")

    ks = []
    for e in convs:
        shp = e["vars"][0].shape
        if len(shp) != 4:
            raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: {e['path']}/0 has shape "
                                  f"{shp}, not a 4-D conv kernel")
        ks.append(shp[0])
    if not ks or ks[0] != 7:
        raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: first conv is not the 7x7 stem")
    depths, i = [], 1
    while i < len(ks):
        # block: 1x1, 3x3, then one (identity) or two (projection) 1x1
        if i + 2 >= len(ks) or ks[i] != 1 or ks[i + 1] != 3 or ks[i + 2] != 1:
            raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: conv kernel sizes "
                                  f"{ks} do not follow the ResNet bottleneck pattern")
        proj = i + 3 < len(ks) and ks[i + 3] == 1 and not (i + 4 < len(ks) and ks[i + 4] == 3)
        if proj:
            depths.append(1)
            i += 4
        else:
            if not depths:
                raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: first block has no projection")
            depths[-1] += 1
            i += 3
    order = resnet_layer_order(depths, head=bool(dense))
    conv_names = [n for n, c in order if c == "Conv2D"]
    bn_names = [n for n, c in order if c == "BatchNormalization"]
    if len(conv_names) != len(convs) or len(bn_names) != len(bns):
        raise ConversionError(f"{src}: cannot map Keras 3 file by layer order: {len(convs)} conv2d and "
                              f"{len(bns)} batch_normalization layers do not fit a ResNet with depths {depths}")
    for e, n in zip(convs, conv_names):
        e["name"] = n
    for e, n in zip(bns, bn_names):
        e["name"] = n
    for e in dense:
        e["name"] = HEAD_NAME
    return depths


def read_keras3(f, src):
    found = []
    _k3_collect(f, "", found)
    if not found:
        raise ConversionError(f"{src}: Keras 3 weights file with no weighted layers under 'layers/'")
    named = [e for e in found if e["name"]]
    notes = []
    if len(named) == len(found):
        how = "name attribute"
    elif named:
        raise ConversionError(f"{src}: only some Keras 3 layers carry a 'name' attribute "
                              f"(e.g. {found[[e['name'] for e in found].index(None)]['path']} has none); cannot map safely")
    else:
        depths = _k3_map_by_order(found, src)
        how = "Keras 3 layer order (file has no name attributes)"
        notes.append(f"layers identified by re-deriving Keras 3 layer order for depths {depths}")
    out = {}
    for e in found:
        layer = e["name"]
        kind = "dense" if e["cls"] == "dense" else ("bn" if e["cls"] == "batch_normalization" else "conv")
        if e["cls"] not in ("dense", "batch_normalization", "conv2d"):
            raise ConversionError(f"{src}: {e['path']} ('{layer}') is a {e['cls']} layer, which a Keras ResNet does not have")
        wnames = {"dense": DENSE_WEIGHTS, "bn": BN_WEIGHTS, "conv": CONV_WEIGHTS}[kind]
        if len(e["vars"]) != len(wnames):
            raise ConversionError(f"{src}: {e['path']} ('{layer}') has {len(e['vars'])} variables; "
                                  f"expected {len(wnames)} ({', '.join(wnames)})")
        for ds, wn in zip(e["vars"], wnames):
            name = f"{layer}/{wn}"
            _put(out, name, _as_array(ds, src, name), src, ds.name)
    return out, {"source_format": "keras3-weights-h5", "keras_version": None,
                 "bn_epsilon": MODERN_BN_EPSILON, "notes": notes, "mapped_by": how}


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------

def _open_h5(path):
    """h5py.File for an .h5, or for the model.weights.h5 inside a .keras archive."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if "model.weights.h5" not in z.namelist():
                raise ConversionError(f"{path}: zip archive without model.weights.h5; not a .keras file")
            data = z.read("model.weights.h5")
        return h5py.File(io.BytesIO(data), "r"), ".keras archive"
    try:
        return h5py.File(path, "r"), None
    except OSError as e:
        raise ConversionError(f"{path}: not an HDF5 file ({e})") from e


def load_keras_weights(path):
    """Read any supported file. Returns (tensors in canonical order, info dict)."""
    src = os.path.basename(path)
    f, container = _open_h5(path)
    with f:
        if _legacy_root(f) is not None:
            tensors, info = read_legacy(f, src)
        elif "layers" in f:
            tensors, info = read_keras3(f, src)
        else:
            raise ConversionError(f"{src}: neither a legacy Keras h5 (no 'layer_names' attribute) nor a "
                                  f"Keras 3 weights file (no 'layers' group); top-level keys: {list(f.keys())[:10]}")
    if container:
        info["source_format"] += f" (from {container})"
    depths, order = validate(tensors, src)
    ordered = OrderedDict((f"{l}/{w}", tensors[f"{l}/{w}"]) for l in order for w in weight_names_of(l))
    info["depths"] = depths
    info["head"] = HEAD_NAME in {k.split("/")[0] for k in ordered}
    return ordered, info


# --------------------------------------------------------------------------------------
# safetensors I/O (own writer: numpy has no bfloat16, and safetensors' numpy API refuses it)
# --------------------------------------------------------------------------------------

_ST_DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2), "F64": (np.float64, 8),
              "I64": (np.int64, 8), "I32": (np.int32, 4), "U8": (np.uint8, 1)}
_NP_TO_ST = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64",
             np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8"}


def f32_to_bf16_bits(a):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16); NaN stays NaN."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    bits = a.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def bf16_bits_to_f32(u):
    return (np.asarray(u, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: np.ndarray} or {name: ('BF16', uint16 array)}; metadata: {str: str}."""
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        if isinstance(t, tuple):
            dt, arr = t
        else:
            arr = np.asarray(t)
            if arr.dtype not in _NP_TO_ST:
                raise ValueError(f"tensor {name}: unsupported dtype {arr.dtype}")
            dt = _NP_TO_ST[arr.dtype]
        data = np.ascontiguousarray(arr).astype(np.dtype(_ST_DTYPES[dt][0]).newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf8")
    hbytes += b" " * (-len(hbytes) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as fo:
        fo.write(struct.pack("<Q", len(hbytes)))
        fo.write(hbytes)
        for b in blobs:
            fo.write(b)
    os.replace(tmp, path)


def read_safetensors(path, upcast_bf16=True):
    """Returns (OrderedDict name -> np.ndarray, metadata). BF16 is widened to float32."""
    with open(path, "rb") as fi:
        n = struct.unpack("<Q", fi.read(8))[0]
        header = json.loads(fi.read(n), object_pairs_hook=OrderedDict)
        data = fi.read()
    meta = header.pop("__metadata__", {}) or {}
    out = OrderedDict()
    for name, h in header.items():
        np_dt, _ = _ST_DTYPES[h["dtype"]]
        s, e = h["data_offsets"]
        arr = np.frombuffer(data[s:e], dtype=np.dtype(np_dt).newbyteorder("<")).reshape(h["shape"])
        if h["dtype"] == "BF16" and upcast_bf16:
            arr = bf16_bits_to_f32(arr)
        out[name] = arr.astype(arr.dtype.newbyteorder("="))
    return out, meta


def convert(in_path, out_path, dtype="f32", bn_epsilon=None):
    tensors, info = load_keras_weights(in_path)
    if bn_epsilon is not None:
        info["bn_epsilon"] = bn_epsilon
        info["notes"].append("bn_epsilon overridden on the command line")
    casted = OrderedDict()
    for k, v in tensors.items():
        v = np.asarray(v, dtype=np.float32)
        casted[k] = {"f32": lambda a: a, "f16": lambda a: a.astype(np.float16),
                     "bf16": lambda a: ("BF16", f32_to_bf16_bits(a))}[dtype](v)
    meta = {
        "format": "keras-resnet-weights",
        "source_file": os.path.basename(in_path),
        "source_format": info["source_format"],
        "keras_version": info.get("keras_version") or "unknown",
        "dtype": dtype,
        "bn_epsilon": repr(float(info["bn_epsilon"])),
        "depths": ",".join(str(d) for d in info["depths"]),
        "head": HEAD_NAME if info["head"] else "none",
        "layout": "conv kernels HWIO [kh,kw,cin,cout]; dense kernel [in,out]; names <keras layer>/<weight>",
    }
    if info.get("mapped_by"):
        meta["mapped_by"] = info["mapped_by"]
    if info.get("notes"):
        meta["notes"] = "; ".join(info["notes"])
    write_safetensors(out_path, casted, meta)
    return tensors, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", help="Keras weights: legacy .h5, Keras 3 .weights.h5 or .keras")
    ap.add_argument("output", help="output .safetensors path")
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f32")
    ap.add_argument("--bn-epsilon", type=float, default=None,
                    help="override the BN epsilon recorded in the metadata (it is not stored in weight files)")
    args = ap.parse_args(argv)
    try:
        tensors, meta = convert(args.input, args.output, args.dtype, args.bn_epsilon)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(int(np.prod(v.shape)) for v in tensors.values())
    print(f"wrote {args.output}: {len(tensors)} tensors, {n} parameters, depths {meta['depths']}, "
          f"head {meta['head']}, from {meta['source_format']} ({meta['dtype']}, bn_epsilon {meta['bn_epsilon']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
