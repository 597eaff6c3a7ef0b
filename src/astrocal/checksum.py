"""SHA-256 of files: what provenance records and completeness checks compare.

One function, used wherever astrocal records or checks a file's content (the Earth-orientation
tables, catalogues, the result set's manifest, the chain's inputs, the same frame listed
twice).
"""
from __future__ import annotations

import hashlib

__all__ = ["file_sha256"]


def file_sha256(path, block=1 << 20) -> str:
    """Hex SHA-256 of the bytes of the file ``path``, read ``block`` bytes at a time (so a
    file of any size is hashed in bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
