"""The one multipart/form-data body builder: encoded once, ahead of a run or a request.

    body, content_type = multipart_body(image_parts(pngs))                 # files in the field `images`
    body, content_type = multipart_body([Part("note", b"hi")])             # a field that is not a file
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

BOUNDARY = "vqvae-harness-boundary"


@dataclass(frozen=True)
class Part:
    field: str
    data: bytes
    filename: str | None = None  # None: a plain form field, not a file
    content_type: str | None = None


def image_parts(images: Iterable[bytes], field: str = "images", suffix: str = "png",
                content_type: str = "image/png") -> list[Part]:
    return [Part(field, data, f"{i}.{suffix}", content_type) for i, data in enumerate(images)]


def multipart_body(parts: Iterable[Part], boundary: str = BOUNDARY) -> tuple[bytes, str]:
    """-> (body, the Content-Type header value with its boundary)."""
    chunks = []
    for part in parts:
        disposition = f'form-data; name="{part.field}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if part.content_type:
            head += f"Content-Type: {part.content_type}\r\n"
        chunks.append(head.encode() + b"\r\n" + part.data + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
