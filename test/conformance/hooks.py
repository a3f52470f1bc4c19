"""Schemathesis hooks, loaded through test/conformance/schemathesis.toml.

POST /segment's `image` part may be sent as any of the image types openapi.yaml lists. Schemathesis
sends JPEG, PNG, GIF, WebP and application/octet-stream parts as raw bytes, but has no serializer
for TIFF and AVIF, and reports an error whenever its generator picks one of those two for a value
(which one it picks depends on the whole schema and the seed). They are bytes on the wire like the
others.
"""

import schemathesis

schemathesis.serializer.alias(["image/tiff", "image/avif"], "application/octet-stream")
