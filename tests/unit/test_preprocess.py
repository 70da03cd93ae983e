"""Serving's preprocessing (Modality.preprocess): the one place scoring turns rows into model
input, for batch scoring (Arrow tables) and the pyfunc model (DataFrames) alike."""

import io

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
from PIL import Image

from keel.modalities.images import IMAGE_FOLDER
from keel.modalities.pixels import PIXEL_TABLE

CONFIG = {"pixel_columns": [f"px{i}" for i in range(1, 5)], "image": {"height": 2, "width": 2, "channels": 1}}
CSV = b"id,px1,px2,px3,px4\na,0,1,2,3\nb,,1,2,3\nc,0,x,2,3\nd,0,1,2.5,3\ne,300,-1,2,3\nf,255,254,253,252\n"


def test_bad_pixels_are_refused_with_one_problem_per_reason_from_a_table_or_a_frame():
    table = pacsv.read_csv(pa.BufferReader(CSV))
    frame = pd.read_csv(io.BytesIO(CSV), dtype=str).drop(columns="id")  # text cells, as a JSON request may send
    expected = [(1, "px1", "", "empty pixel"), (2, "px2", "", "not a number"), (3, "px3", "2.5", "not a whole number"),
                (4, "px1", "300", "out of range (pixels are 0-255) (2 pixels)")]
    for rows in (table, frame):
        prepared = PIXEL_TABLE.preprocess(rows, CONFIG)
        assert list(prepared.problems.itertuples(index=False, name=None)) == expected
        assert prepared.good.tolist() == [True, False, False, False, False, True]
        assert prepared.inputs.dtype == torch.uint8 and prepared.inputs.shape == (2, 1, 2, 2)
        assert prepared.inputs.flatten().tolist() == [0, 1, 2, 3, 255, 254, 253, 252]
    assert PIXEL_TABLE.preprocess(frame, CONFIG).first_problem() == "row 1 column px1: empty pixel"  # what the pyfunc raises


def test_missing_columns_refuse_every_row():
    prepared = PIXEL_TABLE.preprocess(pd.DataFrame({"px1": [1, 2], "label": [0, 1]}), CONFIG)
    assert not prepared.good.any() and len(prepared.inputs) == 0
    assert set(prepared.problems["reason"]) == {"missing column(s) px2, px3, px4"}
    assert prepared.problems["position"].tolist() == [0, 1]


def test_photos_decode_and_a_broken_one_is_refused(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buffer, format="PNG")
    (tmp_path / "a.png").write_bytes(buffer.getvalue())
    (tmp_path / "b.jpg").write_bytes(b"not a photo")
    config = {"image": {"height": 4, "width": 4, "channels": 3}}
    prepared = IMAGE_FOLDER.preprocess(pd.DataFrame({"path": [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]}), config)
    assert prepared.good.tolist() == [True, False] and prepared.inputs.shape == (1, 3, 4, 4)
    assert prepared.inputs[0, :, 0, 0].tolist() == [200, 10, 10]
    assert prepared.problems["reason"].tolist() == ["not a decodable image (unknown or corrupt format)"]
    assert prepared.notes == [""]  # nothing changed in decoding
    refused = IMAGE_FOLDER.preprocess(pd.DataFrame({"file": ["a.png"]}), config)
    assert refused.first_problem().startswith("row 0 column path: no `path` column")
