"""Reading IDX files (MNIST's format): an images file and its labels file as a ParsedTable
with the same profile as a CSV; a header that cannot describe its file is a DatasetError."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from keel.core.config import DatasetConfig
from keel.core.errors import DatasetError
from keel.data.profile import ParsedTable, pixel_profile

_IDX_TYPES = {0x08: np.uint8}
# Every element type the IDX format defines (signed byte, short, int, float, double besides 0x08).
_IDX_KNOWN_TYPES = {0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E}
_IDX_MAX_DIMS = 4  # labels 1, grey images 3, colour images 4


def parse_idx_array(url: str, data: bytes) -> np.ndarray:
    """An IDX file (MNIST's format, decompressed) as a numpy array; a header that cannot
    describe the file (element type, dimension count, sizes against the length) is a DatasetError."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{url}: not an IDX file (bad magic number); point labels_path/path at MNIST-style idx files")
    dtype, ndim = data[2], data[3]
    if dtype not in _IDX_KNOWN_TYPES:
        raise DatasetError(f"{url}: the IDX header's element type 0x{dtype:02x} is not an IDX type; "
                           "the file is corrupt or not IDX, so copy it again")
    if dtype not in _IDX_TYPES:
        raise DatasetError(f"{url}: IDX element type 0x{dtype:02x} is not supported (only unsigned bytes, 0x08)")
    if not 1 <= ndim <= _IDX_MAX_DIMS:
        raise DatasetError(f"{url}: the IDX header says {ndim} dimensions (IDX files have 1 to {_IDX_MAX_DIMS}); "
                           "the file is corrupt or not IDX, so copy it again")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DatasetError(f"{url}: the IDX header is cut short: {ndim} dimensions need {offset} header bytes, "
                           f"the file has {len(data)}; the file is truncated, so copy it again")
    dims = struct.unpack(f">{ndim}I", data[4:offset])
    expected = math.prod(dims)  # Python integers: four sizes of up to 2**32 - 1 do not overflow
    values = len(data) - offset  # one byte per value: unsigned bytes are the only type read
    if values < expected:
        raise DatasetError(f"{url}: the IDX header says shape {dims} ({expected} values) but the file holds {values}; "
                           "the file is truncated, so copy it again")
    if values > expected:
        extra = values - expected
        raise DatasetError(f"{url}: the file holds {extra} byte{'s' if extra > 1 else ''} more than the {expected} values of "
                           f"the shape {dims} its IDX header says; the header or the file is corrupt, so copy it again")
    return np.frombuffer(data, dtype=_IDX_TYPES[dtype], offset=offset).reshape(dims)


def parse_idx_pair(url: str, images: np.ndarray, labels: np.ndarray, labels_url: str,
                   config: DatasetConfig, split: str = "train") -> ParsedTable:
    """An IDX images/labels pair as a ParsedTable, with the same profile as a CSV."""
    shape = config.image
    expected = (shape.height, shape.width) if shape.channels == 1 else (shape.height, shape.width, shape.channels)
    if images.shape[1:] != expected:
        raise DatasetError(f"{url}: images are {images.shape[1:]} but the dataset config says {expected}; fix image: in the config")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{labels_url}: holds {len(labels)} labels for {len(images)} images in {url}; the files do not belong together")
    matrix = images.reshape(len(images), -1)
    label_series = pd.Series(labels.astype(np.int64))
    profile = pixel_profile(matrix, None, config.pixel_columns, label_series, Path(url).name, split)
    profile["line"] = np.arange(1, len(images) + 1)  # IDX has no header line: record number
    return ParsedTable(config.expected_columns, label_series, matrix, profile)
