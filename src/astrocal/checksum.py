"""SHA-256 of files: what provenance records and completeness checks compare.

One function, used wherever astrocal records or checks a file's content (the Earth-orientation
tables, catalogues, the result set's manifest, the chain's inputs, the same frame listed
twice).
"""
from __future__ import annotations

import hashlib
import os

__all__ = ["file_sha256"]


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """Hex SHA-256 of the bytes of a file.

    The file is read ``block`` bytes at a time, so a file of any size is hashed in bounded
    memory.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    block : int, optional
        Bytes read at a time (default 1 MiB).

    Returns
    -------
    str
        The SHA-256 of the file's bytes, 64 lower-case hexadecimal digits.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
