"""Retries after 503 + Retry-After, and timeouts, against a stub HTTP server."""
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vlt_segmentation_client import Client, SegmentationError

ANSWER = {
    "model": {"name": "m", "version": "1", "provider": "cpu"}, "image": {"width": 2, "height": 1}, "format": "coco_rle",
    "results": [{"expression": "x", "tokens": [], "mask": {"coco_rle": {"size": [1, 2], "counts": [1, 1]}},
                 "score": 0.5, "bbox": [1, 0, 1, 1], "bbox_format": "xywh", "area": 1, "queries": []}],
    "timings_ms": {"decode": 0, "preprocess": 0, "inference": 0, "postprocess": 0, "total": 0},
}


def stub(plan):
    """A server answering POSTs by `plan`: a list of (status, headers, body, delay_s), the last repeated."""
    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(self.headers.get("Authorization"))
            status, headers, body, delay = plan[min(len(calls) - 1, len(plan) - 1)]
            time.sleep(delay)
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}", calls


BUSY = (503, {"Retry-After": "0"}, {"error": {"code": "SEG_ERR_QUEUE_FULL", "message": "busy"}}, 0)
OK = (200, {}, ANSWER, 0)


def test_503_is_retried_after_retry_after():
    server, url, calls = stub([BUSY, BUSY, OK])
    seen = []
    try:
        results = Client(url, api_key="k", on_retry=lambda *a: seen.append(a)).segment(b"img", "x", format="coco_rle")
    finally:
        server.shutdown()
        server.server_close()
    assert len(calls) == 3 and calls[0] == "Bearer k"
    assert seen == [(1, 503, "SEG_ERR_QUEUE_FULL", 0), (2, 503, "SEG_ERR_QUEUE_FULL", 0)]
    assert results[0].mask.tolist() == [[False, True]] and results[0].bbox_format == "xywh"


def test_gives_up_after_the_retries():
    server, url, calls = stub([BUSY])
    try:
        with pytest.raises(SegmentationError) as e:
            Client(url, retries=2).segment(b"img", "x")
    finally:
        server.shutdown()
        server.server_close()
    assert (e.value.code, e.value.status, e.value.retry_after, len(calls)) == ("SEG_ERR_QUEUE_FULL", 503, 0, 3)


def test_other_errors_are_not_retried():
    server, url, calls = stub([(415, {}, {"error": {"code": "SEG_ERR_NOT_AN_IMAGE", "message": "no"}}, 0)])
    try:
        with pytest.raises(SegmentationError) as e:
            Client(url).segment(b"img", "x")
    finally:
        server.shutdown()
        server.server_close()
    assert (e.value.code, e.value.status, len(calls)) == ("SEG_ERR_NOT_AN_IMAGE", 415, 1)


def test_timeout():
    server, url, _ = stub([(200, {}, ANSWER, 3)])
    try:
        with pytest.raises(SegmentationError) as e:
            Client(url, timeout=0.2, retries=0).segment(b"img", "x")
    finally:
        server.shutdown()
        server.server_close()
    assert e.value.code == "CLIENT_TIMEOUT"


def test_no_server():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SegmentationError) as e:
        Client(f"http://127.0.0.1:{port}").segment(b"img", "x")
    assert e.value.code == "CLIENT_NETWORK"


def test_bad_format_is_refused_before_sending():
    with pytest.raises(ValueError):
        Client("http://127.0.0.1:9").segment(b"img", "x", format="svg")
