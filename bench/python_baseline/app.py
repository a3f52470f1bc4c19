"""The baseline a user would otherwise write: FastAPI + uvicorn + onnxruntime + Pillow around the
same model folder, with the export's own preprocessing (export/preprocess.py: letterbox_image, and
mask_probabilities > threshold, which is binary_mask, kept once for the score too) and tokenizer. One process, one network (export/model_session.py: model.onnx, or
image_encoder.onnx then head.onnx when the folder ships only those), a plain synchronous endpoint
(FastAPI runs it in its thread pool; ONNX Runtime releases the GIL while it runs).

    MODEL_PATH=models/vlt-refshapes python -m uvicorn bench.python_baseline.app:app --port 8081

Answers POST /segment (multipart `image` + one or more `expression`) with the same JSON shape as
the service (a base64 PNG mask, score, bbox, area per expression) and GET /healthz.
"""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path
from typing import List

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from PIL import Image

from export.model_session import ModelSession
from export.preprocess import letterbox_image, load_rgb, mask_probabilities
from export.vlt.tokenizer import Tokenizer

MODEL_DIR = Path(os.environ.get("MODEL_PATH", "models/vlt-refshapes"))
manifest = json.loads((MODEL_DIR / "model.json").read_text())
SIZE = manifest["input"]["size"]
THRESHOLD = manifest["output"]["threshold"]
tokenizer = Tokenizer.from_file(MODEL_DIR / manifest["vocab"]["file"], manifest["max_words"])
# the whole network in one graph when the folder has it (what a user would load first), else the pair
session = ModelSession(MODEL_DIR, manifest, layout="model" if "onnx" in manifest else "split")

app = FastAPI()


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@app.post("/segment")
def segment(image: UploadFile = File(...), expression: List[str] = Form(...)) -> dict:
    img = load_rgb(Image.open(io.BytesIO(image.file.read())))
    x, box = letterbox_image(img, SIZE)
    tokens = np.asarray([tokenizer.encode(e) for e in expression], dtype=np.int64)
    images = np.repeat(x[None], len(expression), axis=0)
    logits, confidence, _attention = session.run(None, {"image": images, "tokens": tokens})
    results = []
    for k, text in enumerate(expression):
        prob = mask_probabilities(logits[k, 0], box)
        mask = prob > THRESHOLD
        ys, xs = np.nonzero(mask)
        buf = io.BytesIO()
        Image.fromarray((mask * 255).astype(np.uint8), mode="L").save(buf, format="PNG")
        results.append({
            "expression": text,
            "mask": {"png": base64.b64encode(buf.getvalue()).decode("ascii")},
            "score": float(prob[mask].mean()) if mask.any() else 0.0,
            "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)] if mask.any() else None,
            "area": int(mask.sum()),
            "queries": [{"confidence": float(c)} for c in confidence[k]],
        })
    return {"image": {"width": box.width, "height": box.height}, "results": results}
