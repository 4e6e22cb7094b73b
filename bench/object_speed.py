#!/usr/bin/env python3
"""`qcc build`'s object files on the kit's MobileNetV2, all in one run on this machine:

- build time of the object (the whole `qcc build` command from a quantized .ir, median of 3);
- object size against the module's weight bytes (its safetensors file), per target;
- batch-1 latency on one thread, median of RUNS: a C program linked with the object
  (tests/c/harness.c, `cc -O2`) against `qcc run --latency` on the JIT engine and ONNX Runtime's
  int8 kernels on the same network quantized by its own `quantize_static`;
- exactness: every eval image through the linked object against `qcc run -o`, byte for byte
  (the AArch64 object cross-compiled and run under qemu-aarch64 on the first 64 eval images).

The modules are qcc's `quantize` with its default options (what bench/engine_speed.py times)
and `bias-correct` per tensor and per channel. Writes its tables to bench/RESULTS.md between
the object markers.

Run (in a virtual environment with bench/requirements.txt):
    python3 bench/object_speed.py [--kit ../shared/eval] [--runs 200]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from peer_models import ort_model  # noqa: E402
from results import release_qcc, run_measured, update_section  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kit", default=os.path.join(ROOT, "..", "shared", "eval"))
parser.add_argument("--runs", type=int, default=200)
args = parser.parse_args()
kit = os.path.normpath(args.kit)
QCC = release_qcc()
tmp = tempfile.mkdtemp()
onnx_path = os.path.join(kit, "mobilenet_v2.onnx")
calib_path = os.path.join(kit, "calib.npy")
eval_path = os.path.join(kit, "eval.npy")
calib = np.load(calib_path).astype(np.float32) / 127.5 - 1
evals = np.load(eval_path).astype(np.float32) / 127.5 - 1
CC = os.environ.get("CC", "cc")


def qcc(*argv):
    return run_measured([QCC, *argv])


def ort_latency(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = {"input": calib[:1]}
    for _ in range(3):
        s.run(None, x)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        s.run(None, x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def jit_latency(model):
    _, _, out = qcc("run", model, "--input", calib_path, "--top", "0", "--quiet", "--threads", "1",
                    "--latency", str(args.runs))
    m = re.search(r"median ([0-9.]+) ms", out)
    if m is None:
        sys.exit(f"no latency line in:\n{out}")
    return float(m.group(1))


# The input files the harness reads: the first calibration image, and every eval image.
first = os.path.join(tmp, "first.f32")
calib[:1].tofile(first)
all_evals = os.path.join(tmp, "eval.f32")
evals.tofile(all_evals)

ort_q = os.path.join(tmp, "ort_q.onnx")
ort_model(onnx_path, calib, ort_q, True, tmp)
ort_ms = ort_latency(ort_q)

pipelines = [
    ("quantize (default options, as engine_speed.py)", "quantize"),
    ("per-channel, bias-correct", "quantize{granularity=per-channel},bias-correct"),
    ("per-tensor, bias-correct", "quantize{granularity=per-tensor},bias-correct"),
]
rows, sizes, exact = [], [], []
for label, pipeline in pipelines:
    tag = re.sub(r"[^a-z]+", "_", label)
    q_ir = os.path.join(tmp, f"{tag}.ir")
    qcc(f"--passes={pipeline}", "--calib", calib_path, onnx_path, "--preprocess", "tf", "-o", q_ir)
    obj = os.path.join(tmp, f"{tag}", "model.o")
    os.makedirs(os.path.dirname(obj))
    build_s = statistics.median(qcc("build", q_ir, "-o", obj)[0] for _ in range(3))
    harness = os.path.join(tmp, tag, "harness")
    subprocess.run([CC, "-std=c99", "-O2", "-I", os.path.dirname(obj),
                    os.path.join(ROOT, "tests", "c", "harness.c"), obj, "-o", harness], check=True)
    out = subprocess.run([harness, "f32", first, os.path.join(tmp, tag, "first.out"), str(args.runs)],
                         capture_output=True, text=True, check=True).stdout
    c_ms = float(re.search(r"median ([0-9.]+) ms", out).group(1))
    jit_ms = jit_latency(q_ir)
    rows.append(f"| {label} | {c_ms:.2f} | {jit_ms:.2f} | {ort_ms:.2f} | {c_ms / jit_ms:.2f} | {c_ms / ort_ms:.2f} |")
    weights = os.path.getsize(q_ir.replace(".ir", ".safetensors"))
    size = os.path.getsize(obj)
    sizes.append(f"| {label} | {size / 2**20:.2f} | {weights / 2**20:.2f} | {size / weights:.2f} | {build_s:.2f} |")
    # Every eval image through the object and through `qcc run`.
    got = os.path.join(tmp, tag, "eval.out")
    subprocess.run([harness, "f32", all_evals, got], capture_output=True, check=True)
    want = os.path.join(tmp, tag, "want.npy")
    qcc("run", q_ir, "--input", eval_path, "--top", "0", "--quiet", "-o", want)
    same = open(got, "rb").read() == np.load(want).astype("<f4").tobytes()
    exact.append(f"| {label}, {len(evals)} eval images | {'identical' if same else 'DIFFERENT'} |")
    print(rows[-1], sizes[-1], exact[-1], sep="\n")

# Every target, on the per-channel bias-corrected module: size, build time, latency (x86-64
# targets, on this machine), exactness.
targets = []
label, pipeline = pipelines[1]
tag = re.sub(r"[^a-z]+", "_", label)
q_ir = os.path.join(tmp, f"{tag}.ir")
weights = os.path.getsize(q_ir.replace(".ir", ".safetensors"))
want = np.load(os.path.join(tmp, tag, "want.npy")).astype("<f4").tobytes()
per_image = len(want) // len(evals)
for target in ["native", "x86_64", "x86_64-v3", "aarch64"]:
    d = os.path.join(tmp, f"target-{target}")
    os.makedirs(d)
    obj = os.path.join(d, "model.o")
    build_s = statistics.median(qcc("build", q_ir, "-o", obj, "--target", target)[0] for _ in range(3))
    arm = target == "aarch64"
    harness = os.path.join(d, "harness")
    cc = "aarch64-linux-gnu-gcc" if arm else CC
    subprocess.run([cc, "-std=c99", "-O2", *(["-static"] if arm else []), "-I", d,
                    os.path.join(ROOT, "tests", "c", "harness.c"), obj, "-o", harness], check=True)
    run = ["qemu-aarch64", harness] if arm else [harness]
    if arm:
        ms = "– (qemu)"
        images = 64
    else:
        out = subprocess.run(run + ["f32", first, os.path.join(d, "first.out"), str(args.runs)],
                             capture_output=True, text=True, check=True).stdout
        ms = f'{float(re.search(r"median ([0-9.]+) ms", out).group(1)):.2f}'
        images = len(evals)
    inputs = os.path.join(d, "in.f32")
    evals[:images].tofile(inputs)
    got = os.path.join(d, "eval.out")
    subprocess.run(run + ["f32", inputs, got], capture_output=True, check=True)
    same = open(got, "rb").read() == want[:images * per_image]
    size = os.path.getsize(obj)
    targets.append(f"| {target} | {size / 2**20:.2f} | {size / weights:.2f} | {build_s:.2f} | {ms} | "
                   f"{'identical' if same else 'DIFFERENT'} ({images} images) |")
    print(targets[-1])

section = "\n".join([
    "<!-- object:begin (written by bench/object_speed.py) -->",
    f"### `qcc build` objects ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, one run)",
    "",
    f"Batch-1 latency of the kit's MobileNetV2 on one thread, median of {args.runs} runs: a C program",
    "linked with the object (`tests/c/harness.c`, `cc -O2`, `NAME_run` on floats including",
    "quantize and dequantize), the same module on the JIT engine (`qcc run --latency`), and ONNX",
    "Runtime's int8 kernels on its own per-channel QDQ quantization of the same float model:",
    "",
    "| module | object ms | JIT ms | ONNX Runtime int8 ms | object / JIT | object / ONNX Runtime |",
    "|---|---|---|---|---|---|",
] + rows + [
    "",
    "Object size against the module's weights file (int8 weights, i32 biases, f32 scales), and the",
    "whole `qcc build` command from the quantized module (median of 3):",
    "",
    "| module | object MiB | weights MiB | object / weights | build s |",
    "|---|---|---|---|---|",
] + sizes + [
    "",
    "Exactness, every eval image through the linked object against `qcc run -o` (bytes compared):",
    "",
    "| module | object vs qcc run |",
    "|---|---|",
] + exact + [
    "",
    f"Every target, on the {label} module: object size (and against the weights file), the whole",
    "`qcc build` command (median of 3), batch-1 latency of the linked harness on this machine, and",
    "its outputs against `qcc run -o` (AArch64: cross-compiled, run under qemu-aarch64):",
    "",
    "| target | object MiB | object / weights | build s | latency ms | vs qcc run |",
    "|---|---|---|---|---|---|",
] + targets + ["<!-- object:end -->"])
update_section("object", section)
