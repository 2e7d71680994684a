#!/usr/bin/env python3
"""Writes tiny ONNX models for framepipe-handpose's tests (python3-onnx, python3-numpy).

    make_test_models.py OUTDIR

classifier.onnx               input 1x30x21x3 -> 6 scores: score = bias + mean(input) on "wave"
                              (bias 0.1, 0.2, 0.3, 0, 0, 0): zeros -> swipe_right, all 0.5 -> wave
classifier_wrong_input.onnx   input 1x20x21x3 -> 6 scores
classifier_wrong_output.onnx  input 1x30x21x3 -> 5 scores
landmarks.onnx                input 1x3x64x64 -> 63 values: bias + 0.1 * channel means
                              (bias: point j = (0.2 + 0.03 j, 0.3 + 0.02 j, 0.01 j))
landmarks_wrong_output.onnx   input 1x3x64x64 -> 10 values
not_a_model.onnx              text, not ONNX
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(model, path):
    onnx.checker.check_model(model)
    onnx.save(model, path)


def classifier(frames, outputs):
    n = frames * 21 * 3
    w = np.zeros((outputs, n), dtype=np.float32)  # Gemm with transB=1, as cv::dnn expects
    if outputs > 3:
        w[3, :] = 1.0 / n
    b = np.zeros((outputs,), dtype=np.float32)
    b[:3] = [0.1, 0.2, 0.3][: min(3, outputs)]
    nodes = [
        helper.make_node("Reshape", ["input", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "W", "B"], ["scores"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, frames, 21, 3])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, outputs])],
        [
            numpy_helper.from_array(np.array([1, n], dtype=np.int64), "shape"),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def landmarks(outputs):
    w = np.full((outputs, 3), 0.1, dtype=np.float32)
    b = np.zeros((outputs,), dtype=np.float32)
    if outputs == 63:
        for j in range(21):
            b[3 * j : 3 * j + 3] = [0.2 + 0.03 * j, 0.3 + 0.02 * j, 0.01 * j]
    nodes = [
        # The round trip through a fixed flat shape makes the model refuse any other input size.
        helper.make_node("Reshape", ["input", "flat_shape"], ["flat_input"]),
        helper.make_node("Reshape", ["flat_input", "image_shape"], ["image"]),
        helper.make_node("GlobalAveragePool", ["image"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "B"], ["points"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "landmarks",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("points", TensorProto.FLOAT, [1, outputs])],
        [
            numpy_helper.from_array(np.array([1, 3 * 64 * 64], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(np.array([1, 3, 64, 64], dtype=np.int64), "image_shape"),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    save(classifier(30, 6), os.path.join(out, "classifier.onnx"))
    save(classifier(20, 6), os.path.join(out, "classifier_wrong_input.onnx"))
    save(classifier(30, 5), os.path.join(out, "classifier_wrong_output.onnx"))
    save(landmarks(63), os.path.join(out, "landmarks.onnx"))
    save(landmarks(10), os.path.join(out, "landmarks_wrong_output.onnx"))
    with open(os.path.join(out, "not_a_model.onnx"), "w") as f:
        f.write("this is not an ONNX model\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
