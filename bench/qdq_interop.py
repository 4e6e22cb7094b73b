#!/usr/bin/env python3
"""qcc's models inside ONNX Runtime, and other tools' models inside qcc, on the kit's two models.

1. qcc quantizes and bias-corrects (several pipelines), `-o model.onnx` writes QDQ ONNX, and ONNX
   Runtime runs it on the 436 evaluation images with graph optimizations off (the QDQ pairs in
   float: the quantization itself) and on (its int8 kernels). Next to them, ONNX Runtime's and
   NNCF's own quantized models (no bias correction), made and run the same way in the same run.
2. ONNX Runtime's `quantize_static` and NNCF's `nncf.quantize` (no bias correction) QDQ models,
   per tensor and per channel, imported by qcc as they are and then bias-corrected by qcc
   (`qcc --passes=bias-correct --reference FLOAT.onnx --calib calib.npy MODEL.onnx`): agreement
   and SQNR before and after, by `qcc eval` and, exported again, in ONNX Runtime.

Metrics against the float model's logits: top-1 agreement and SQNR (as bench/compare.py).
Writes its section of bench/RESULTS.md.

Run: python3 bench/qdq_interop.py [--kit ../shared/eval]
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")], check=True)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from peer_models import ort_logits, ort_model, nncf_model  # noqa: E402
from results import release_qcc, update_section  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kit", default=os.path.join(ROOT, "..", "shared", "eval"))
args = parser.parse_args()
kit = os.path.normpath(args.kit)
QCC = release_qcc()
tmp = tempfile.mkdtemp()

MODELS = {
    "mobilenet": dict(title="MobileNetV2 (../shared/eval)", onnx=os.path.join(kit, "mobilenet_v2.onnx"), dir=kit),
    "dogs": dict(title="Dogs MobileNetV2 (../shared/eval/dogs)", onnx=os.path.join(kit, "dogs", "mobilenet_v2_dogs.onnx"), dir=os.path.join(kit, "dogs")),
}
PIPELINES = [
    "quantize{granularity=per-tensor},bias-correct",
    "quantize{granularity=per-tensor},bias-fit",
    "quantize,bias-correct",
    "quantize{calibration=mse},bias-correct{at=post-activation}",
]


def metrics(f, q):
    t1 = float((f.argmax(1) == q.argmax(1)).mean() * 100)
    sqnr = float(10 * np.log10((f.astype(np.float64) ** 2).sum() / ((f.astype(np.float64) - q) ** 2).sum()))
    return t1, sqnr


def in_ort(path, x, f):
    return metrics(f, ort_logits(path, x, False)), metrics(f, ort_logits(path, x, True))


def qcc(*argv):
    r = subprocess.run([QCC, *argv], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"qcc {' '.join(argv)} failed:\n{r.stderr}")
    return r


def qcc_eval(model, m):
    r = qcc("eval", model, "--reference", m["onnx"], "--preprocess", "tf", "--data", os.path.join(m["dir"], "eval.npy"), "--json", "--quiet")
    j = json.loads(r.stdout)
    return j["top1_agreement"], j["sqnr_db"]


def cell(pair):
    return f"{pair[0]:.1f} / {pair[1]:.2f}"


def peer_models(m, calib, key):
    """ONNX Runtime's and NNCF's QDQ models (no bias correction), per tensor and per channel."""
    out = []
    for pc in (False, True):
        path = os.path.join(tmp, f"{key}_ort_{pc}.onnx")
        ort_model(m["onnx"], calib, path, pc, tmp)
        out.append((f"ORT per-{'channel' if pc else 'tensor'}", path))
    for pc in (False, True):
        path = os.path.join(tmp, f"{key}_nncf_{pc}.onnx")
        nncf_model(m["onnx"], calib, path, pc, "none")
        out.append((f"NNCF per-{'channel' if pc else 'tensor'}, no BC", path))
    return out


sections = []
for key, m in MODELS.items():
    calib_path = os.path.join(m["dir"], "calib.npy")
    calib = np.load(calib_path).astype(np.float32) / 127.5 - 1
    evalx = np.load(os.path.join(m["dir"], "eval.npy")).astype(np.float32) / 127.5 - 1
    f = np.load(os.path.join(m["dir"], "eval_float_logits.npy"))

    peers = peer_models(m, calib, key)
    lines = [f"#### {m['title']}: qcc's models in ONNX Runtime", "",
             "| model | qcc eval: agree % / SQNR dB | ONNX Runtime, QDQ in float | ONNX Runtime int8 kernels |",
             "|---|---|---|---|"]
    for name, path in peers:
        flt, kern = in_ort(path, evalx, f)
        lines.append(f"| {name} (its own model) | – | {cell(flt)} | {cell(kern)} |")
        print(lines[-1], flush=True)
    for p in PIPELINES:
        out = os.path.join(tmp, f"{key}_qcc.onnx")
        qcc(f"--passes={p}", "--calib", calib_path, m["onnx"], "--preprocess", "tf", "-o", out)
        ours = qcc_eval(out, m)
        flt, kern = in_ort(out, evalx, f)
        lines.append(f"| qcc `{p}`, exported | {cell(ours)} | {cell(flt)} | {cell(kern)} |")
        print(lines[-1], flush=True)

    lines += ["", f"#### {m['title']}: other tools' models, bias-corrected by qcc", "",
              "| model | as made: ONNX Runtime, QDQ in float | imported by qcc: qcc eval | + qcc `bias-correct`: qcc eval | + `bias-correct`, exported: ONNX Runtime, QDQ in float | ops left float by the import |",
              "|---|---|---|---|---|---|"]
    for name, path in peers:
        before_ort = metrics(f, ort_logits(path, evalx, False))
        r = subprocess.run([QCC, "import", path, "-o", os.path.join(tmp, "imported.ir"), "--preprocess", "tf"], capture_output=True, text=True)
        found = re.search(r"(\d+) quantized \(QDQ\) ops stay float", r.stderr)
        kept = found.group(1) if found else "0"
        before = qcc_eval(path, m)
        corrected = os.path.join(tmp, f"{key}_corrected.onnx")
        t0 = time.perf_counter()
        r = subprocess.run([QCC, "--passes=bias-correct", "--reference", m["onnx"], "--calib", calib_path, path, "--preprocess", "tf", "-o", corrected],
                           capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if r.returncode == 0:
            after = f"{cell(qcc_eval(corrected, m))} ({dt:.1f} s)"
            after_ort = cell(metrics(f, ort_logits(corrected, evalx, False)))
        else:
            error = [line for line in r.stderr.splitlines() if line.startswith("error")]
            after, after_ort = f"fails: {error[-1] if error else r.stderr.strip()[-200:]}", "–"
        lines.append(f"| {name} | {cell(before_ort)} | {cell(before)} | {after} | {after_ort} | {kept} |")
        print(lines[-1], flush=True)
    sections.append("\n".join(lines) + "\n")

section = "\n".join([
    "<!-- qdq-interop:begin (written by bench/qdq_interop.py) -->",
    f"### QDQ ONNX out and in ({time.strftime('%Y-%m-%d')}, ONNX Runtime {ort.__version__}, {os.cpu_count()} cores)",
    "",
    "Agreement (top-1, %) and SQNR (dB) against the float model on the kit's 436 evaluation images.",
    "qcc's rows: `qcc --passes=PIPELINE --calib calib.npy model.onnx -o q.onnx`, scored by `qcc eval`",
    "on q.onnx (imported back) and by ONNX Runtime with graph optimizations off (its QDQ pairs in",
    "float) and on (its int8 kernels); the peers' own models (ONNX Runtime's and NNCF's, no bias",
    "correction) are made and run the same way in the same run. The second table",
    "takes ONNX Runtime's and NNCF's QDQ models (no bias correction of their own), imports them, and",
    "corrects their biases with `qcc --passes=bias-correct --reference model.onnx` (time: the whole",
    "command); the last column counts the ops the import kept in float (NNCF quantizes the inputs of",
    "depthwise layers per channel, which qcc's integer ops do not take). The times are single runs on",
    "a shared machine, some while other jobs ran: bench/bias_speed.py measures speed.",
    "",
] + sections + ["<!-- qdq-interop:end -->"])
update_section("qdq-interop", section)
