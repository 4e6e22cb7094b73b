#!/usr/bin/env python3
"""Writes the importer's test models to tests/filetests/onnx/: one small ONNX model per supported
op and attribute variant, each with an input (NAME.input.npy) and ONNX Runtime's output for it
(NAME.output.npy), plus models qcc must reject (error_*.onnx).

Run from anywhere: python3 bench/make_onnx_fixtures.py (installs bench/requirements.txt).
The outputs are deterministic; the files are committed.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")], check=True)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

OUT = os.path.join(HERE, "..", "tests", "filetests", "onnx")
rng = np.random.RandomState(0)


def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def rand(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def model(name, nodes, inputs, outputs, inits=(), opset=13, metadata=None):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="qcc-fixtures")
    m.ir_version = 8
    if metadata:
        helper.set_model_props(m, metadata)
    return m


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def save(name, m, feeds=None):
    path = os.path.join(OUT, name + ".onnx")
    onnx.save(m, path)
    if feeds is None:
        return
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)[0]
    (inp,) = feeds.values()
    np.save(os.path.join(OUT, name + ".input.npy"), inp)
    np.save(os.path.join(OUT, name + ".output.npy"), out.astype(np.float32))


def single(name, node, in_shape, out_shape, inits=(), opset=13, batch=2, extra_nodes=()):
    """A model whose graph input 'x' feeds `node` (and whose output is 'y')."""
    shape = [batch] + list(in_shape[1:])
    m = model(name, list(extra_nodes) + [node], [vi("x", in_shape)], [vi("y", out_shape)], inits, opset)
    save(name, m, {"x": rand(*shape)})


N = "N"  # a symbolic batch dimension
x4 = [N, 4, 7, 7]

# Convolutions.
w = rand(6, 4, 3, 3, scale=0.3)
b = rand(6)
single("conv_pads_strides_bias", helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]), x4, None, [init("w", w), init("b", b)])
single("conv_no_bias", helper.make_node("Conv", ["x", "w"], ["y"], name="conv"), x4, None, [init("w", w)])
single("conv_asymmetric_pads", helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 0, 1, 1], strides=[2, 2]), x4, None, [init("w", w)])
single("conv_dilations", helper.make_node("Conv", ["x", "w", "b"], ["y"], dilations=[2, 2], pads=[2, 1, 2, 1]), x4, None, [init("w", w), init("b", b)])
single("conv_depthwise", helper.make_node("Conv", ["x", "wd"], ["y"], group=4, pads=[1, 1, 1, 1]), x4, None, [init("wd", rand(4, 1, 3, 3))])
single("conv_groups", helper.make_node("Conv", ["x", "wg"], ["y"], group=2, kernel_shape=[3, 3]), x4, None, [init("wg", rand(6, 2, 3, 3))])
for mode in ["SAME_UPPER", "SAME_LOWER", "VALID"]:
    single("conv_auto_pad_" + mode.lower(), helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, strides=[2, 2]), x4, None, [init("w", w)])
bn = [init("s", rand(6) + 1.5), init("bb", rand(6)), init("mu", rand(6)), init("var", np.abs(rand(6)) + 0.1)]
single("conv_batchnorm", helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["y"], epsilon=1e-3), x4, None, [init("w", w)] + bn,
       extra_nodes=[helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])])

# Activations.
single("relu", helper.make_node("Relu", ["x"], ["y"]), x4, x4)
single("clip_inputs", helper.make_node("Clip", ["x", "lo", "hi"], ["y"]), x4, x4, [init("lo", np.float32(0.0)), init("hi", np.float32(0.6))])
single("clip_min_only", helper.make_node("Clip", ["x", "lo"], ["y"]), x4, x4, [init("lo", np.float32(-0.2))])
single("clip_max_only", helper.make_node("Clip", ["x", "", "hi"], ["y"]), x4, x4, [init("hi", np.float32(0.25))])
single("clip_constant_node", helper.make_node("Clip", ["x", "z", "six"], ["y"]), x4, x4, opset=11, extra_nodes=[
    helper.make_node("Constant", [], ["z"], value=numpy_helper.from_array(np.float32(0.0))),
    helper.make_node("Constant", [], ["six"], value_float=6.0)])
single("sigmoid", helper.make_node("Sigmoid", ["x"], ["y"]), x4, x4)
single("hardswish", helper.make_node("HardSwish", ["x"], ["y"]), x4, x4, opset=14)
single("hardsigmoid", helper.make_node("HardSigmoid", ["x"], ["y"], alpha=0.3, beta=0.4), x4, x4)

# Elementwise with broadcasting.
single("add_channel_bias", helper.make_node("Add", ["x", "cb"], ["y"]), x4, x4, [init("cb", rand(4, 1, 1))])
single("sub_scalar", helper.make_node("Sub", ["x", "k"], ["y"]), x4, x4, [init("k", np.float32(0.5))])
single("mul_constant_node", helper.make_node("Mul", ["x", "k"], ["y"]), x4, x4,
       extra_nodes=[helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(rand(1, 4, 1, 1)))])
single("div_row", helper.make_node("Div", ["x", "d"], ["y"]), x4, x4, [init("d", np.abs(rand(7)) + 0.5)])
m = model("add_two_paths", [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Add", ["r", "s"], ["y"])],
          [vi("x", x4)], [vi("y", x4)])
save("add_two_paths", m, {"x": rand(2, 4, 7, 7)})

# Pooling.
single("global_average_pool", helper.make_node("GlobalAveragePool", ["x"], ["y"]), x4, None)
single("average_pool_pads", helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), x4, None)
single("average_pool_count_include_pad", helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1), x4, None)
single("average_pool_ceil", helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1), x4, None)
single("max_pool", helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), x4, None)
single("max_pool_same_upper", helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER"), x4, None)
single("max_pool_dilations", helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2]), x4, None)

# Matrix products.
x2 = [N, 8]
single("gemm_transb_bias", helper.make_node("Gemm", ["x", "gw", "gb"], ["y"], transB=1), x2, None, [init("gw", rand(5, 8)), init("gb", rand(5))])
single("gemm_alpha_beta", helper.make_node("Gemm", ["x", "gk", "gc"], ["y"], alpha=0.5, beta=2.0), x2, None, [init("gk", rand(8, 5)), init("gc", rand(1, 5))])
single("gemm_scalar_c", helper.make_node("Gemm", ["x", "gk", "g1"], ["y"]), x2, None, [init("gk", rand(8, 5)), init("g1", np.float32(0.3))])
single("gemm_full_c", helper.make_node("Gemm", ["x", "gk", "gfull"], ["y"], transA=1), [8, 2], None, [init("gk", rand(8, 5)), init("gfull", rand(2, 5))], batch=8)
single("matmul_constant", helper.make_node("MatMul", ["x", "mk"], ["y"]), x2, None, [init("mk", rand(8, 3))])
m = model("matmul_two_inputs", [helper.make_node("MatMul", ["x", "z"], ["y"])], [vi("x", [2, 8])], [vi("y", None)], [init("z", rand(8, 3))])
save("matmul_two_inputs", m, {"x": rand(2, 8)})

# Layout.
single("flatten", helper.make_node("Flatten", ["x"], ["y"]), x4, None)
single("flatten_negative_axis", helper.make_node("Flatten", ["x"], ["y"], axis=-2), x4, None)
single("reshape_zero_and_minus_one", helper.make_node("Reshape", ["x", "shape"], ["y"]), x4, None, [init("shape", np.array([0, -1, 7], np.int64))])
single("transpose", helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 3, 1]), x4, None)
single("transpose_default", helper.make_node("Transpose", ["x"], ["y"]), x4, None)
single("concat", helper.make_node("Concat", ["x", "x2"], ["y"], axis=1), x4, None, extra_nodes=[helper.make_node("Relu", ["x"], ["x2"])])
single("concat_negative_axis", helper.make_node("Concat", ["x", "x2"], ["y"], axis=-1), x4, None, extra_nodes=[helper.make_node("Sigmoid", ["x"], ["x2"])])
single("softmax_last_axis", helper.make_node("Softmax", ["x"], ["y"]), x2, x2)
single("softmax_opset11_axis1", helper.make_node("Softmax", ["x"], ["y"], axis=1), x4, x4, opset=11)
single("softmax_opset13_axis1", helper.make_node("Softmax", ["x"], ["y"], axis=1), x4, x4)
single("pad_constant", helper.make_node("Pad", ["x", "pads", "cv"], ["y"]), x4, None, [init("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)), init("cv", np.float32(0.5))])
single("pad_reflect", helper.make_node("Pad", ["x", "pads"], ["y"], mode="reflect"), x4, None, [init("pads", np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64))])
single("pad_edge", helper.make_node("Pad", ["x", "pads"], ["y"], mode="edge"), x4, None, [init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))])
single("pad_axes", helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"]), x4, None, [init("pads", np.array([1, 2, 0, 1], np.int64)), init("axes", np.array([2, 3], np.int64))], opset=18)

# Pass-through ops and model-level variants.
single("identity_dropout", helper.make_node("Dropout", ["i"], ["y"]), x4, x4, extra_nodes=[helper.make_node("Identity", ["x"], ["i"])])
single("opset21_relu", helper.make_node("Relu", ["x"], ["y"]), x4, x4, opset=21)
m = model("preprocess_metadata", [helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 3, 8, 8])], [vi("y", [1, 3, 8, 8])], metadata={"qcc.preprocess": "torch"})
save("preprocess_metadata", m, {"x": rand(1, 3, 8, 8)})

# Models qcc must reject, each with a clear error.
save("error_unsupported_op", model("bad", [helper.make_node("LSTM", ["x", "w", "r"], ["y"], name="lstm_1")], [vi("x", [1, 2, 3])], [vi("y", None)], [init("w", rand(1, 4, 3)), init("r", rand(1, 4, 1))]))
save("error_missing_initializer", model("bad", [helper.make_node("Conv", ["x", "nowhere"], ["y"], name="conv_1")], [vi("x", x4)], [vi("y", None)]))
save("error_opset_10", model("bad", [helper.make_node("Relu", ["x"], ["y"])], [vi("x", x4)], [vi("y", x4)], opset=10))
save("error_symbolic_height", model("bad", [helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4, "H", 7])], [vi("y", None)]))
save("error_dynamic_reshape", model("bad", [helper.make_node("Relu", ["t"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape_1")], [vi("x", x4), vi("t", [2])], [vi("y", None)]))
save("error_int_input", model("bad", [helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 4], TensorProto.INT64)], [vi("y", None)]))
save("error_clip_dynamic_bound", model("bad", [helper.make_node("Sigmoid", ["t"], ["m"]), helper.make_node("Clip", ["x", "", "m"], ["y"], name="clip_1")], [vi("x", x4), vi("t", [])], [vi("y", None)]))
good = model("cut", [helper.make_node("Conv", ["x", "w"], ["y"])], [vi("x", x4)], [vi("y", None)], [init("w", w)]).SerializeToString()
with open(os.path.join(OUT, "error_truncated.onnx"), "wb") as f:
    f.write(good[: len(good) // 2])
with open(os.path.join(OUT, "error_not_onnx.onnx"), "wb") as f:
    f.write(b"this is a text file, not a protobuf\n")
print("wrote", len([n for n in os.listdir(OUT) if n.endswith(".onnx")]), "models to", os.path.normpath(OUT))
