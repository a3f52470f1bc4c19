"""Client for the VLT referring image segmentation service (``POST /segment``).

    from vlt_segmentation_client import segment
    results = segment("photo.jpg", ["the red one", "the small star"], format="coco_rle")
    results[0].mask          # numpy bool array, (height, width)

Masks come back as numpy arrays whatever the wire format: ``png`` is decoded with Pillow,
``coco_rle`` (pycocotools' compressed counts, column-major) and ``polygon`` (rings on pixel
corners, holes) are decoded here with numpy alone. 503 and 429 answers are retried after their
``Retry-After``; every attempt has a timeout. Standard library HTTP (urllib), no other
dependency than numpy and Pillow.
"""
from __future__ import annotations

import io
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
from PIL import Image

__all__ = [
    "Client", "Result", "SegmentationError", "segment",
    "decode_png", "decode_coco_rle", "rasterise_polygons", "FORMATS",
]

FORMATS = ("png", "coco_rle", "polygon")
_RETRYABLE = (429, 503)


class SegmentationError(Exception):
    """The service's coded error (``code``, HTTP ``status``), or CLIENT_TIMEOUT / CLIENT_NETWORK (status 0)."""

    def __init__(self, code: str, status: int, message: str, retry_after: Optional[int] = None,
                 details: Optional[dict] = None):
        super().__init__(f"{code} ({status}): {message}" if status else f"{code}: {message}")
        self.code = code
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.details = details


@dataclass
class Result:
    """One expression's answer; ``mask`` is a bool array of shape (height, width)."""

    expression: str
    mask: np.ndarray
    score: float
    bbox: Optional[list]
    bbox_format: str
    area: int
    raw: dict = field(repr=False)


class Client:
    """A connection to one service.

    ``timeout``: seconds per attempt. ``retries``: how many times a 503 or 429 is retried, after
    its ``Retry-After`` (at most ``max_retry_wait`` seconds; 1, 2, 4 … s without the header).
    """

    def __init__(self, url: str = "http://localhost:8080", api_key: Optional[str] = None,
                 timeout: float = 30.0, retries: int = 3, max_retry_wait: float = 30.0,
                 on_retry: Optional[Callable[[int, int, str, float], None]] = None):
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("VLT_API_KEY")
        self.timeout = timeout
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.on_retry = on_retry

    def segment_json(self, image: Union[str, os.PathLike, bytes], expressions: Union[str, Sequence[str]],
                     format: str = "png", threshold: Optional[float] = None) -> dict:
        """The service's JSON answer, as sent (masks still encoded)."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        if isinstance(image, (bytes, bytearray)):
            data = image
        else:
            with open(image, "rb") as f:
                data = f.read()
        exprs = [expressions] if isinstance(expressions, str) else list(expressions)
        fields = [("expression", e) for e in exprs] + [("format", format)]
        if threshold is not None:
            fields.append(("threshold", repr(float(threshold))))
        body, content_type = _multipart(bytes(data), fields)
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        return json.loads(self._post("/segment", body, headers))

    def segment(self, image: Union[str, os.PathLike, bytes], expressions: Union[str, Sequence[str]],
                format: str = "png", threshold: Optional[float] = None) -> list:
        """One Result per expression, in order, each with its mask as a numpy bool array."""
        answer = self.segment_json(image, expressions, format=format, threshold=threshold)
        height, width = answer["image"]["height"], answer["image"]["width"]
        return [Result(expression=r["expression"], mask=decode_mask(r["mask"], height, width), score=r["score"],
                       bbox=r["bbox"], bbox_format=r["bbox_format"], area=r["area"], raw=r)
                for r in answer["results"]]

    def _post(self, path: str, body: bytes, headers: dict) -> bytes:
        if self.api_key:
            headers = {**headers, "Authorization": f"Bearer {self.api_key}"}
        attempt = 0
        while True:
            req = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as res:
                    return res.read()
            except urllib.error.HTTPError as e:
                err = _error_of(e)
                if e.code not in _RETRYABLE or attempt >= self.retries:
                    raise err from None
                wait = min(self.max_retry_wait, err.retry_after if err.retry_after is not None else 2.0 ** attempt)
                attempt += 1
                if self.on_retry is not None:
                    self.on_retry(attempt, e.code, err.code, wait)
                time.sleep(wait)
            except (TimeoutError, OSError) as e:  # socket.timeout is TimeoutError; URLError is an OSError
                reason = getattr(e, "reason", e)
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    raise SegmentationError("CLIENT_TIMEOUT", 0, f"no answer from {self.url}{path} within {self.timeout} s") from None
                raise SegmentationError("CLIENT_NETWORK", 0, f"could not reach {self.url}{path}: {reason}") from None


def segment(image: Union[str, os.PathLike, bytes], expressions: Union[str, Sequence[str]], format: str = "png",
            url: str = "http://localhost:8080", threshold: Optional[float] = None, **client_options: Any) -> list:
    """``Client(url, **client_options).segment(image, expressions, format, threshold)``."""
    return Client(url, **client_options).segment(image, expressions, format=format, threshold=threshold)


def decode_mask(mask: dict, height: int, width: int) -> np.ndarray:
    """A result's ``mask`` object (whichever encoding it holds) as a bool array (height, width)."""
    if "png" in mask:
        return decode_png(mask["png"])
    if "coco_rle" in mask:
        return decode_coco_rle(mask["coco_rle"])
    if "polygon" in mask:
        return rasterise_polygons(mask["polygon"], height, width)
    raise ValueError(f"unknown mask encoding: {sorted(mask)}")


def decode_png(data: Union[str, bytes]) -> np.ndarray:
    """A base64 string or PNG bytes → bool array (255 on the object)."""
    import base64
    raw = base64.b64decode(data) if isinstance(data, str) else data
    return np.array(Image.open(io.BytesIO(raw)).convert("L")) > 127


def _counts(s: str) -> list:
    """pycocotools' rleFrString."""
    counts: list = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode_coco_rle(rle: dict) -> np.ndarray:
    """``{size: [h, w], counts}`` (compressed string or list of runs) → bool array (h, w)."""
    h, w = rle["size"]
    counts = rle["counts"]
    runs = _counts(counts if isinstance(counts, str) else counts.decode("ascii")) if isinstance(counts, (str, bytes)) else list(counts)
    if sum(runs) != h * w:
        raise ValueError(f"RLE runs cover {sum(runs)} pixels, expected {h * w}")
    values = np.arange(len(runs)) % 2 == 1
    flat = np.repeat(values, runs)
    return flat.reshape((w, h)).T  # runs go down the columns


def rasterise_polygons(parts: list, height: int, width: int) -> np.ndarray:
    """Polygon parts (``outer`` and ``holes``, flat rings on pixel corners) → bool array.

    A pixel is on when its centre is inside an odd number of rings (even-odd over every ring:
    rings do not cross, so that is inside an outer ring and outside its holes).
    """
    out = np.zeros((height, width), dtype=bool)
    rings = [np.asarray(r, dtype=np.float64).reshape(-1, 2) for p in parts for r in [p["outer"], *p["holes"]]]
    if not rings:
        return out
    x0 = np.concatenate([r[:, 0] for r in rings])
    y0 = np.concatenate([r[:, 1] for r in rings])
    x1 = np.concatenate([np.roll(r[:, 0], -1) for r in rings])
    y1 = np.concatenate([np.roll(r[:, 1], -1) for r in rings])
    keep = y0 != y1
    x0, y0, x1, y1 = x0[keep], y0[keep], x1[keep], y1[keep]
    xs = np.arange(width) + 0.5
    for y in range(height):
        cy = y + 0.5
        hit = (y0 > cy) != (y1 > cy)
        if not hit.any():
            continue
        cross = np.sort(x0[hit] + (cy - y0[hit]) * (x1[hit] - x0[hit]) / (y1[hit] - y0[hit]))
        # Pixel centres with an odd number of crossings to their left are inside.
        out[y] = (np.searchsorted(cross, xs) % 2) == 1
    return out


def _multipart(image: bytes, fields: list) -> tuple:
    boundary = uuid.uuid4().hex
    parts = [
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"image\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\n".encode() + image + b"\r\n"
    ]
    for name, value in fields:
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n"
                     f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode() + str(value).encode("utf-8") + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _error_of(e: urllib.error.HTTPError) -> SegmentationError:
    ra = e.headers.get("Retry-After")
    retry_after = int(ra) if ra is not None and ra.strip().isdigit() else None
    try:
        err = json.loads(e.read())["error"]
        return SegmentationError(err["code"], e.code, err["message"], retry_after, err.get("details"))
    except Exception:
        return SegmentationError(f"HTTP_{e.code}", e.code, str(e.reason), retry_after)
    finally:
        e.close()  # the error holds the connection
