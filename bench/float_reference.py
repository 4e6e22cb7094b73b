#!/usr/bin/env python3
"""Checks qcc's float reference executor against ONNX Runtime on the evaluation kit and measures
its throughput next to ONNX Runtime's in the same run. Writes the float section of
bench/RESULTS.md (between its float markers) and prints the table.

- MobileNetV2: qcc's logits on ../shared/eval/eval.npy against eval_float_logits.npy.
- Dogs model (160x160, batch norm unfolded): imported as is, and with --passes=fold-batchnorm,
  against its eval_float_logits.npy.
- Throughput: the 64 calibration images through MobileNetV2, qcc (`qcc run`, batches of 16, all
  cores) and ONNX Runtime (batch 16, all cores; and one thread), median of 3 runs each.

Run: python3 bench/float_reference.py [--kit ../shared/eval]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")], check=True)

import numpy as np  # noqa: E402
from results import release_qcc, update_section  # noqa: E402
import onnxruntime as ort  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kit", default=os.path.join(ROOT, "..", "shared", "eval"))
args = parser.parse_args()
kit = os.path.normpath(args.kit)
QCC = release_qcc()
tmp = tempfile.mkdtemp()


def qcc_run(model, data, *extra):
    out = os.path.join(tmp, "out.npy")
    t0 = time.perf_counter()
    # The reference interpreter, which this section is about (the default engine is Cranelift's).
    subprocess.run([QCC, "run", model, "--engine", "reference", "--input", data, "-o", out, "--quiet",
                    *extra], check=True)
    return np.load(out), time.perf_counter() - t0


rows = []


def compare(name, model, data, reference, *extra):
    got, _ = qcc_run(model, data, *extra)
    ref = np.load(reference)
    diff = float(np.abs(got - ref).max())
    agree = float((got.argmax(1) == ref.argmax(1)).mean() * 100)
    rows.append((name, got.shape[0], diff, agree))
    print(f"{name}: max |qcc - ORT| = {diff:.2e}, top-1 identical on {agree:.1f}%")


mb = os.path.join(kit, "mobilenet_v2.onnx")
dogs = os.path.join(kit, "dogs", "mobilenet_v2_dogs.onnx")
compare("MobileNetV2", mb, os.path.join(kit, "eval.npy"), os.path.join(kit, "eval_float_logits.npy"), "--preprocess", "tf")
compare("Dogs", dogs, os.path.join(kit, "dogs", "eval.npy"), os.path.join(kit, "dogs", "eval_float_logits.npy"), "--preprocess", "tf")
compare("Dogs, fold-batchnorm", dogs, os.path.join(kit, "dogs", "eval.npy"), os.path.join(kit, "dogs", "eval_float_logits.npy"),
        "--preprocess", "tf", "--passes", "fold-batchnorm,canonicalize")

# Throughput on the 64 calibration images.
calib = np.load(os.path.join(kit, "calib.npy"))
x = calib.astype(np.float32) / 127.5 - 1.0
calib_path = os.path.join(kit, "calib.npy")


def ort_time(threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(mb, opts, providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x[:16]})
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, len(x), 16):
            sess.run(None, {"input": x[i:i + 16]})
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


qcc_times = [qcc_run(mb, calib_path, "--preprocess", "tf")[1] for _ in range(3)]
t_qcc = statistics.median(qcc_times)
t_ort = ort_time(os.cpu_count() or 1)
t_ort1 = ort_time(1)
n = len(x)
cores = os.cpu_count()
print(f"64 images: qcc {t_qcc:.2f} s ({n / t_qcc:.1f} img/s), ORT {t_ort:.2f} s ({n / t_ort:.1f} img/s), ORT 1 thread {t_ort1:.2f} s")

lines = [
    "<!-- float:begin (written by bench/float_reference.py) -->",
    f"### Float reference executor ({time.strftime('%Y-%m-%d')}, {cores} cores, ONNX Runtime {ort.__version__})",
    "",
    "Logits of qcc's reference interpreter against ONNX Runtime's (the kit's `eval_float_logits.npy`):",
    "",
    "| model | images | max abs logit difference | same top-1 |",
    "|---|---|---|---|",
]
for name, count, diff, agree in rows:
    lines.append(f"| {name} | {count} | {diff:.1e} | {agree:.1f}% |")
lines += [
    "",
    "Throughput, MobileNetV2, the 64 calibration images (median of 3 runs; qcc's time is the whole",
    "`qcc run` command: start-up, ONNX import, loading the .npy, running in batches of 16):",
    "",
    "| engine | seconds | images/s | ratio to ONNX Runtime (same threads) |",
    "|---|---|---|---|",
    f"| qcc reference interpreter, {cores} threads | {t_qcc:.2f} | {n / t_qcc:.1f} | {t_qcc / t_ort:.1f}x slower |",
    f"| ONNX Runtime float, {cores} threads | {t_ort:.2f} | {n / t_ort:.1f} | 1.0x |",
    f"| ONNX Runtime float, 1 thread | {t_ort1:.2f} | {n / t_ort1:.1f} | – |",
    "<!-- float:end -->",
]
update_section("float", "\n".join(lines))
