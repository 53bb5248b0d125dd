"""Writes, for each model of Keras's ResNet family (no top, 32x32 input):

- `keras_<model>_params.txt`: the name and shape of every weight, in Keras's
  order, plus Keras's own parameter count;
- `keras_<model>_layers.txt`: every layer's name, class and output shape (batch
  dimension dropped), in Keras's order: the topology.

The Rust tests `nn/tests/resnet50_structure.rs` and `nn/tests/resnet_family.rs`
check our builders against these lists, so the names, shapes and topology come
from Keras itself, not from our reading of its source.

Keras leaves one layer of ResNet V2 unnamed: the 1x1 max pool that subsamples
the shortcut of a stage's striding last block, auto-named `max_pooling2d_N` with
a counter that depends on what else the session built. The layer list names it
after the block whose `_out` add it feeds, `<block>_0_pool` (our name), and keeps
Keras's in a `keras_name=` column.

    python tools/list_keras_params.py tests/fixtures            # all six
    python tools/list_keras_params.py tests/fixtures resnet50v2 # just one
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf
import tf_keras as keras

MODELS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
    "resnet50v2": keras.applications.ResNet50V2,
    "resnet101v2": keras.applications.ResNet101V2,
    "resnet152v2": keras.applications.ResNet152V2,
}


def write_params(name, out_path):
    keras.backend.clear_session()  # restart Keras's automatic layer-name counters
    model = MODELS[name](weights=None, include_top=False, input_shape=(32, 32, 3))
    ctor = MODELS[name].__name__
    lines = [f"# keras {keras.__version__} {ctor}(include_top=False, input_shape=(32, 32, 3))",
             f"# count_params {model.count_params()}"]
    for w in model.weights:
        wname = w.name.removesuffix(":0")
        lines.append(f"{wname} {','.join(str(d) for d in w.shape)}")
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{name}: wrote {len(model.weights)} weights, {model.count_params()} parameters to {out_path}")
    return model


def consumers(model, layer):
    """Names of the layers that take `layer`'s output as an input."""
    out = []
    for other in model.layers:
        for node in other._inbound_nodes:
            if any(t is layer.output for t in tf.nest.flatten(node.input_tensors)):
                out.append(other.name)
    return out


def write_layers(model, out_path):
    lines = [f"# {model.name}: layer class output_shape (without the batch dimension)"]
    for layer in model.layers[1:]:  # [0] is the input
        shape = ",".join(str(d) for d in layer.output.shape[1:])
        cls = type(layer).__name__
        if layer.name.startswith("max_pooling2d"):
            (add,) = consumers(model, layer)
            if not add.endswith("_out"):
                raise SystemExit(f"{layer.name} feeds {add}, not a block's _out")
            lines.append(f"{add.removesuffix('_out')}_0_pool {cls} {shape} keras_name={layer.name}")
        else:
            lines.append(f"{layer.name} {cls} {shape}")
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"  wrote {len(lines) - 1} layers to {out_path}")


def main(out_dir, names):
    for name in names or MODELS:
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}; one of {', '.join(MODELS)}")
        model = write_params(name, os.path.join(out_dir, f"keras_{name}_params.txt"))
        write_layers(model, os.path.join(out_dir, f"keras_{name}_layers.txt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
