"""The pixel-table modality (keel.modalities.base.Modality)."""

from __future__ import annotations


class PixelTable:
    name = "pixel-table"

    # -- read and version (data helper)
    def ingest(self, config, root):
        raise NotImplementedError

    # -- check a row (data helper)
    def expectations(self, config):
        raise NotImplementedError

    # -- group near-duplicates (data helper)
    def grouping_features(self, images):
        raise NotImplementedError

    # -- build a model (training helper)
    def build_model(self, config, meta):
        raise NotImplementedError

    # -- batch and augment (training helper)
    def batches(self, version, indices, config, device, generator, train):
        raise NotImplementedError

    # -- preprocess for serving (serving helper)
    def preprocess(self, frame, model_config):
        raise NotImplementedError


PIXEL_TABLE = PixelTable()
