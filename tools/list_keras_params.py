"""Writes the name and shape of every weight of Keras ResNet50 (no top, 32x32
input), in Keras's order, plus Keras's own parameter count.

The Rust test `nn/tests/resnet50_names.rs` checks our builder against this
list, so the names and shapes come from Keras itself, not from our reading of
its source.

    python tools/list_keras_params.py tests/fixtures/keras_resnet50_params.txt
"""
import sys

import tf_keras as keras


def main(out_path):
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    lines = [f"# keras {keras.__version__} ResNet50(include_top=False, input_shape=(32, 32, 3))",
             f"# count_params {model.count_params()}"]
    for w in model.weights:
        name = w.name.removesuffix(":0")
        lines.append(f"{name} {','.join(str(d) for d in w.shape)}")
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(model.weights)} weights, {model.count_params()} parameters to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1])
