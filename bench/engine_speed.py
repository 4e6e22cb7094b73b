#!/usr/bin/env python3
"""The Cranelift engine against the reference interpreter and ONNX Runtime, on the kit's
MobileNetV2 (and the dogs model for exactness), all in one run on this machine:

- batch-1 latency on one thread, median of RUNS: qcc's per-channel int8 module on the Cranelift
  engine and on the reference interpreter (`qcc run --latency`), qcc's float module, ONNX Runtime
  on the same network quantized per channel to QDQ by its own `quantize_static` (its int8 kernels)
  and in float;
- two-thread throughput on the 64 calibration images (qcc: the whole `qcc run` command; ONNX
  Runtime: the `run` calls);
- peak memory at batch 1: the whole `qcc run --batch-size 1` command against a Python process
  running ONNX Runtime's session on the same images;
- the whole `qcc --passes=quantize,bias-correct` command on both engines (seconds and peak memory);
- exactness: every eval image through the int8 modules of both kit models on both engines, outputs
  compared byte for byte.

Writes its tables to bench/RESULTS.md between the engine markers.

Run (in a virtual environment with bench/requirements.txt):
    python3 bench/engine_speed.py [--kit ../shared/eval] [--runs 200]
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
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from peer_models import ort_model  # noqa: E402
from results import release_qcc, update_section  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kit", default=os.path.join(ROOT, "..", "shared", "eval"))
parser.add_argument("--runs", type=int, default=200)
args = parser.parse_args()
kit = os.path.normpath(args.kit)
QCC = release_qcc()
tmp = tempfile.mkdtemp()
onnx_path = os.path.join(kit, "mobilenet_v2.onnx")
dogs_path = os.path.join(kit, "dogs", "mobilenet_v2_dogs.onnx")
calib_path = os.path.join(kit, "calib.npy")
eval_path = os.path.join(kit, "eval.npy")
calib = np.load(calib_path).astype(np.float32) / 127.5 - 1


def qcc(*argv, env=None):
    """Runs qcc; returns (seconds, peak KiB, stdout)."""
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "%M", QCC, *argv], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"qcc {' '.join(argv)} failed:\n{r.stderr}")
    peak = int(r.stderr.strip().splitlines()[-1])
    return seconds, peak, r.stdout


def qcc_latency(model, engine, threads=1):
    _, _, out = qcc("run", model, "--input", calib_path, "--batch-size", "64", "--top", "0", "--quiet",
                    "--engine", engine, "--threads", str(threads), "--latency", str(args.runs))
    m = re.search(r"median ([0-9.]+) ms, fastest ([0-9.]+) ms.*; ([0-9]+) kernels compiled in this process in ([0-9.]+) ms", out)
    if m is None:
        sys.exit(f"no latency line in:\n{out}")
    kernels = f"{m.group(3)} in {float(m.group(4)):.0f}" if m.group(3) != "0" else None
    return float(m.group(1)), float(m.group(2)), kernels


# The modules: qcc's per-channel int8 (min/max ranges, no correction: the network ONNX Runtime's
# quantizer makes too) and its float import; the dogs model's int8 for exactness.
q_ir = os.path.join(tmp, "q.ir")
qcc("--passes=quantize", "--calib", calib_path, onnx_path, "--preprocess", "tf", "-o", q_ir)
f_ir = os.path.join(tmp, "f.ir")
qcc("import", onnx_path, "--preprocess", "tf", "-o", f_ir)
dogs_ir = os.path.join(tmp, "dogs.ir")
dogs_calib = os.path.join(kit, "dogs", "calib.npy")
qcc("--passes=fold-batchnorm,quantize", "--calib", dogs_calib, dogs_path, "--preprocess", "tf", "-o", dogs_ir)

# ONNX Runtime's own per-channel QDQ model of the same network.
ort_q = os.path.join(tmp, "ort_q.onnx")
ort_model(onnx_path, calib, ort_q, True, tmp)


def ort_session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_latency(path):
    s = ort_session(path, 1)
    x = {"input": calib[:1]}
    for _ in range(3):
        s.run(None, x)
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        s.run(None, x)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), min(times)


def ort_throughput(path):
    s = ort_session(path, 2)
    s.run(None, {"input": calib[:1]})
    t0 = time.perf_counter()
    for i in range(len(calib)):
        s.run(None, {"input": calib[i:i + 1]})
    return time.perf_counter() - t0


# ONNX Runtime in a process of its own, as a deployed program would run it: the 64 calibration
# images one at a time on one thread.
ORT_CHILD = """
import sys
import numpy as np
import onnxruntime as ort
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
x = np.load(sys.argv[2]).astype(np.float32) / 127.5 - 1
for i in range(len(x)):
    s.run(None, {"input": x[i:i + 1]})
"""


def ort_peak(path):
    """Peak KiB of a Python process running `path` on the calibration images at batch 1."""
    r = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", ORT_CHILD, path, calib_path],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"ONNX Runtime on {path} failed:\n{r.stderr}")
    return int(r.stderr.strip().splitlines()[-1])


lat = {
    "qcc int8, Cranelift": qcc_latency(q_ir, "cranelift"),
    "qcc int8, reference": qcc_latency(q_ir, "reference"),
    "qcc float, Cranelift (GEMM convolutions on the reference kernel, every other op generated)": qcc_latency(f_ir, "cranelift"),
    "ONNX Runtime int8 (QDQ, per channel)": ort_latency(ort_q) + (None,),
    "ONNX Runtime float": ort_latency(onnx_path) + (None,),
}
base = lat["ONNX Runtime int8 (QDQ, per channel)"][0]
lat_rows = [f"| {k} | {v[0]:.2f} | {v[1]:.2f} | {v[0] / base:.2f} | {v[2] or '–'} |" for k, v in lat.items()]
for r in lat_rows:
    print(r)

# Where the int8 time goes: `qcc run --profile` over the 64 images one at a time, one thread.
_, _, out = qcc("run", q_ir, "--input", calib_path, "--batch-size", "1", "--threads", "1", "--top", "0",
                "--quiet", "--profile")
classes = []
qcc_class = {}  # class -> (ms per image, MMAC per image)
for m in re.finditer(r"^  (\S+(?: \S+)?)\s+([0-9]+) ops\s+([0-9.]+) ms\s+([0-9.]+)%\s+([0-9.]+) MMAC\s+(\S+) GMAC/s", out, re.M):
    name, ops, ms, share, mmac, gmacs = m.groups()
    classes.append(f"| {name} | {ops} | {float(ms) / 64:.3f} | {share}% | {gmacs} |")
    qcc_class[name] = (float(ms) / 64, float(mmac) / 64)
if not classes:
    sys.exit(f"no per-class profile in:\n{out}")
for r in classes:
    print(r)


def ort_profile(path):
    """ONNX Runtime's own per-node profile of `path` (its int8 kernels, one thread), the 64
    images one at a time: ms per image by the op classes of qcc's profile."""
    import json
    optimized = os.path.join(tmp, "ort_optimized.onnx")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, "ort_profile")
    so.optimized_model_filepath = optimized
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    for i in range(len(calib)):
        sess.run(None, {"input": calib[i:i + 1]})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    graph = onnx.load(optimized).graph
    weights = {w.name: list(w.dims) for w in graph.initializer}
    kind = {}
    for node in graph.node:
        k = "other"
        if node.op_type == "QLinearConv":
            dims = weights.get(node.input[3], [])
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            k = "depthwise" if group > 1 else "conv 1x1" if dims[2:] == [1, 1] else "conv"
        elif node.op_type in ("QGemm", "MatMulInteger", "QLinearMatMul"):
            k = "dense"
        kind[node.name] = k
    total = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            k = kind.get(e["name"][:-len("_kernel_time")], "other")
            total[k] = total.get(k, 0.0) + e["dur"] / 1e3
    return {k: v / len(calib) for k, v in total.items()}


ort_class = ort_profile(ort_q)
vs_rows = []
for name, (ms, mmac) in qcc_class.items():
    o = ort_class.get(name)
    gm = lambda t: f"{mmac / t:.1f}" if t and mmac else "–"  # noqa: E731
    vs_rows.append(f"| {name} | {ms:.3f} | {f'{o:.3f}' if o else '–'} | {gm(ms)} | {gm(o)} | "
                   f"{f'{ms / o:.2f}' if o else '–'} |")
for r in vs_rows:
    print(r)

thr = []
for name, model in (("int8", q_ir), ("float", f_ir)):
    for engine in ("cranelift", "reference"):
        s, peak, _ = qcc("run", model, "--input", calib_path, "--top", "0", "--quiet", "--engine", engine,
                         "--threads", "2", "-o", os.path.join(tmp, "out.npy"))
        thr.append(f"| qcc {name}, {engine} (whole command) | {s:.2f} | {peak / 1024:.0f} |")
thr.append(f"| ONNX Runtime int8, 64 `run` calls | {ort_throughput(ort_q):.2f} | – |")
thr.append(f"| ONNX Runtime float, 64 `run` calls | {ort_throughput(onnx_path):.2f} | – |")
for r in thr:
    print(r)

mem = []
for name, model, peer in (("int8", q_ir, ort_q), ("float", f_ir, onnx_path)):
    _, peak, _ = qcc("run", model, "--input", calib_path, "--top", "0", "--quiet", "--batch-size", "1",
                     "--threads", "1", "-o", os.path.join(tmp, "out.npy"))
    ort_kib = ort_peak(peer)
    mem.append(f"| {name} | {peak / 1024:.0f} | {ort_kib / 1024:.0f} | {peak / ort_kib:.2f} |")
for r in mem:
    print(r)

bc = []
for engine in ("cranelift", "reference"):
    for granularity in ("per-tensor", "per-channel"):
        s, peak, _ = qcc("--engine", engine, f"--passes=quantize{{granularity={granularity}}},bias-correct",
                         "--calib", calib_path, onnx_path, "--preprocess", "tf", "-o", os.path.join(tmp, "bc.ir"))
        bc.append(f"| {granularity}, {engine} | {s:.2f} | {peak / 1024:.0f} |")
# bias-fit (per-channel) and `qcc compare` over its default rows, both engines; the bias-fit
# modules must be the same bytes.
fits = []
for engine in ("cranelift", "reference"):
    out = os.path.join(tmp, f"fit-{engine}.ir")
    s, peak, _ = qcc("--engine", engine, "--passes=quantize{granularity=per-channel},bias-fit",
                     "--calib", calib_path, onnx_path, "--preprocess", "tf", "-o", out)
    fits.append(open(out[:-3] + ".safetensors", "rb").read())
    bc.append(f"| per-channel `bias-fit`, {engine} | {s:.2f} | {peak / 1024:.0f} |")
for engine in ("cranelift", "reference"):
    s, peak, _ = qcc("compare", onnx_path, "--calib", calib_path, "--preprocess", "tf", "--quiet",
                     "--engine", engine)
    bc.append(f"| `qcc compare`, default rows, {engine} | {s:.2f} | {peak / 1024:.0f} |")
for r in bc:
    print(r)

exact = []
for name, model, data in (("MobileNetV2", q_ir, eval_path), ("dogs", dogs_ir, os.path.join(kit, "dogs", "eval.npy"))):
    outs = []
    for engine in ("cranelift", "reference"):
        out = os.path.join(tmp, f"{name}-{engine}.npy")
        qcc("run", model, "--input", data, "--top", "0", "--quiet", "--engine", engine, "-o", out)
        outs.append(open(out, "rb").read())
    n = np.load(os.path.join(tmp, f"{name}-cranelift.npy")).shape[0]
    exact.append(f"| {name} int8, {n} eval images | {'identical' if outs[0] == outs[1] else 'DIFFERENT'} |")
for r in exact:
    print(r)

section = "\n".join([
    "<!-- engine:begin (written by bench/engine_speed.py) -->",
    f"### The Cranelift engine ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, one run)",
    "",
    f"Batch-1 latency of the kit's MobileNetV2 on one thread, median and fastest of {args.runs} runs",
    "(qcc: `qcc run --latency`, which also reports how many kernels the process compiled and how long",
    "that took; ONNX Runtime: `InferenceSession.run`). The int8",
    "networks are per-channel min/max quantizations of the same float model, by qcc and by ONNX",
    "Runtime's `quantize_static` (QDQ, u8 activations).",
    "",
    "| network, engine | median ms | fastest ms | median / ORT int8 | kernels compiled, ms |",
    "|---|---|---|---|---|",
] + lat_rows + [
    "",
    "Where qcc's int8 time goes (`qcc run --profile`, the 64 calibration images one at a time on one",
    "thread; ms per image; the 128-bit VNNI ceiling of one core, `bench/vnni_ceiling.rs`, is about",
    "117 GMAC/s with 12 or more independent accumulators, 109 with 8, 59 with 4; the profile's own",
    "timing adds a little):",
    "",
    "| op class | ops | ms per image | share | GMAC/s |",
    "|---|---|---|---|---|",
] + classes + [
    "",
    "The same classes against ONNX Runtime's int8 kernels (its own per-node profile, `enable_profiling`,",
    "the same 64 images one at a time on one thread; GMAC/s from qcc's count of the class's",
    "multiply-accumulates, the same network; the zmm `vpdpbusd` ceiling its kernels can use on this",
    "CPU, `bench/vnni_ceiling.rs`, is about 234 GMAC/s, twice the xmm one Cranelift's code has).",
    "qcc's column is the op-by-op profile above, which stages and packs per op: its plain run, the",
    "whole-function program, takes the first table's median, less than these rows' sum:",
    "",
    "| op class | qcc ms per image | ONNX Runtime ms per image | qcc GMAC/s | ONNX Runtime GMAC/s | qcc / ONNX Runtime |",
    "|---|---|---|---|---|---|",
] + vs_rows + [
    "",
    "Two threads, the 64 calibration images (qcc at its default batch of 16):",
    "",
    "| what | seconds | peak MiB |",
    "|---|---|---|",
] + thr + [
    "",
    "Peak memory at batch 1 (the whole process's peak resident set, one thread, the 64 calibration",
    "images one at a time; qcc: `qcc run --batch-size 1` on the Cranelift engine; ONNX Runtime: a",
    "Python process that loads the same images and runs its session on each, Python and NumPy",
    "included):",
    "",
    "| network | qcc peak MiB | ONNX Runtime peak MiB | qcc / ONNX Runtime |",
    "|---|---|---|---|",
] + mem + [
    "",
    "The whole `qcc --passes=quantize{granularity=...},bias-correct` command (ONNX import,",
    "calibration, quantization, correction, writing the module; default options, since 2026-12-05",
    "MSE ranges and the correction after the activation), the same with per-channel `bias-fit`, and",
    "`qcc compare` over its seven default pipelines (each quantized and scored on the 64 images),",
    "both engines:",
    "",
    "| pipeline, engine | seconds | peak MiB |",
    "|---|---|---|",
] + bc + [
    "",
    "Exactness, every eval image through both engines (`qcc run -o`, the files compared byte for byte),",
    "and the per-channel `bias-fit` module each engine writes:",
    "",
    "| module | Cranelift vs reference |",
    "|---|---|",
] + exact + [
    f"| per-channel `bias-fit` module | {'identical' if fits[0] == fits[1] else 'DIFFERENT'} |",
    "<!-- engine:end -->"])
update_section("engine", section)
