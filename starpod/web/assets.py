"""The UI's static files, read once per process: content hash, MIME type and a gzip copy."""
from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from flask import Request, Response

STATIC_DIR = Path(__file__).parent / "static"
GZIP_MIN_BYTES = 1024  # smaller bodies gain less than the header costs
MIMETYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".svg": "image/svg+xml", ".json": "application/json"}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    mimetype: str
    etag: str


def gzip_if_worth(body: bytes) -> bytes | None:
    if len(body) < GZIP_MIN_BYTES:
        return None
    packed = gzip.compress(body, compresslevel=9, mtime=0)
    return packed if len(packed) < len(body) * 0.9 else None


def _load(path: Path) -> Asset:
    body = path.read_bytes()
    mimetype = MIMETYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Asset(body, gzip_if_worth(body), mimetype, hashlib.sha256(body).hexdigest()[:20])


class AssetStore:
    def __init__(self, root: Path = STATIC_DIR):
        self.files = {str(path.relative_to(root)): _load(path)
                      for path in sorted(root.rglob("*")) if path.is_file()}
        digest = hashlib.sha256()
        for name, found in self.files.items():
            digest.update(name.encode() + b"\0" + found.etag.encode())
        self.version = digest.hexdigest()[:12]

    def get(self, name: str) -> Asset | None:
        return self.files.get(name)

    @staticmethod
    def compressible(body: bytes, mimetype: str, request: Request, gzipped: bytes | None = None) -> Response:
        """A response with `body`, gzip-encoded when the client takes gzip and it pays."""
        if gzipped is None and mimetype.startswith("text/html"):
            gzipped = gzip_if_worth(body)
        response = Response(body, content_type=mimetype)
        if gzipped is not None and "gzip" in request.accept_encodings:
            response.set_data(gzipped)
            response.headers["Content-Encoding"] = "gzip"
        return response
