"""The Open Inference Protocol (v2) routes, checked with a real client of the protocol: NVIDIA's
tritonclient[http] (test/protocol/requirements.txt) against the live service (`node dist/server.js`,
built by `npm run build`) serving a two-model MODELS_DIR made of the default model's files.

Health, server and model metadata, readiness, and infer calls whose masks equal the one POST
/segment returns for the same image and expression — with tritonclient's defaults (binary tensor
data) and with plain JSON tensors (the image as base64 text), as PNG and as UINT8 — and the
protocol's error shape. Run: python3 -m pytest -q test/protocol
"""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "vlt-refshapes"
SERVER = ROOT / "dist" / "server.js"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_copy(dst: Path, name: str, version: str) -> None:
    """The default model's files under another name/version (links; model.json rewritten)."""
    dst.mkdir(parents=True)
    for f in MODEL.iterdir():
        if f.name != "model.json":
            os.symlink(f, dst / f.name)
    meta = json.loads((MODEL / "model.json").read_text())
    meta["name"], meta["version"] = name, version
    (dst / "model.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def server():
    if not SERVER.exists():
        pytest.fail("dist/server.js is missing: run npm run build first")
    version = json.loads((MODEL / "model.json").read_text())["version"]
    repo = Path(tempfile.mkdtemp(prefix="vlt-oip-"))
    model_copy(repo / "vlt-refshapes" / version, "vlt-refshapes", version)
    model_copy(repo / "second", "second", "7")  # a flat folder: the second layout
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""), "HOST": "127.0.0.1", "PORT": str(port), "MODELS_DIR": str(repo),
        "WORKERS": "1", "THREADS_PER_WORKER": "1", "LOG_LEVEL": "warn", "REQUEST_TIMEOUT_MS": "120000",
    }
    proc = subprocess.Popen(["node", str(SERVER)], cwd=ROOT, env=env)
    url = f"127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://{url}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.time() > deadline:
                pytest.fail("the server did not become ready")
            time.sleep(0.5)
        yield {"url": url, "version": version}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(repo, ignore_errors=True)


@pytest.fixture(scope="module")
def client(server):
    return httpclient.InferenceServerClient(url=server["url"], network_timeout=300.0, connection_timeout=60.0)


@pytest.fixture(scope="module")
def golden():
    case = json.loads((MODEL / "golden.json").read_text())
    return (MODEL / case["image"]).read_bytes(), case["expression"]


def segment_png(url: str, image: bytes, expression: str, model: str | None = None) -> bytes:
    """POST /segment with Accept: image/png (multipart built by hand: the standard library has no encoder)."""
    boundary = "oip-check-boundary"
    parts = [(b'Content-Disposition: form-data; name="image"; filename="i.png"\r\nContent-Type: image/png\r\n\r\n', image),
             (b'Content-Disposition: form-data; name="expression"\r\n\r\n', expression.encode())]
    if model is not None:
        parts.append((b'Content-Disposition: form-data; name="model"\r\n\r\n', model.encode()))
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + h + v + b"\r\n" for h, v in parts) + b"--" + boundary.encode() + b"--\r\n"
    req = urllib.request.Request(f"http://{url}/segment", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}", "Accept": "image/png"})
    with urllib.request.urlopen(req, timeout=300) as r:
        assert r.status == 200
        return r.read()


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "vlt-segmentation-service"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_and_readiness(client, server):
    for name, version in (("vlt-refshapes", server["version"]), ("second", "7")):
        assert client.is_model_ready(name)
        assert client.is_model_ready(name, model_version=version)
        meta = client.get_model_metadata(name, model_version=version)
        assert meta["name"] == name and meta["versions"] == [version]
        assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [("image", "BYTES", [1]), ("expression", "BYTES", [-1])]
        outputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]}
        model_json = json.loads((MODEL / "model.json").read_text())
        nq, words = model_json["num_queries"], model_json["max_words"]
        assert outputs == {"mask": ("BYTES", [-1]), "query_confidence": ("FP32", [-1, nq]),
                           "word_attention": ("FP32", [-1, nq, words]), "score": ("FP32", [-1])}
    assert not client.is_model_ready("no-such-model")


def inputs(image: bytes, expressions: list[str], binary: bool) -> list:
    img = httpclient.InferInput("image", [1], "BYTES")
    # JSON cannot carry raw bytes: without binary data the image element is its base64 text.
    img.set_data_from_numpy(np.array([image if binary else base64.b64encode(image)], dtype=np.object_), binary_data=binary)
    exp = httpclient.InferInput("expression", [len(expressions)], "BYTES")
    exp.set_data_from_numpy(np.array([e.encode() for e in expressions], dtype=np.object_), binary_data=binary)
    return [img, exp]


def test_infer_mask_equals_segment(client, server, golden):
    image, expression = golden
    expected_png = segment_png(server["url"], image, expression)
    expected = pixels(expected_png)
    assert expected.ndim == 2 and set(np.unique(expected)) <= {0, 255} and expected.max() == 255

    # tritonclient's defaults: binary tensor data both ways.
    result = client.infer("vlt-refshapes", inputs(image, [expression], binary=True))
    masks = result.as_numpy("mask")
    assert masks.shape == (1,)
    assert masks[0] == expected_png, "the same PNG bytes as POST /segment"
    assert np.array_equal(pixels(masks[0]), expected)
    conf = result.as_numpy("query_confidence")
    att = result.as_numpy("word_attention")
    model_json = json.loads((MODEL / "model.json").read_text())
    nq, words = model_json["num_queries"], model_json["max_words"]
    assert conf.shape == (1, nq) and conf.dtype == np.float32 and np.all((conf > 0) & (conf < 1))
    n = len(expression.split())
    assert att.shape == (1, nq, words)
    assert np.allclose(att[0, :, :n].sum(axis=1), 1, atol=1e-3), "attention over the words sums to 1"
    assert np.all(att[0, :, n:] == 0), "no attention on padding"
    assert result.get_response()["model_version"] == server["version"]

    # Plain JSON tensors, UINT8 masks, a version in the URL.
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in ("mask", "score")]
    as_json = client.infer("vlt-refshapes", inputs(image, [expression], binary=False), model_version=server["version"],
                           outputs=outputs, parameters={"format": "uint8"})
    raw = as_json.as_numpy("mask")
    assert raw.dtype == np.uint8 and raw.shape == (1,) + expected.shape
    assert np.array_equal(raw[0], expected)
    assert as_json.as_numpy("score").shape == (1,)


def test_second_model_and_several_expressions(client, server, golden):
    image, expression = golden
    result = client.infer("second", inputs(image, [expression, "the large circle"], binary=True))
    masks = result.as_numpy("mask")
    assert masks.shape == (2,)
    assert np.array_equal(pixels(masks[0]), pixels(segment_png(server["url"], image, expression, model="second@7")))
    assert result.get_response()["model_name"] == "second"


def test_errors_have_the_protocol_shape(client, server, golden):
    image, expression = golden
    with pytest.raises(InferenceServerException) as e:
        client.infer("no-such-model", inputs(image, [expression], binary=True))
    assert e.value.status() == "404" and "no-such-model" in e.value.message()
    with pytest.raises(InferenceServerException) as e:
        client.infer("vlt-refshapes", inputs(image, [expression], binary=True), model_version="0.0.0")
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException) as e:
        client.infer("vlt-refshapes", inputs(b"not an image", [expression], binary=True))
    assert e.value.status() == "415"
    with pytest.raises(InferenceServerException) as e:
        client.infer("vlt-refshapes", inputs(image, ["zzqx"], binary=True))
    assert e.value.status() == "422" and "no word the model knows" in e.value.message()
    # The raw body: {"error": "<message>"} and nothing else.
    req = urllib.request.Request(f"http://{server['url']}/v2/models/vlt-refshapes/infer", data=b'{"inputs": 3}', method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(req, timeout=60)
    assert http.value.code == 400
    body = json.loads(http.value.read())
    assert list(body) == ["error"] and isinstance(body["error"], str)
