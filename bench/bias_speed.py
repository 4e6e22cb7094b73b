#!/usr/bin/env python3
"""Wall time of bias correction with 64 calibration images: qcc's whole
`qcc --passes=quantize{...},bias-correct` command (ONNX import, calibration, quantization,
correction, writing the result) against NNCF's `nncf.quantize` with full bias correction, on the
kit's MobileNetV2, per-tensor and per-channel, alternating the two tools REPS times in the same run.
Writes the medians and their ratio to bench/RESULTS.md (between its bias-speed markers).

Run: python3 bench/bias_speed.py [--kit ../shared/eval] [--reps 3]
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
import nncf  # noqa: E402
import onnx  # noqa: E402
from results import release_qcc, update_section  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kit", default=os.path.join(ROOT, "..", "shared", "eval"))
parser.add_argument("--reps", type=int, default=3)
args = parser.parse_args()
kit = os.path.normpath(args.kit)
QCC = release_qcc()
tmp = tempfile.mkdtemp()
onnx_path = os.path.join(kit, "mobilenet_v2.onnx")
calib_path = os.path.join(kit, "calib.npy")
calib = np.load(calib_path).astype(np.float32) / 127.5 - 1
model = onnx.load(onnx_path)
dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {"input": x})


def qcc_seconds(granularity):
    cmd = [QCC, f"--passes=quantize{{granularity={granularity}}},bias-correct", "--calib", calib_path, onnx_path,
           "--preprocess", "tf", "-o", os.path.join(tmp, "q.ir")]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def nncf_seconds(granularity):
    adv = nncf.AdvancedQuantizationParameters(
        weights_quantization_params=nncf.quantization.advanced_parameters.QuantizationParameters(per_channel=granularity == "per-channel"),
    )
    t0 = time.perf_counter()
    nncf.quantize(model, dataset, subset_size=len(calib), fast_bias_correction=False, advanced_parameters=adv)
    return time.perf_counter() - t0


rows = []
for granularity in ("per-tensor", "per-channel"):
    q, n = [], []
    for _ in range(args.reps):
        q.append(qcc_seconds(granularity))
        n.append(nncf_seconds(granularity))
    mq, mn = statistics.median(q), statistics.median(n)
    line = (f"| MobileNetV2, {granularity} | {mq:.1f} ({', '.join(f'{v:.1f}' for v in q)}) | "
            f"{mn:.1f} ({', '.join(f'{v:.1f}' for v in n)}) | {mq / mn:.2f} |")
    print(line)
    rows.append(line)

section = "\n".join([
    "<!-- bias-speed:begin (written by bench/bias_speed.py) -->",
    f"### Bias correction wall time ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {args.reps})",
    "",
    "64 calibration images of the kit. qcc: the whole `qcc --passes=quantize{granularity=...},bias-correct`",
    "command (ONNX import, calibration, quantization, one round of correction, writing the module).",
    "NNCF: the `nncf.quantize` call with full bias correction (`fast_bias_correction=False`). The two",
    "tools alternate in the same run; each run's seconds in brackets.",
    "",
    "| model | qcc bias-correct s | NNCF full BC s | ratio qcc / NNCF |",
    "|---|---|---|---|",
] + rows + ["<!-- bias-speed:end -->"])
update_section("bias-speed", section)
