"""Tests for tools/keras_to_safetensors.py and tools/safetensors_to_keras.py.

    python -m pytest tools/test_converter.py

The synthetic tests write small h5 files in every layout the converter claims to read
(so they need only h5py/numpy/safetensors); the ``real_*`` tests let tf_keras and
Keras 3 write files themselves and are skipped when TensorFlow is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from safetensors.numpy import load_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import keras_to_safetensors as k2s  # noqa: E402
import safetensors_to_keras as s2k  # noqa: E402

DEPTHS = (2, 1, 1, 2)  # uneven on purpose: catches depth/stage mix-ups


def make_tensors(depths=DEPTHS, stem=4, widths=(1, 2, 2, 3), classes=3, head=True, seed=0):
    """A random but structurally valid tiny ResNet, {'layer/weight': array} in canonical order."""
    rng = np.random.default_rng(seed)
    out, ch = {}, None

    def conv(name, k, cin, cout):
        out[f"{name}_conv/kernel"] = rng.normal(size=(k, k, cin, cout)).astype(np.float32)
        out[f"{name}_conv/bias"] = rng.normal(size=(cout,)).astype(np.float32)
        out[f"{name}_bn/gamma"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
        out[f"{name}_bn/beta"] = rng.normal(size=(cout,)).astype(np.float32)
        out[f"{name}_bn/moving_mean"] = rng.normal(size=(cout,)).astype(np.float32)
        out[f"{name}_bn/moving_variance"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)

    conv("conv1", 7, 3, stem)
    ch = stem
    for s, (d, w) in enumerate(zip(depths, widths)):
        for b in range(1, d + 1):
            p = f"conv{s + 2}_block{b}"
            if b == 1:
                conv(f"{p}_0", 1, ch, 4 * w)
            conv(f"{p}_1", 1, ch, w)
            conv(f"{p}_2", 3, w, w)
            conv(f"{p}_3", 1, w, 4 * w)
            ch = 4 * w
    if head:
        out["predictions/kernel"] = rng.normal(size=(ch, classes)).astype(np.float32)
        out["predictions/bias"] = rng.normal(size=(classes,)).astype(np.float32)
    order = k2s.weighted_layer_order(depths, head)
    return {f"{l}/{w}": out[f"{l}/{w}"] for l in order for w in k2s.weight_names_of(l)}


def _str_attr(values, style):
    if style == "vlen":
        return np.array(values, dtype=h5py.string_dtype())
    return np.array([v.encode() for v in values], dtype="S")  # fixed-length bytes, like the official file


def _set_list_attr(group, name, values, style, split):
    if split and len(values) > 1:
        for i, chunk in enumerate(np.array_split(np.array(values, dtype=object), min(split, len(values)))):
            group.attrs[f"{name}{i}"] = _str_attr(list(chunk), style)
    elif values:
        group.attrs[name] = _str_attr(values, style)
    else:
        group.attrs[name] = np.array([], dtype=np.float64)  # what tf_keras writes for weightless layers


def write_legacy(path, tensors, depths=DEPTHS, style="vlen", split=0, nested=False, colon=True,
                 full_model=False):
    head = "predictions/kernel" in tensors
    order = k2s.resnet_layer_order(depths, head=head, input_name="input_1")
    suffix = ":0" if colon else ""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        root.attrs["keras_version"] = "2.21.0" if style == "vlen" else b"2.2.4"
        root.attrs["backend"] = "tensorflow" if style == "vlen" else b"tensorflow"
        if nested:
            base = [(n, c) for n, c in order if n not in ("avg_pool", "predictions")]
            names = ["resnet50"] + (["avg_pool", "predictions"] if head else [])
            _set_list_attr(root, "layer_names", names, style, split)
            g = root.create_group("resnet50")
            wn = [f"{l}/{w}{suffix}" for l, _ in base for w in k2s.weight_names_of(l) if f"{l}/{w}" in tensors]
            _set_list_attr(g, "weight_names", wn, style, split)
            for l, _ in base:
                for w in k2s.weight_names_of(l):
                    if f"{l}/{w}" in tensors:
                        g.create_dataset(f"{l}/{w}{suffix}", data=tensors[f"{l}/{w}"])
            order = [(n, c) for n, c in order if n in ("avg_pool", "predictions")]
        else:
            _set_list_attr(root, "layer_names", [n for n, _ in order], style, split)
        for layer, _ in order:
            g = root.create_group(layer)
            wn = [w for w in k2s.weight_names_of(layer) if f"{layer}/{w}" in tensors]
            _set_list_attr(g, "weight_names", [f"{layer}/{w}{suffix}" for w in wn], style, split)
            for w in wn:
                g.create_dataset(f"{layer}/{w}{suffix}", data=tensors[f"{layer}/{w}"])


def write_keras3(path, tensors, depths=DEPTHS, names=True, nested=False, name_on_layer_group=False):
    """Keras 3 .weights.h5: layers/<snake_class>[_<ordinal>]/vars/<i>."""
    head = "predictions/kernel" in tensors
    order = k2s.resnet_layer_order(depths, head=head)
    with h5py.File(path, "w") as f:
        f.create_group("vars").attrs["name"] = "functional"
        top = f.create_group("layers")
        if nested:
            sub = top.create_group("functional")
            sub.create_group("vars").attrs["name"] = "resnet50"
            inner = sub.create_group("layers")
        counters = {}
        for layer, cls in order:
            tgt = top if (not nested or layer in ("avg_pool", "predictions")) else inner
            key = k2s.snake_case(cls)
            c = counters.setdefault((id(tgt), key), [0])
            full = key if c[0] == 0 else f"{key}_{c[0]}"
            c[0] += 1
            lg = tgt.create_group(full)
            vg = lg.create_group("vars")
            if names:
                (lg if name_on_layer_group else vg).attrs["name"] = layer
            if cls in ("Conv2D", "BatchNormalization", "Dense"):
                for i, w in enumerate(k2s.weight_names_of(layer)):
                    vg.create_dataset(str(i), data=tensors[f"{layer}/{w}"])


CAFFE_BRANCH = {"0": "1", "1": "2a", "2": "2b", "3": "2c"}


def caffe_name(layer):
    if layer == "predictions":
        return "fc1000"
    if layer.startswith("conv1_"):
        return "conv1" if layer.endswith("_conv") else "bn_conv1"
    _, rest = layer.split("conv", 1)
    stage, blk, br, kind = rest[0], int(rest.split("_block")[1].split("_")[0]), layer.split("_")[2], layer.split("_")[3]
    base = f"{stage}{chr(ord('a') + blk - 1)}_branch{CAFFE_BRANCH[br]}"
    return ("res" if kind == "conv" else "bn") + base


def write_caffe(path, tensors, scale_layers=False):
    """Old Keras 2 ResNet50 release naming (conv1, bn_conv1, res2a_branch2a, fc1000)."""
    with h5py.File(path, "w") as f:
        layers = []
        for key, arr in tensors.items():
            layer, w = key.split("/")
            old = caffe_name(layer)
            if scale_layers and w in ("gamma", "beta"):
                old = "scale" + old[2:] if old.startswith("bn") and old != "bn_conv1" else (
                    "scale_conv1" if old == "bn_conv1" else old)
            if old not in f:
                f.create_group(old)
                layers.append(old)
            f[old].create_dataset(f"{old}/{w}:0", data=arr)
        for l in layers:
            f[l].attrs["weight_names"] = np.array([f"{l}/{w}".encode() for w in f[l][l].keys()], dtype="S")
        f.attrs["layer_names"] = np.array([l.encode() for l in layers], dtype="S")
        f.attrs["keras_version"] = b"2.1.2"


def check_converted(out, tensors, dtype="f32"):
    got, meta = k2s.read_safetensors(str(out))
    assert list(got) == list(tensors), "names or canonical order differ"
    for k, v in tensors.items():
        assert got[k].shape == v.shape, k
        if dtype == "f32":
            np.testing.assert_array_equal(got[k], v, err_msg=k)
        else:
            np.testing.assert_allclose(got[k], v, rtol=1e-2 if dtype == "bf16" else 1e-3, atol=1e-2, err_msg=k)
    assert meta["dtype"] == dtype
    return meta


# ------------------------------------------------------------------ synthetic layouts

@pytest.mark.parametrize("style", ["vlen", "fixed"])
@pytest.mark.parametrize("split", [0, 3])
def test_legacy(tmp_path, style, split):
    t = make_tensors()
    write_legacy(tmp_path / "w.h5", t, style=style, split=split)
    k2s.convert(str(tmp_path / "w.h5"), str(tmp_path / "o.safetensors"))
    meta = check_converted(tmp_path / "o.safetensors", t)
    assert meta["source_format"] == "keras-legacy-h5"
    assert meta["source_file"] == "w.h5"
    assert meta["keras_version"] == ("2.21.0" if style == "vlen" else "2.2.4")
    assert float(meta["bn_epsilon"]) == 1.001e-5
    assert meta["depths"] == "2,1,1,2" and meta["head"] == "predictions"


def test_safetensors_library_reads_output(tmp_path):
    t = make_tensors()
    write_legacy(tmp_path / "w.h5", t)
    k2s.convert(str(tmp_path / "w.h5"), str(tmp_path / "o.safetensors"))
    got = load_file(str(tmp_path / "o.safetensors"))
    assert set(got) == set(t)
    for k in t:
        np.testing.assert_array_equal(got[k], t[k])
    assert got["conv1_conv/kernel"].shape == (7, 7, 3, 4)  # HWIO, untransposed


@pytest.mark.parametrize("style", ["vlen", "fixed"])
def test_legacy_nested(tmp_path, style):
    t = make_tensors()
    write_legacy(tmp_path / "w.h5", t, style=style, nested=True, split=2)
    k2s.convert(str(tmp_path / "w.h5"), str(tmp_path / "o.safetensors"))
    check_converted(tmp_path / "o.safetensors", t)


def test_legacy_full_model_keras3_writer(tmp_path):
    # model.save('x.h5'): weights under model_weights/, Keras 3 writes names without ':0'
    t = make_tensors(head=False)
    write_legacy(tmp_path / "w.h5", t, colon=False, full_model=True)
    k2s.convert(str(tmp_path / "w.h5"), str(tmp_path / "o.safetensors"))
    meta = check_converted(tmp_path / "o.safetensors", t)
    assert meta["head"] == "none"


def test_legacy_uniquified_weight_names(tmp_path):
    # A model built twice in one TF1 session writes 'conv1_conv_1/kernel:0' in group conv1_conv.
    t = make_tensors()
    write_legacy(tmp_path / "w.h5", t)
    with h5py.File(tmp_path / "w.h5", "a") as f:
        g = f["conv1_conv"]
        g.move("conv1_conv", "conv1_conv_1")
        g.attrs["weight_names"] = np.array(["conv1_conv_1/kernel:0", "conv1_conv_1/bias:0"], dtype=h5py.string_dtype())
    k2s.convert(str(tmp_path / "w.h5"), str(tmp_path / "o.safetensors"))
    check_converted(tmp_path / "o.safetensors", t)


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("names", ["vars", "layer", None])
def test_keras3(tmp_path, nested, names):
    t = make_tensors()
    write_keras3(tmp_path / "w.weights.h5", t, names=names is not None, nested=nested,
                 name_on_layer_group=names == "layer")
    k2s.convert(str(tmp_path / "w.weights.h5"), str(tmp_path / "o.safetensors"))
    meta = check_converted(tmp_path / "o.safetensors", t)
    assert meta["source_format"] == "keras3-weights-h5"
    assert ("layer order" in meta["mapped_by"]) == (names is None)


def test_keras3_archive(tmp_path):
    import zipfile
    t = make_tensors()
    write_keras3(tmp_path / "model.weights.h5", t)
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as z:
        z.write(tmp_path / "model.weights.h5", "model.weights.h5")
        z.writestr("config.json", "{}")
    k2s.convert(str(tmp_path / "m.keras"), str(tmp_path / "o.safetensors"))
    meta = check_converted(tmp_path / "o.safetensors", t)
    assert ".keras archive" in meta["source_format"]


def test_keras3_order_derivation_matches_resnet50():
    # Conv/BN ordinals for the real ResNet50 depths, spot-checked against a file Keras 3.15 wrote.
    order = k2s.resnet_layer_order((3, 4, 6, 3))
    convs = [n for n, c in order if c == "Conv2D"]
    bns = [n for n, c in order if c == "BatchNormalization"]
    assert len(convs) == len(bns) == 53
    assert convs[:6] == ["conv1_conv", "conv2_block1_1_conv", "conv2_block1_2_conv", "conv2_block1_0_conv",
                         "conv2_block1_3_conv", "conv2_block2_1_conv"]
    assert bns[13] == "conv3_block1_0_bn"
    assert sum(c == "Activation" for _, c in order) == 49 and sum(c == "Add" for _, c in order) == 16


def test_keras3_unmappable(tmp_path):
    t = make_tensors()
    write_keras3(tmp_path / "w.weights.h5", t, names=False)
    with h5py.File(tmp_path / "w.weights.h5", "a") as f:  # a 3x3 where a 1x1 projection should be
        del f["layers/conv2d_3/vars/0"]
        f["layers/conv2d_3/vars"].create_dataset("0", data=np.zeros((3, 3, 4, 4), np.float32))
    with pytest.raises(k2s.ConversionError, match=r"w\.weights\.h5: cannot map Keras 3 file by layer order"):
        k2s.convert(str(tmp_path / "w.weights.h5"), str(tmp_path / "o.safetensors"))


def test_keras3_partial_names_refused(tmp_path):
    t = make_tensors()
    write_keras3(tmp_path / "w.weights.h5", t)
    with h5py.File(tmp_path / "w.weights.h5", "a") as f:
        del f["layers/conv2d_2/vars"].attrs["name"]
    with pytest.raises(k2s.ConversionError, match="only some Keras 3 layers carry a 'name'"):
        k2s.convert(str(tmp_path / "w.weights.h5"), str(tmp_path / "o.safetensors"))


@pytest.mark.parametrize("scale_layers", [False, True])
def test_caffe_named(tmp_path, scale_layers):
    t = make_tensors(depths=(3, 4, 6, 3), widths=(1, 1, 1, 1), stem=2, classes=5)
    write_caffe(tmp_path / "old.h5", t, scale_layers=scale_layers)
    k2s.convert(str(tmp_path / "old.h5"), str(tmp_path / "o.safetensors"))
    meta = check_converted(tmp_path / "o.safetensors", t)
    assert meta["source_format"] == "keras2-legacy-h5-caffe-names"
    assert float(meta["bn_epsilon"]) == 1e-3
    assert "epsilon 1e-3" in meta["notes"]


def test_caffe_name_mapping():
    assert k2s.caffe_layer_to_modern("res2a_branch2a") == ("conv2_block1_1_conv", "conv")
    assert k2s.caffe_layer_to_modern("bn4f_branch2c") == ("conv4_block6_3_bn", "bn")
    assert k2s.caffe_layer_to_modern("scale3b_branch2b") == ("conv3_block2_2_bn", "scale")
    assert k2s.caffe_layer_to_modern("res5a_branch1") == ("conv5_block1_0_conv", "conv")
    assert k2s.caffe_layer_to_modern("res4b22_branch2a") == ("conv4_block23_1_conv", "conv")
    assert k2s.caffe_layer_to_modern("fc1000") == ("predictions", "dense")
    assert k2s.caffe_layer_to_modern("conv1_conv") is None


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_reduced_precision(tmp_path, dtype):
    t = make_tensors()
    write_legacy(tmp_path / "w.h5", t)
    k2s.convert(str(tmp_path / "w.h5"), str(tmp_path / "o.safetensors"), dtype)
    check_converted(tmp_path / "o.safetensors", t, dtype)
    with open(tmp_path / "o.safetensors", "rb") as fi:
        header = json.loads(fi.read(struct.unpack("<Q", fi.read(8))[0]))
    assert header["conv1_conv/kernel"]["dtype"] == {"f16": "F16", "bf16": "BF16"}[dtype]


def test_bf16_rounding():
    x = np.array([1.0, 1.00390625, 1.01171875, -3.5, 1e-3, np.inf], np.float32)
    back = k2s.bf16_bits_to_f32(k2s.f32_to_bf16_bits(x))
    # 1 + 2^-8 is a tie -> rounds to even (1.0); 1 + 3*2^-8 is a tie -> rounds up to 1 + 2^-6
    np.testing.assert_array_equal(back[:4], [1.0, 1.0, 1.015625, -3.5])
    assert abs(back[4] - 1e-3) / 1e-3 < 4e-3 and np.isinf(back[5])


# ------------------------------------------------------------------ errors

def _convert_error(tmp_path, fname):
    with pytest.raises(k2s.ConversionError) as e:
        k2s.convert(str(tmp_path / fname), str(tmp_path / "o.safetensors"))
    assert fname in str(e.value)
    assert not (tmp_path / "o.safetensors").exists()
    return str(e.value)


def test_error_missing_tensor(tmp_path):
    t = make_tensors()
    del t["conv3_block1_2_bn/moving_variance"]
    write_legacy(tmp_path / "w.h5", t)
    assert "missing tensors: conv3_block1_2_bn/moving_variance" in _convert_error(tmp_path, "w.h5")


def test_error_listed_dataset_absent(tmp_path):
    t = make_tensors()
    write_legacy(tmp_path / "w.h5", t)
    with h5py.File(tmp_path / "w.h5", "a") as f:
        del f["conv1_bn/conv1_bn/beta:0"]
    assert "conv1_bn/beta:0" in _convert_error(tmp_path, "w.h5")


def test_error_wrong_layout(tmp_path):
    t = make_tensors()
    t["conv2_block1_2_conv/kernel"] = np.ascontiguousarray(t["conv2_block1_2_conv/kernel"].transpose(3, 2, 0, 1))
    write_legacy(tmp_path / "w.h5", t)
    assert "conv2_block1_2_conv/kernel" in _convert_error(tmp_path, "w.h5")


def test_error_extra_layer(tmp_path):
    write_legacy(tmp_path / "w.h5", make_tensors())
    with h5py.File(tmp_path / "w.h5", "a") as f:  # a ResNetV2 layer
        g = f.create_group("post_bn")
        g.attrs["weight_names"] = np.array(["post_bn/gamma:0"], dtype=h5py.string_dtype())
        g.create_dataset("post_bn/gamma:0", data=np.ones(4, np.float32))
        f.attrs["layer_names"] = np.array(list(f.attrs["layer_names"]) + ["post_bn"], dtype=h5py.string_dtype())
    assert "post_bn/gamma" in _convert_error(tmp_path, "w.h5")


def test_error_theano(tmp_path):
    write_legacy(tmp_path / "w.h5", make_tensors())
    with h5py.File(tmp_path / "w.h5", "a") as f:
        f.attrs["backend"] = "theano"
    assert "Theano" in _convert_error(tmp_path, "w.h5")


def test_error_not_keras(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("a", data=np.zeros(3))
    assert "neither a legacy Keras h5" in _convert_error(tmp_path, "x.h5")


def test_cli_exit_code(tmp_path):
    write_legacy(tmp_path / "w.h5", make_tensors(), split=2)
    ok = subprocess.run([sys.executable, os.path.join(HERE, "keras_to_safetensors.py"), str(tmp_path / "w.h5"),
                         str(tmp_path / "o.safetensors"), "--dtype", "f16"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, os.path.join(HERE, "keras_to_safetensors.py"), str(tmp_path / "none.h5"),
                          str(tmp_path / "p.safetensors")], capture_output=True, text=True)
    assert bad.returncode == 1 and "none.h5" in bad.stderr and "Traceback" not in bad.stderr


# ------------------------------------------------------------------ reverse converter

def test_reverse_round_trip(tmp_path):
    t = make_tensors()
    write_legacy(tmp_path / "w.h5", t)
    k2s.convert(str(tmp_path / "w.h5"), str(tmp_path / "a.safetensors"))
    assert s2k.main([str(tmp_path / "a.safetensors"), str(tmp_path / "back.h5")]) == 0
    s2k.write_legacy_h5(str(tmp_path / "split.h5"), t, chunk_limit=200)  # forces layer_names0, 1, ...
    with h5py.File(tmp_path / "split.h5") as f:
        assert "layer_names" not in f.attrs and "layer_names1" in f.attrs
        assert f["conv1_bn"]["conv1_bn"]["moving_variance:0"].shape == (4,)
    for name in ("back.h5", "split.h5"):
        k2s.convert(str(tmp_path / name), str(tmp_path / "b.safetensors"))
        check_converted(tmp_path / "b.safetensors", t)


# ------------------------------------------------------------------ real Keras files

def _have_tf():
    try:
        import importlib.util
        return all(importlib.util.find_spec(m) for m in ("tensorflow", "tf_keras", "keras"))
    except Exception:
        return False


needs_tf = pytest.mark.skipif(not _have_tf(), reason="TensorFlow / tf_keras / Keras 3 not installed")

_REAL_SCRIPT = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.path.insert(0, {here!r})
    import numpy as np, tf_keras, keras
    import keras_resnet as kr
    out = {out!r}
    m2 = kr.applications_resnet50_with_head(tf_keras, (32, 32, 3), 10)
    w = kr.seeded_weights(m2, 7)
    kr.assign_weights(m2, w)
    m2.save_weights(os.path.join(out, "tfk.h5"))
    nested = tf_keras.Sequential([tf_keras.applications.ResNet50(weights=None, include_top=False,
                                  input_shape=(32, 32, 3)),
                                  tf_keras.layers.GlobalAveragePooling2D(name="avg_pool"),
                                  tf_keras.layers.Dense(10, activation="softmax", name="predictions")])
    nested.layers[0]._name = "resnet50"
    for k, v in kr.named_weights(nested.layers[0]).items(): v.assign(w[k])
    nested.layers[-1].set_weights([w["predictions/kernel"], w["predictions/bias"]])
    nested.save_weights(os.path.join(out, "tfk_nested.h5"))
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype(np.float32)
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "pred.npy"), m2.predict(x, verbose=0))
    m3 = kr.applications_resnet50_with_head(keras, (32, 32, 3), 10)
    kr.assign_weights(m3, w)
    m3.save_weights(os.path.join(out, "k3.weights.h5"))
    np.savez(os.path.join(out, "w.npz"), **w)
""")


@pytest.fixture(scope="module")
def real_files(tmp_path_factory):
    if not _have_tf():
        pytest.skip("TensorFlow not installed")
    out = tmp_path_factory.mktemp("real")
    r = subprocess.run([sys.executable, "-c", _REAL_SCRIPT.format(here=HERE, out=str(out))],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    w = dict(np.load(out / "w.npz"))
    order = k2s.weighted_layer_order((3, 4, 6, 3), True)
    return out, {f"{l}/{n}": w[f"{l}/{n}"] for l in order for n in k2s.weight_names_of(l)}


@needs_tf
@pytest.mark.parametrize("fname", ["tfk.h5", "tfk_nested.h5"])
def test_real_tf_keras(real_files, fname):
    out, w = real_files
    k2s.convert(str(out / fname), str(out / "o.safetensors"))
    meta = check_converted(out / "o.safetensors", w)
    assert meta["keras_version"].startswith("2.") and meta["depths"] == "3,4,6,3"


@needs_tf
def test_real_keras3_with_and_without_names(real_files):
    out, w = real_files
    k2s.convert(str(out / "k3.weights.h5"), str(out / "o.safetensors"))
    assert check_converted(out / "o.safetensors", w)["mapped_by"] == "name attribute"
    shutil.copy(out / "k3.weights.h5", out / "k3_noname.weights.h5")
    with h5py.File(out / "k3_noname.weights.h5", "a") as f:
        f.visititems(lambda n, o: o.attrs.__delitem__("name") if "name" in o.attrs else None)
    k2s.convert(str(out / "k3_noname.weights.h5"), str(out / "o2.safetensors"))
    assert "layer order" in check_converted(out / "o2.safetensors", w)["mapped_by"]


@needs_tf
def test_real_reverse_loads_into_tf_keras(real_files):
    out, w = real_files
    k2s.convert(str(out / "k3.weights.h5"), str(out / "o.safetensors"))
    s2k.main([str(out / "o.safetensors"), str(out / "back.h5")])
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        sys.path.insert(0, {HERE!r})
        import numpy as np, tf_keras, keras_resnet as kr, keras_to_safetensors as k2s, safetensors_to_keras as s2k
        t, _ = k2s.read_safetensors({str(out / 'o.safetensors')!r})
        print("\\n".join(s2k.verify({str(out / 'back.h5')!r}, t)))
        m = kr.applications_resnet50_with_head(tf_keras, (32, 32, 3), 10)
        m.load_weights({str(out / 'back.h5')!r})
        p = m.predict(np.load({str(out / 'x.npy')!r}), verbose=0)
        print("maxdiff", float(np.max(np.abs(p - np.load({str(out / 'pred.npy')!r})))))
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("weights identical") == 2
    assert float(r.stdout.split("maxdiff")[1]) == 0.0
