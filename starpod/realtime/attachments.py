"""Files attached to a WebSocket chat message: validation, saving in the sender's own downloads
directory (`workspace.user_downloads_dir`), and the per-file notes appended to the model prompt.

All attachments of a message are checked before anything is written: one invalid file rejects the
whole message (`BadRequest` carrying the reason), so a user never gets a reply built on a subset.
"""
from __future__ import annotations

import base64
import binascii
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..agent.pipeline import Attachment
from ..agent.workspace import sandbox_root, user_downloads_dir
from ..config import AttachmentsConfig, Config
from ..errors import BadRequest
from ..home import PRIVATE_FILE_MODE

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MIB = 1024 * 1024
FRAME_OVERHEAD = 64 * 1024  # JSON keys, text and the other fields around one base64 file
LISTED_DOWNLOADS = 20


@dataclass
class Upload:
    """One attachment as the client sent it."""
    file_name: str
    mime_type: str
    data: str  # base64


def message_size_limit(settings: AttachmentsConfig) -> int:
    """Largest WebSocket message accepted: one file of `max_file_size` in base64 plus overhead."""
    return max(MIB, math.ceil(settings.max_file_size * 4 / 3) + FRAME_OVERHEAD)


def _megabytes(size: int) -> str:
    return f"{size / MIB:.1f}"


def extension_of(file_name: str) -> str:
    """Text after the last dot; the whole name when there is none."""
    return file_name.rsplit(".", 1)[-1]


def _decode(upload: Upload) -> bytes:
    try:
        return base64.b64decode(upload.data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"File '{upload.file_name}' is not valid base64") from exc


def validate(uploads: list[Upload], settings: AttachmentsConfig) -> list[bytes]:
    """The decoded content of every upload, or BadRequest for the first one that is not allowed."""
    if uploads and not settings.enabled:
        raise BadRequest("Attachments are disabled")
    allowed = {ext.lower().lstrip(".") for ext in settings.allowed_extensions}
    contents = []
    for upload in uploads:
        content = _decode(upload)
        if len(content) > settings.max_file_size:
            raise BadRequest(f"File '{upload.file_name}' exceeds {_megabytes(settings.max_file_size)} MB limit "
                             f"({_megabytes(len(content))} MB)")
        ext = extension_of(upload.file_name)
        if allowed and ext.lower() not in allowed:
            raise BadRequest(f"File extension '{ext}' is not allowed "
                             f"(allowed: {', '.join(settings.allowed_extensions)})")
        contents.append(content)
    return contents


def safe_name(file_name: str) -> str:
    """`file_name` with path separators, drive colons, NUL and `..` neutralised."""
    for char in ("/", "\\", ":", "\0"):
        file_name = file_name.replace(char, "_")
    return file_name.replace("..", "_") or "file"


def local_now(timezone_name: str | None) -> datetime:
    try:
        return datetime.now(ZoneInfo(timezone_name)) if timezone_name else datetime.now(timezone.utc)
    except (ZoneInfoNotFoundError, ValueError):
        return datetime.now(timezone.utc)


def _write_new(directory: Path, name: str, content: bytes) -> Path:
    """Write to `name`, or `name` with a counter when a file of that name exists already."""
    stem, dot, ext = name.rpartition(".")
    candidate, counter = name, 1
    while True:
        path = directory / candidate
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
        except FileExistsError:
            candidate = f"{stem}_{counter}{dot}{ext}" if stem else f"{name}_{counter}"
            counter += 1
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        return path


def save_for_sender(config: Config, user_id: str, is_admin: bool, uploads: list[Upload],
                    contents: list[bytes]) -> tuple[list[Attachment], str]:
    """`save` into the sender's own private downloads (WebSocket and Telegram uploads alike)."""
    return save(uploads, contents, user_downloads_dir(config, user_id), sandbox_root(config, user_id, is_admin),
                config.agent.timezone)


def save(uploads: list[Upload], contents: list[bytes], downloads: Path, workspace: Path,
         timezone_name: str | None) -> tuple[list[Attachment], str]:
    """Save validated uploads in the sender's `downloads`; returns the pipeline attachments and the
    prompt notes for them (paths relative to the sender's sandbox `workspace`, and only the files of
    that one `downloads` directory)."""
    if not uploads:
        return [], ""
    downloads.mkdir(parents=True, exist_ok=True)
    stamp = local_now(timezone_name).strftime("%Y%m%d_%H%M%S")
    attachments, notes = [], []
    for upload, content in zip(uploads, contents):
        path = _write_new(downloads, f"{stamp}_{safe_name(upload.file_name)}", content)
        is_image = upload.mime_type in IMAGE_TYPES
        attachments.append(Attachment(file_name=upload.file_name, mime_type=upload.mime_type,
                                      saved_path=str(path), data=content if is_image else None))
        kind = "image" if is_image else "file"
        notes.append(f"\n[Uploaded {kind}: {upload.file_name} ({upload.mime_type}) "
                     f"saved to: {path.relative_to(workspace)}]")
    newest = sorted(downloads.iterdir(), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    notes.append(f"\n[Files already in downloads/: {', '.join(p.name for p in newest[:LISTED_DOWNLOADS])}]")
    return attachments, "".join(notes)
