#!/usr/bin/env python3
"""Quantizes the kit's models with ONNX Runtime (`quantize_static`), NNCF (`nncf.quantize`, bias
correction none / fast / full) and qcc, per-tensor and per-channel, on the same 64 calibration
images, scores each on the same 436 evaluation images against the float model, and writes the
table to bench/RESULTS.md (between its quantization markers).

Metrics (as `qcc eval` computes them): top-1 agreement, top-5 agreement (float top-1 in the
quantized top-5), logit SQNR in dB, mean KL(softmax f || softmax q), top-1 accuracy where labels
exist, and the wall time of the quantization step.

Run: python3 bench/compare.py [--kit ../shared/eval] [--only mobilenet|dogs] [--qcc-only]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")], check=True)

import numpy as np  # noqa: E402
from results import release_qcc, update_section  # noqa: E402
from peer_models import nncf_model, ort_logits, ort_model  # noqa: E402
import onnxruntime as ort  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kit", default=os.path.join(ROOT, "..", "shared", "eval"))
parser.add_argument("--only", choices=["mobilenet", "dogs"])
parser.add_argument("--qcc-only", action="store_true", help="skip the peers (keeps their rows from the last run)")
parser.add_argument("--qcc-configs", default="", help="extra qcc pipelines to score, separated by semicolons")
args = parser.parse_args()
kit = os.path.normpath(args.kit)
QCC = release_qcc()
tmp = tempfile.mkdtemp()

MODELS = {
    "mobilenet": dict(title="MobileNetV2 (../shared/eval)", onnx=os.path.join(kit, "mobilenet_v2.onnx"), dir=kit, labels=True),
    "dogs": dict(title="Dogs MobileNetV2 (../shared/eval/dogs)", onnx=os.path.join(kit, "dogs", "mobilenet_v2_dogs.onnx"), dir=os.path.join(kit, "dogs"), labels=False),
}


def metrics(f, q, labels=None):
    t1 = float((f.argmax(1) == q.argmax(1)).mean() * 100)
    top5 = np.argsort(-q, axis=1)[:, :5]
    t5 = float(np.mean([f[i].argmax() in top5[i] for i in range(len(f))]) * 100)
    sqnr = float(10 * np.log10((f.astype(np.float64) ** 2).sum() / ((f.astype(np.float64) - q) ** 2).sum()))

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    pf, pq = softmax(f.astype(np.float64)), softmax(q.astype(np.float64))
    kl = float(np.mean(np.sum(pf * (np.log(np.maximum(pf, 1e-300)) - np.log(np.maximum(pq, 1e-300))), axis=1)))
    acc = None
    if labels is not None:
        mask = labels >= 0
        acc = float((q.argmax(1)[mask] == labels[mask]).mean() * 100)
    return dict(top1=t1, top5=t5, sqnr=sqnr, kl=kl, acc=acc)


def with_kernels(r, f, path, x):
    """Adds the SQNR ONNX Runtime's int8 kernels reach on the same model."""
    k = metrics(f, ort_logits(path, x, kernels=True))
    r["kernel_top1"], r["kernel_sqnr"] = k["top1"], k["sqnr"]
    return r


def peers(m, calib, evalx, f, labels):
    rows = []
    for pc in (False, True):
        out = os.path.join(tmp, f"ort_{pc}.onnx")
        dt = ort_model(m["onnx"], calib, out, pc, tmp)
        rows.append((f"ORT per-{'channel' if pc else 'tensor'}", with_kernels(metrics(f, ort_logits(out, evalx), labels), f, out, evalx), dt))
    for pc in (False, True):
        for bc in ("none", "fast", "full"):
            out = os.path.join(tmp, f"nncf_{pc}_{bc}.onnx")
            dt = nncf_model(m["onnx"], calib, out, pc, bc)
            rows.append((f"NNCF per-{'channel' if pc else 'tensor'}, {bc} BC", with_kernels(metrics(f, ort_logits(out, evalx), labels), f, out, evalx), dt))
    return rows


def qcc_row(m, label, pipeline, evaluation, labels_path):
    out = os.path.join(tmp, "q.ir")
    cmd = [QCC, f"--passes={pipeline}", "--calib", os.path.join(m["dir"], "calib.npy"), m["onnx"], "--preprocess", "tf", "-o", out]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if done.returncode != 0:
        # A pipeline that does not apply to this model (bias-correct-analytic on a model without
        # batch norms, say) is a row that says why, not the end of the run.
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
        print(f"{label}: {why}", file=sys.stderr)
        return (label, dict(error=why), dt)
    ev = [QCC, "eval", out, "--reference", m["onnx"], "--preprocess", "tf", "--data", evaluation, "--json", "--quiet"]
    if labels_path:
        ev += ["--labels", labels_path]
    r = json.loads(subprocess.run(ev, check=True, capture_output=True, text=True).stdout)
    return (label, dict(top1=r["top1_agreement"], top5=r["top5_agreement"], sqnr=r["sqnr_db"], kl=r["kl"], acc=r.get("top1_accuracy")), dt)


cache_path = os.path.join(HERE, "peers.json")
cache = json.load(open(cache_path)) if os.path.exists(cache_path) else {}
sections = []
for key, m in MODELS.items():
    if args.only and key != args.only:
        continue
    calib_u8 = np.load(os.path.join(m["dir"], "calib.npy"))
    eval_u8 = np.load(os.path.join(m["dir"], "eval.npy"))
    calib = calib_u8.astype(np.float32) / 127.5 - 1
    evalx = eval_u8.astype(np.float32) / 127.5 - 1
    f = np.load(os.path.join(m["dir"], "eval_float_logits.npy"))
    labels_path = os.path.join(m["dir"], "eval_labels.npy") if m["labels"] else None
    labels = np.load(labels_path) if labels_path else None
    if args.qcc_only and key in cache:
        peer_rows = [(r[0], r[1], r[2]) for r in cache[key]]
    else:
        peer_rows = peers(m, calib, evalx, f, labels)
        cache[key] = peer_rows
        json.dump(cache, open(cache_path, "w"), indent=1)
    evaluation = os.path.join(m["dir"], "eval.npy")
    configs = [
        ("qcc per-tensor", "quantize{granularity=per-tensor}"),
        ("qcc per-channel", "quantize{granularity=per-channel}"),
    ] + [(f"qcc {p}", p) for p in args.qcc_configs.split(";") if p]
    qcc_rows = [qcc_row(m, label, p, evaluation, labels_path) for label, p in configs]
    lines = [f"#### {m['title']}", "", "| method | top-1 agree % | top-5 agree % | SQNR dB | KL | top-1 acc % | quantize s | on ORT int8 kernels: agree % / SQNR dB |", "|---|---|---|---|---|---|---|---|"]
    for name, r, dt in peer_rows + qcc_rows:
        if "error" in r:
            why = r["error"].split(": ")[-1].replace("|", "/")
            lines.append(f"| {name} | does not apply: {why} | | | | | | |")
            print(lines[-1])
            continue
        acc = f"{r['acc']:.1f}" if r.get("acc") is not None else "–"
        kern = f"{r['kernel_top1']:.1f} / {r['kernel_sqnr']:.2f}" if "kernel_sqnr" in r else "–"
        lines.append(f"| {name} | {r['top1']:.1f} | {r['top5']:.1f} | {r['sqnr']:.2f} | {r['kl']:.4f} | {acc} | {dt:.1f} | {kern} |")
        print(lines[-1])
    sections.append("\n".join(lines))

if args.only:
    print("--only given: RESULTS.md is left as it is (it holds both models)")
    sys.exit(0)
section = "\n".join([
    "<!-- quantization:begin (written by bench/compare.py) -->",
    f"### Post-training quantization against the peers ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)",
    "",
    "64 calibration and 436 evaluation images of the kit, scored against the float model. Peers: ONNX",
    f"Runtime {ort.__version__} `quantize_static` (QDQ, MinMax, u8 activations / i8 weights, after",
    "`quant_pre_process`) and NNCF `nncf.quantize` (ONNX backend, default preset); their quantized",
    "models are scored on ONNX Runtime with graph optimizations off, so their QDQ pairs run in float",
    "and the figures show the quantization itself; the last column is ONNX Runtime's int8 kernels on the",
    "same models (peer rows are measured once and kept in `bench/peers.json`; `--qcc-only` reuses them).",
    "qcc: `qcc --passes=PIPELINE --calib calib.npy`, scored by `qcc eval` on its exact integer",
    "reference interpreter; a pipeline's options left out take their defaults (since 2026-12-05",
    "`quantize{calibration=mse}` and `bias-correct{at=post-activation}`).",
    "Quantize time is the wall time of the quantization call (qcc: the whole command, including the",
    "ONNX import and writing the result).",
    "",
] + sections + ["<!-- quantization:end -->"])
update_section("quantization", section)
