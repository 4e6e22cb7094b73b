#!/usr/bin/env python3
"""Builds the bundled example examples/mobilenet_v2/ from the evaluation kit (../shared/eval/):
the model (with `qcc.preprocess = tf` in its metadata, so qcc knows how to feed it images), the
photos, the class names, a LICENSES file, and golden data made with ONNX Runtime:

- photos.npy: the photos as u8 RGB pixels [8, 3, 224, 224], resized (shorter side 256, PIL
  bilinear) and centre-cropped to 224 by this script;
- golden_logits.npy: ONNX Runtime's float logits [8, 1000] for photos.npy / 127.5 - 1 (one thread);
- photos.txt: the photo file names in the order of the rows.

Run: python3 bench/make_example.py [--kit ../shared/eval]
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", os.path.join(HERE, "requirements.txt")], check=True)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from PIL import Image  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--kit", default=os.path.join(HERE, "..", "..", "shared", "eval"))
args = parser.parse_args()
kit = os.path.normpath(args.kit)
out = os.path.normpath(os.path.join(HERE, "..", "examples", "mobilenet_v2"))
os.makedirs(os.path.join(out, "photos"), exist_ok=True)

model = onnx.load(os.path.join(kit, "mobilenet_v2.onnx"))
onnx.helper.set_model_props(model, {"qcc.preprocess": "tf"})
onnx.save(model, os.path.join(out, "model.onnx"))
shutil.copy(os.path.join(kit, "imagenet_labels.txt"), os.path.join(out, "labels.txt"))
names = sorted(n for n in os.listdir(os.path.join(kit, "photos")) if n.lower().endswith((".jpg", ".jpeg", ".png")))
for n in names:
    shutil.copy(os.path.join(kit, "photos", n), os.path.join(out, "photos", n))


def load(path, resize=256, crop=224):
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        size = (resize, round(h * resize / w))
    else:
        size = (round(w * resize / h), resize)
    img = img.resize(size, Image.BILINEAR)
    left, top = round((size[0] - crop) / 2), round((size[1] - crop) / 2)
    img = img.crop((left, top, left + crop, top + crop))
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


pixels = np.stack([load(os.path.join(out, "photos", n)) for n in names])
np.save(os.path.join(out, "photos.npy"), pixels)
with open(os.path.join(out, "photos.txt"), "w") as f:
    f.write("\n".join(names) + "\n")
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
sess = ort.InferenceSession(os.path.join(out, "model.onnx"), opts, providers=["CPUExecutionProvider"])
logits = sess.run(None, {"input": pixels.astype(np.float32) / 127.5 - 1.0})[0]
np.save(os.path.join(out, "golden_logits.npy"), logits.astype(np.float32))
labels = open(os.path.join(out, "labels.txt")).read().splitlines()
for n, row in zip(names, logits):
    print(f"{n:20s} {row.argmax():4d} {labels[row.argmax()]}")
