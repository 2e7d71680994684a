#!/usr/bin/env python3
"""Generates tiny YOLO-layout models for framepipe-detect's tests (Debian's python3-onnx).

    make_models.py OUTDIR

Writes, into OUTDIR:
  yolov8.onnx     input [1,3,64,64], output [1, 4+3, 16]  (YOLOv8 layout: attributes first)
  yolov5.onnx     input [1,3,64,64], output [1, 16, 5+3]  (YOLOv5 layout: objectness)
  yolov8_batch.onnx  input [batch,3,64,64] (a dynamic batch), output [batch, 4+3, 16]: the
                  same candidates for every frame (framepipe-multicam's --batch)
  not_yolo.onnx   input [1,3,64,64], output [1, 3, 1, 1]  (a valid model, not a YOLO layout)
  broken.onnx     random bytes
  unknown_op.onnx a well-formed ONNX file with an operator OpenCV does not know (its importer
                  logs an error line of its own before it throws)
  tiny.cfg + tiny.weights   Darknet: maxpool to a 2x2 grid, a 1x1 convolution, a [yolo] layer
                            with one 8x8 anchor and 2 classes; input 32x32
  names.txt       three class names

The ONNX models ignore their input (zero weights) and always output the same candidates, so
the tests know the exact answer. In network-input pixels (64x64):
  A  class 1, cx 32, cy 32, w 20, h 10, score 0.9        kept
  B  class 1, cx 33, cy 32, w 20, h 10, score 0.6        suppressed by A (same class, IoU 0.9)
  C  class 2, cx 33, cy 32, w 20, h 10, score 0.7        kept (another class: class-wise NMS)
  D  class 0, cx 10, cy 40, w  8, h  8, score 0.1        below the 0.25 threshold
On a 128x64 frame (letterbox: scale 0.5, 16 px of padding top and bottom) A maps to
x 44, y 22, w 40, h 20 and C to x 46, y 22, w 40, h 20.

The Darknet model's output is the same in every cell: a box of the anchor's size (8x8 input px)
at the cell's centre, objectness sigmoid(4), class 0 sigmoid(4), class 1 sigmoid(-4).
"""
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASSES = 3
N = 16
# (class, cx, cy, w, h, objectness, class score): score = objectness * class score for v5,
# class score alone for v8 (where objectness * class score is used as the class score).
CANDIDATES = [
    (1, 32, 32, 20, 10, 0.9, 1.0),
    (1, 33, 32, 20, 10, 1.0, 0.6),
    (2, 33, 32, 20, 10, 0.7, 1.0),
    (0, 10, 40, 8, 8, 0.1, 1.0),
]


def constant_model(values: np.ndarray, out_shape, path: str, batch=1) -> None:
    """A model whose output is `values` reshaped to out_shape, whatever the input. batch: 1, or
    a name for a dynamic batch dimension (out_shape[0] is then -1 in the Reshape)."""
    k = int(values.size)
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch] + list(out_shape[1:]))
    if batch != 1:
        out_shape = [-1] + list(out_shape[1:])
    weight = numpy_helper.from_array(np.zeros((k, 3, 1, 1), np.float32), "w")
    bias = numpy_helper.from_array(values.reshape(-1).astype(np.float32), "b")
    shape = numpy_helper.from_array(np.array(out_shape, np.int64), "shape")
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Conv", ["pooled", "w", "b"], ["conv"], kernel_shape=[1, 1]),
        helper.make_node("Reshape", ["conv", "shape"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, "tiny", [x], [y], [weight, bias, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.checker.check_model(model)
    onnx.save(model, path)


def unknown_op(path: str) -> None:
    """One node of an operator no ONNX importer knows: the file parses, the graph does not."""
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + CLASSES, N])
    node = helper.make_node("NoSuchOperator", ["images"], ["output0"])
    graph = helper.make_graph([node], "unknown", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    onnx.save(model, path)


def v8_values() -> np.ndarray:
    t = np.zeros((4 + CLASSES, N), np.float32)
    for i, (cls, cx, cy, w, h, obj, score) in enumerate(CANDIDATES):
        t[0:4, i] = (cx, cy, w, h)
        t[4 + cls, i] = obj * score
    return t


def v5_values() -> np.ndarray:
    t = np.zeros((N, 5 + CLASSES), np.float32)
    for i, (cls, cx, cy, w, h, obj, score) in enumerate(CANDIDATES):
        t[i, 0:5] = (cx, cy, w, h, obj)
        t[i, 5 + cls] = score
    return t


def darknet(outdir: str) -> None:
    cfg = """[net]
width=32
height=32
channels=3

[maxpool]
size=16
stride=16

[convolutional]
filters=7
size=1
stride=1
pad=0
activation=linear

[yolo]
mask=0
anchors=8,8
classes=2
num=1
"""
    with open(os.path.join(outdir, "tiny.cfg"), "w", encoding="ascii") as f:
        f.write(cfg)
    # Header: major 0, minor 2, revision 0, images seen (64-bit from version 0.2 on).
    biases = np.array([0, 0, 0, 0, 4, 4, -4], np.float32)  # x, y, w, h, objectness, 2 classes
    weights = np.zeros((7, 3, 1, 1), np.float32)
    with open(os.path.join(outdir, "tiny.weights"), "wb") as f:
        f.write(struct.pack("<iiiQ", 0, 2, 0, 0))
        f.write(biases.tobytes())
        f.write(weights.tobytes())


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    constant_model(v8_values(), [1, 4 + CLASSES, N], os.path.join(outdir, "yolov8.onnx"))
    constant_model(v5_values(), [1, N, 5 + CLASSES], os.path.join(outdir, "yolov5.onnx"))
    constant_model(v8_values(), [1, 4 + CLASSES, N], os.path.join(outdir, "yolov8_batch.onnx"),
                   batch="batch")
    constant_model(np.ones(3, np.float32), [1, 3, 1, 1], os.path.join(outdir, "not_yolo.onnx"))
    with open(os.path.join(outdir, "broken.onnx"), "wb") as f:
        f.write(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    unknown_op(os.path.join(outdir, "unknown_op.onnx"))
    darknet(outdir)
    with open(os.path.join(outdir, "names.txt"), "w", encoding="ascii") as f:
        f.write("cat\ndog\nbird\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
