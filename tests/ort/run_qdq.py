"""Runs a QDQ ONNX model that `qcc export` wrote in ONNX Runtime, the real client: checks it with
the ONNX checker, runs it with graph optimizations on (ONNX Runtime fuses the QDQ units into its
int8 kernels) and off (the QDQ pairs run in float), and writes both outputs.

usage: run_qdq.py MODEL.onnx INPUT.npy OUT_PREFIX
INPUT.npy holds network inputs (f32), or u8 pixels [N, 3, H, W] that get the preprocessing the
model's metadata records (qcc.preprocess.mean and .std, on pixels scaled to [0, 1]). Writes OUT_PREFIX.kernels.npy and OUT_PREFIX.float.npy; prints one JSON line: the ops of the
optimized graph by type."""
import collections
import json
import os
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

model_path, input_path, prefix = sys.argv[1:4]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
x = np.load(input_path)
if x.dtype == np.uint8:
    meta = {p.key: p.value for p in model.metadata_props}
    mean, std = (np.array([float(v) for v in meta[f"qcc.preprocess.{k}"].split(",")], np.float32).reshape(1, 3, 1, 1) for k in ("mean", "std"))
    x = (x.astype(np.float32) / 255.0 - mean) / std
x = x.astype(np.float32)
ops = {}
for tag, level in (("kernels", ort.GraphOptimizationLevel.ORT_ENABLE_ALL), ("float", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.log_severity_level = 3
    if tag == "kernels":
        optimized = os.path.join(tempfile.mkdtemp(), "optimized.onnx")
        opts.optimized_model_filepath = optimized
    session = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    np.save(f"{prefix}.{tag}.npy", session.run(None, {name: x})[0].astype(np.float32))
    if tag == "kernels":
        ops = collections.Counter(n.op_type for n in onnx.load(optimized).graph.node)
print(json.dumps(ops))
