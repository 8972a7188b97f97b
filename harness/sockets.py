"""Raw HTTP/1.1 over a socket, for what an HTTP client library will not do: send a request's headers
and only part of its body, then hold the connection open (a slow or stalled upload, a client
holding sockets), dribble the rest, or stop mid-chunk.

    conn = held_upload(url, "/encode", {"content-type": "image/png", "content-length": "8388608"}, b"x")
    ...                                   # the server has the headers and one byte
    answer = read_answer(conn)            # "HTTP/1.1 408 ..." once the body deadline passes
"""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit


def held_upload(url: str, path: str, headers: dict[str, str], first_bytes: bytes = b"",
                timeout: float = 60) -> socket.socket:
    """A connection that has sent a POST's headers (plus Host and Connection: close) and
    `first_bytes` of its body, and then waits. For a chunked upload, give `transfer-encoding:
    chunked` in headers and pass `first_bytes` already framed (see `chunk`)."""
    parts = urlsplit(url)
    conn = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=timeout)
    lines = [f"POST {path} HTTP/1.1", f"Host: {parts.hostname}", "Connection: close",
             *(f"{name}: {value}" for name, value in headers.items())]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + first_bytes)
    return conn


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (b"" gives the last chunk)."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def dribble(conn: socket.socket, data: bytes, every_s: float) -> None:
    """Send `data` a byte at a time, `every_s` apart; stops quietly when the server closes."""
    for i in range(len(data)):
        try:
            conn.sendall(data[i : i + 1])
        except OSError:
            return
        time.sleep(every_s)


def read_answer(conn: socket.socket) -> str:
    """Everything the server sends until it closes (requests from held_upload ask it to)."""
    answer = b""
    try:
        while chunk := conn.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass  # closed with unread body bytes still in its buffer: what it sent first is here
    return answer.decode(errors="replace")


def status_of(answer: str) -> int:
    """The status code of a raw answer; 0 when there was none."""
    head = answer.split(" ", 2)
    return int(head[1]) if len(head) > 1 and answer.startswith("HTTP/") and head[1].isdigit() else 0
