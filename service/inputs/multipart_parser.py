"""multipart/form-data -> the files of one field, in memory, with python-multipart's parser.

Starlette's form parser makes an UploadFile with a SpooledTemporaryFile for every part and a
FormData of them all: for 64 digits of 300 bytes that was most of the request's parsing time
(py-spy, BENCHMARKS.md). The body is already bounded (the body-size middleware and the memory
budget's hold), so the parts are kept as bytes, and the count of parts is checked as they arrive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from runtime import BadRequest, TooManyImages

MAX_FIELDS = 64  # parts that are not files: a form's extra fields, bounded


@dataclass
class ReceivedPart:
    name: str = ""
    filename: str | None = None  # None for a plain field
    data: bytearray = field(default_factory=bytearray)


class _Collector:
    """python-multipart's callbacks: headers parsed for name and filename, data appended."""

    def __init__(self, field_name: str, max_files: int) -> None:
        self.field_name, self.max_files = field_name, max_files
        self.parts: list[ReceivedPart] = []
        self.files = self.fields = 0
        self._header_name, self._header_value = bytearray(), bytearray()
        self._disposition = b""
        self.ended = False  # the closing boundary was seen

    def part_begin(self) -> None:
        self.parts.append(ReceivedPart())
        self._disposition = b""

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise BadRequest('malformed multipart body: a part\'s Content-Disposition has no "name"')
        part = self.parts[-1]
        part.name = options[b"name"].decode("utf-8", "replace")
        filename = options.get(b"filename")
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if part.filename is not None and part.name == self.field_name:
            self.files += 1
            if self.files > self.max_files:
                raise TooManyImages(f"more than {self.max_files} images in one request; the limit is {self.max_files}")
        else:
            self.fields += 1
            if self.fields > MAX_FIELDS:
                raise BadRequest(f"malformed multipart body: more than {MAX_FIELDS} parts that are not images")
            part.data = bytearray()  # a field's value is not kept: only its name, for the error message

    def part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.parts[-1]
        if part.filename is not None and part.name == self.field_name:
            part.data += data[start:end]

    def end(self) -> None:
        self.ended = True


async def multipart_files(content_type: str, chunks: AsyncIterator[bytes], field_name: str,
                          max_files: int) -> tuple[list[ReceivedPart], list[str]]:
    """-> (the files of `field_name` in the order sent, the names of every other part).
    BadRequest when the body is malformed, TooManyImages past `max_files` (as soon as it is)."""
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadRequest("malformed multipart body: the content type has no boundary")
    collector = _Collector(field_name, max_files)
    callbacks = {"on_part_begin": collector.part_begin, "on_header_field": collector.header_field,
                 "on_header_value": collector.header_value, "on_header_end": collector.header_end,
                 "on_headers_finished": collector.headers_finished, "on_part_data": collector.part_data,
                 "on_end": collector.end}
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]  # a bad boundary raises here
        async for chunk in chunks:
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    if not collector.ended:  # cut short: its last part would be a truncated file
        raise BadRequest("malformed multipart body: it ends before its closing boundary")
    def is_file(part: ReceivedPart) -> bool:
        return part.filename is not None and part.name == field_name

    return [p for p in collector.parts if is_file(p)], sorted({p.name for p in collector.parts if not is_file(p)})
