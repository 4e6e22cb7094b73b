#!/usr/bin/env python3
"""Wall time and peak memory of bias correction with 64 calibration images: qcc's whole
`qcc --passes=quantize{...},bias-correct` command (ONNX import, calibration, quantization,
correction, writing the result) against NNCF's `nncf.quantize` with full bias correction, on the
kit's MobileNetV2, per-tensor and per-channel, alternating the two tools REPS times in the same run.
Each NNCF run is a Python process of its own (this script with --nncf-child): its seconds are the
`nncf.quantize` call's, its memory the whole process's peak, as qcc's are. Writes the medians and
their ratios to bench/RESULTS.md (between its bias-speed markers).

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
if "--nncf-child" not in sys.argv:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")],
                   check=True)

import numpy as np  # noqa: E402
import nncf  # noqa: E402
import onnx  # noqa: E402
from results import release_qcc, run_measured, update_section  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kit", default=os.path.join(ROOT, "..", "shared", "eval"))
parser.add_argument("--reps", type=int, default=3)
parser.add_argument("--nncf-child", choices=["per-tensor", "per-channel"],
                    help="(internal) run NNCF once in this process and print the seconds it took")
args = parser.parse_args()
kit = os.path.normpath(args.kit)
onnx_path = os.path.join(kit, "mobilenet_v2.onnx")
calib_path = os.path.join(kit, "calib.npy")

if args.nncf_child:
    calib = np.load(calib_path).astype(np.float32) / 127.5 - 1
    model = onnx.load(onnx_path)
    dataset = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {"input": x})
    adv = nncf.AdvancedQuantizationParameters(
        weights_quantization_params=nncf.quantization.advanced_parameters.QuantizationParameters(
            per_channel=args.nncf_child == "per-channel"),
    )
    t0 = time.perf_counter()
    nncf.quantize(model, dataset, subset_size=len(calib), fast_bias_correction=False, advanced_parameters=adv)
    print(f"seconds {time.perf_counter() - t0}")
    sys.exit(0)

QCC = release_qcc()
tmp = tempfile.mkdtemp()


def qcc_run(granularity):
    """(seconds, peak MiB) of the whole qcc command."""
    seconds, peak, _ = run_measured([
        QCC, f"--passes=quantize{{granularity={granularity}}},bias-correct", "--calib", calib_path, onnx_path,
        "--preprocess", "tf", "-o", os.path.join(tmp, "q.ir")])
    return seconds, peak / 1024


def nncf_run(granularity):
    """(seconds of the nncf.quantize call, peak MiB of its whole process)."""
    _, peak, out = run_measured([sys.executable, os.path.abspath(__file__), "--kit", kit,
                                 "--nncf-child", granularity])
    seconds = float(out.strip().splitlines()[-1].split()[1])
    return seconds, peak / 1024


rows = []
for granularity in ("per-tensor", "per-channel"):
    q, n = [], []
    for _ in range(args.reps):
        q.append(qcc_run(granularity))
        n.append(nncf_run(granularity))

    def median(runs, i):
        return statistics.median(r[i] for r in runs)

    def each(runs, i, fmt):
        return ", ".join(fmt.format(r[i]) for r in runs)

    (qs, qm), (ns, nm) = (median(q, 0), median(q, 1)), (median(n, 0), median(n, 1))
    line = (f"| MobileNetV2, {granularity} | {qs:.1f} ({each(q, 0, '{:.1f}')}) | "
            f"{ns:.1f} ({each(n, 0, '{:.1f}')}) | {qs / ns:.2f} | "
            f"{qm:.0f} ({each(q, 1, '{:.0f}')}) | {nm:.0f} ({each(n, 1, '{:.0f}')}) | {qm / nm:.2f} |")
    print(line)
    rows.append(line)

section = "\n".join([
    "<!-- bias-speed:begin (written by bench/bias_speed.py) -->",
    f"### Bias correction wall time and memory ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, median of {args.reps})",
    "",
    "64 calibration images of the kit. qcc: the whole `qcc --passes=quantize{granularity=...},bias-correct`",
    "command (ONNX import, calibration, quantization, one round of correction, writing the module),",
    "with the default options (since 2026-12-05 MSE ranges and the correction after the activation).",
    "NNCF: the `nncf.quantize` call with full bias correction (`fast_bias_correction=False`), each in a",
    "Python process of its own. Peak memory is the whole process's peak resident set, for both. The two",
    "tools alternate in the same run; each run's figure in brackets.",
    "",
    "| model | qcc bias-correct s | NNCF full BC s | time qcc / NNCF | qcc peak MiB | NNCF peak MiB | memory qcc / NNCF |",
    "|---|---|---|---|---|---|---|",
] + rows + ["<!-- bias-speed:end -->"])
update_section("bias-speed", section)
