"""Read and write IDX files (the MNIST format), plain or gzip-compressed.

Layout: two zero bytes, a dtype code, the number of dimensions, one big-endian int32 per
dimension, then the array in big-endian C order. Reading checks every part of that.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from mmdgm.data.errors import DataFileError
from mmdgm.data.paths import atomic_open

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES: dict[str, int] = {dt.str.lstrip("<>|="): code for code, dt in DTYPES.items()}


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataFileError(f"{path}: corrupt gzip stream ({e})") from e


def read_idx(path: Path) -> np.ndarray:
    """The array stored in the IDX file `path` (native byte order).

    Raises:
        FileNotFoundError: the file does not exist.
        DataFileError: bad magic number, unknown dtype code, or a size that does not
            match the dimensions in the header.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataFileError(f"{path}: {len(raw)} bytes is too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0:
        raise DataFileError(f"{path}: bad IDX magic number {raw[:4].hex()} (must start with 0000)")
    code, ndim = raw[2], raw[3]
    if code not in DTYPES:
        raise DataFileError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFileError(f"{path}: truncated header ({len(raw)} bytes, need {header})")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataFileError(
            f"{path}: size {len(raw)} bytes does not match dims {dims} of {dtype} "
            f"({expected} bytes expected); the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write `array` as an IDX file (gzip-compressed if `path` ends in .gz), atomically."""
    path = Path(path)
    array = np.asarray(array)
    key = array.dtype.str.lstrip("<>|=")
    if key not in CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; use one of {sorted(CODES)}")
    if array.ndim > 255:
        raise ValueError(f"IDX stores at most 255 dimensions, got {array.ndim}")
    code = CODES[key]
    body = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, ">u4").tobytes()
        + np.ascontiguousarray(array, DTYPES[code]).tobytes()
    )
    with atomic_open(path) as f:
        f.write(gzip.compress(body, mtime=0) if path.suffix == ".gz" else body)
    return path
