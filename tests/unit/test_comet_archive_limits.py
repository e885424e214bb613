"""Comet archive uploads are checked before they are inflated: a zip bomb (a ~1 MB zip that inflates to a
GiB), too many files, or a file larger than allowed is 413 with what to do; nothing is inflated."""

from __future__ import annotations

import io
import os
import struct
import time
import tracemalloc
import zipfile
import zlib

os.environ.setdefault("COMET_ERROR_TRACKING_ENABLE", "false")  # before anything imports comet_ml

import pytest

from services.registrar.comet import (
    ArchiveLimits,
    CometArchiveError,
    CometArchiveTooLarge,
    parse_offline_archive,
)
from tests.unit.test_registrar_comet_api import client  # noqa: F401 (a fixture)

MiB = 1 << 20


def zip_bomb(mebibytes: int = 1024) -> bytes:
    """A real zip (correct sizes and CRC) whose messages.json inflates to `mebibytes` MiB of spaces, about
    1 KB per MiB compressed: deflate blocks, each ending in a full flush, repeat byte for byte."""
    chunk = b" " * MiB
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(chunk) + deflate.flush(zlib.Z_FULL_FLUSH)
    data = block * mebibytes + deflate.flush()
    crc = 0
    for _ in range(mebibytes):
        crc = zlib.crc32(chunk, crc)
    members = [(b"experiment.json", 0, b"{}", zlib.crc32(b"{}"), 2), (b"messages.json", 8, data, crc, mebibytes * MiB)]
    out, central = io.BytesIO(), io.BytesIO()
    for name, method, payload, checksum, size in members:
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 33, checksum, len(payload), size, len(name), 0))
        out.write(name + payload)
        central.write(struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 33, checksum, len(payload), size,
                                  len(name), 0, 0, 0, 0, 0, offset))
        central.write(name)
    start = out.tell()
    out.write(central.getvalue())
    out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 2, 2, len(central.getvalue()), start, 0))
    return out.getvalue()


def archive(**members: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in {"experiment.json": b"{}", "messages.json": b"", **members}.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_bomb_is_refused_before_it_is_inflated():
    bomb = zip_bomb()
    assert len(bomb) < 2 * MiB and zipfile.ZipFile(io.BytesIO(bomb)).getinfo("messages.json").file_size == 1024 * MiB
    tracemalloc.start()
    started = time.monotonic()
    with pytest.raises(CometArchiveTooLarge, match="inflates to 1,073,741,826 bytes, more than 536,870,912"):
        parse_offline_archive(bomb)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * MiB and time.monotonic() - started < 1


def test_too_many_files_and_a_file_too_large_to_read_are_refused():
    many = archive(**{f"asset-{i}": b"" for i in range(50)})
    with pytest.raises(CometArchiveTooLarge, match="52 files, more than 40"):
        parse_offline_archive(many, limits=ArchiveLimits(max_members=40))
    large = archive(**{"messages.json": b" " * 5000})
    with pytest.raises(CometArchiveTooLarge, match="messages.json in the archive inflates to 5,000 bytes, more than 4,096"):
        parse_offline_archive(large, limits=ArchiveLimits(max_member_bytes=4096))


def test_a_member_that_inflates_past_what_it_declares_is_refused():
    honest = archive(**{"messages.json": b" " * 5000})
    lying = honest.replace(struct.pack("<L", 5000), struct.pack("<L", 100))  # both headers declare 100 bytes
    with pytest.raises(CometArchiveError, match="cannot be read|inflates to more than it declares"):
        parse_offline_archive(lying)


async def test_the_upload_route_answers_413_to_a_zip_bomb(client):  # noqa: F811
    async with client:
        response = await client.post("/v1/groups/fraud/versions/comet-archive",
                                     files={"archive": ("experiment.zip", zip_bomb(), "application/zip")})
    assert response.status_code == 413, response.text
    assert "inflates to" in response.json()["detail"] and "smaller archive" in response.json()["detail"]
