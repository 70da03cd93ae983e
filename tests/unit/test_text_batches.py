"""Token-id batches (dynamic padding, length buckets drawn from the loop's generator), scoring
token ids in length order, and which models fit which datasets."""

import numpy as np
import pandas as pd
import pytest
import torch

from keel.core.config import TrainConfig
from keel.core.errors import ConfigError
from keel.data.text_batches import TokenBatches
from keel.data.tokenizer import encode, pad_batch, train_wordpiece
from keel.modalities.images import IMAGE_FOLDER
from keel.modalities.pixels import PIXEL_TABLE
from keel.modalities.text import TEXT
from keel.models.device import predict_logits
from keel.models.text import bert_tiny
from tests.conftest import REPO

SMS = REPO / "data" / "sms-spam" / "sms_spam.csv.gz"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def token_ids():
    """Real SMS messages (103: not a multiple of any batch size used) as token id lists."""
    texts = pd.read_csv(SMS, nrows=400)["text"].tolist()
    tokenizer = train_wordpiece(texts, vocab_size=1000, lowercase=True)
    return encode(tokenizer, texts[:103], max_length=48)[0], tokenizer.get_vocab_size()


def _passes(source: TokenBatches, generator: torch.Generator, epochs: int) -> list[list[tuple[list, list]]]:
    return [[(tokens.tolist(), targets.tolist()) for tokens, targets in source.epoch(generator)] for _ in range(epochs)]


def test_training_batches_cover_every_row_once_padded_to_their_own_longest_text(token_ids):
    ids, _ = token_ids
    lengths = np.array([len(row) for row in ids])
    source = TokenBatches(ids, torch.arange(len(ids)), batch_size=8, device=CPU, train=True, chunk_batches=3)
    batches = list(source.epoch(torch.Generator().manual_seed(0)))
    assert len(batches) == len(source) == 4 * 3 + 1  # 4 chunks of 24 rows, then 7 rows
    rows = torch.cat([targets for _, targets in batches])
    assert sorted(rows.tolist()) == list(range(len(ids)))
    for tokens, targets in batches:
        assert tokens.dtype == torch.int64 and tokens.shape[1] == lengths[targets.numpy()].max()
        for row, target in zip(tokens.tolist(), targets.tolist()):
            assert row[:len(ids[target])] == ids[target] and set(row[len(ids[target]):]) <= {0}
    # Buckets: a batch pads far less than batches of random rows would.
    padding = sum(t.shape[1] * len(t) - lengths[r.numpy()].sum() for t, r in batches)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    random_padding = sum(lengths[c].max() * len(c) - lengths[c].sum() for c in np.array_split(shuffled, len(batches)))
    assert padding < 0.5 * random_padding


def test_training_batches_are_drawn_from_the_generator_so_a_resumed_run_repeats_them(token_ids):
    ids, _ = token_ids
    source = TokenBatches(ids, torch.arange(len(ids)), batch_size=16, device=CPU, train=True)
    straight = _passes(source, torch.Generator().manual_seed(3), epochs=3)
    generator = torch.Generator().manual_seed(3)
    first = _passes(source, generator, epochs=1)
    resumed = torch.Generator()
    resumed.set_state(generator.get_state())  # what a checkpoint restores
    assert first + _passes(source, resumed, epochs=2) == straight
    assert straight[0] != straight[1]  # another order every epoch
    assert straight == _passes(TokenBatches(ids, torch.arange(len(ids)), 16, CPU, True), torch.Generator().manual_seed(3), 3)


def test_evaluation_batches_come_in_length_order_with_their_targets(token_ids):
    ids, _ = token_ids
    targets = torch.arange(len(ids)) * 10
    source = TokenBatches(ids, targets, batch_size=32, device=CPU, train=False)
    batches = list(source.epoch(None))
    assert len(batches) == len(source) == 4
    order = torch.cat([t for _, t in batches]) // 10
    assert order.tolist() == sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    widths = [tokens.shape[1] for tokens, _ in batches]
    assert widths == sorted(widths) and widths[0] < widths[-1]


def test_token_ids_are_scored_in_length_order_and_returned_in_input_order(token_ids, monkeypatch):
    import keel.models.device

    ids, vocab = token_ids
    torch.manual_seed(0)
    model, _ = bert_tiny(vocab, 48, 3)
    model.eval()
    monkeypatch.setattr(keel.models.device, "TOKENS_PER_BATCH", 300)  # several batches, of different widths
    inputs = torch.cat([pad_batch(ids), torch.zeros(len(ids), 7, dtype=torch.int64)], dim=1)  # padded wider than any text
    logits = predict_logits(model, inputs, CPU, "fp32", batch_size=16)
    with torch.no_grad():
        one_by_one = torch.cat([model(torch.tensor([row])) for row in ids])
    torch.testing.assert_close(logits, one_by_one, rtol=1e-4, atol=1e-5)
    assert predict_logits(model, inputs[:0], CPU, "fp32").shape[0] == 0


def test_a_model_of_another_modality_is_refused_in_one_sentence():
    pixels = {"dataset": "sign-mnist", "image": {"channels": 1, "height": 28, "width": 28}, "labels": [0, 1]}
    with pytest.raises(ConfigError, match="does not fit dataset sign-mnist: .*text datasets train minilm or bert-tiny"):
        PIXEL_TABLE.build_model(TrainConfig(model="minilm"), pixels)
    photos = {**pixels, "dataset": "fruits", "image": {"channels": 3, "height": 32, "width": 32}}
    with pytest.raises(ConfigError, match="does not fit dataset fruits"):
        IMAGE_FOLDER.build_model(TrainConfig(model="bert-tiny", backbone="models:/keel-fruits@champion"), photos)
    texts = {"dataset": "sms-spam", "image": None, "labels": [0, 1], "text_column": "text"}
    for model in ("cnn", "resnet18"):
        with pytest.raises(ConfigError, match="does not fit dataset sms-spam: image folders train"):
            TEXT.build_model(TrainConfig(model=model), texts)
