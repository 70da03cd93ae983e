"""Tokenizers for text models: the packaged MiniLM vocabulary read as transformers reads it, a
WordPiece vocabulary trained on real SMS messages (the same file every time), truncation,
padding and the out-of-vocabulary rate."""

import pandas as pd
import pytest

from keel.core.errors import ConfigError
from keel.data.tokenizer import (MINILM_SHA256, SPECIAL, check_minilm, encode, load_tokenizer, minilm_folder, oov_rate,
                                 pad_batch, train_wordpiece)
from tests.conftest import REPO

SMS = REPO / "data" / "sms-spam" / "sms_spam.csv.gz"
TEXTS = ["Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005.",
         "Ok lar... Joking wif u oni...", "  Héllo   WORLD!  naïve café  ", "U dun say so early hor... U c already then say...",
         "This one is long enough to be cut: " + "word " * 40]


@pytest.fixture(scope="module")
def messages() -> list[str]:
    return pd.read_csv(SMS, nrows=1500)["text"].tolist()


@pytest.fixture(scope="module")
def trained(messages):
    return train_wordpiece(messages[:1000], vocab_size=2000, lowercase=True)


def test_the_packaged_minilm_tokenizer_encodes_as_transformers_does():
    from transformers import AutoTokenizer

    tokenizer = load_tokenizer(minilm_folder() / "tokenizer.json")
    assert tokenizer.get_vocab_size() == 30522 and tokenizer.token_to_id("[PAD]") == 0
    assert tokenizer.padding is None and tokenizer.truncation is None  # the file pads to 128: encode cuts, pad_batch pads
    reference = AutoTokenizer.from_pretrained(str(minilm_folder()), local_files_only=True)
    ids, lengths = encode(tokenizer, TEXTS, max_length=16)
    assert ids == reference(TEXTS, truncation=True, max_length=16)["input_ids"]
    assert lengths.tolist() == [len(row) for row in reference(TEXTS)["input_ids"]]
    assert max(lengths) > 16 and max(len(row) for row in ids) == 16


def test_a_trained_vocabulary_is_bert_shaped_and_the_same_every_time(messages, trained):
    assert trained.to_str() == train_wordpiece(messages[:1000], vocab_size=2000, lowercase=True).to_str()
    assert [trained.id_to_token(i) for i in range(len(SPECIAL))] == SPECIAL
    assert 1000 < trained.get_vocab_size() <= 2000
    encoding = trained.encode("Call me ##now [MASK]")
    assert encoding.tokens[0] == "[CLS]" and encoding.tokens[-1] == "[SEP]"
    assert "[MASK]" in encoding.tokens and "##now" not in encoding.tokens  # only the real special tokens match raw text
    assert trained.decode(trained.encode("ok lar, joking wif u oni").ids) == "ok lar, joking wif u oni"


def test_encode_cuts_to_max_length_and_pad_batch_pads_with_zeros(trained):
    ids, lengths = encode(trained, TEXTS, max_length=12)
    full, _ = encode(trained, TEXTS, max_length=512)
    assert lengths.tolist() == [len(row) for row in full]
    for cut, whole in zip(ids, full):
        assert cut == (whole if len(whole) <= 12 else whole[:11] + [SPECIAL.index("[SEP]")])
    batch = pad_batch(ids)
    assert batch.dtype.is_floating_point is False and batch.shape == (len(TEXTS), max(len(r) for r in ids))
    for row, tokens in zip(batch.tolist(), ids):
        assert row[:len(tokens)] == tokens and set(row[len(tokens):]) <= {0}


def test_the_oov_rate_is_the_share_of_words_the_vocabulary_cannot_spell(messages, trained):
    assert oov_rate(trained, messages[1000:1500]) < 0.01
    greek = ["Καλημέρα σας, πού είναι ο σταθμός;", "Ευχαριστώ πολύ για τη βοήθεια"]
    assert oov_rate(trained, greek) > 0.5
    assert oov_rate(trained, ["hello ψψψ"]) == pytest.approx(0.5) and oov_rate(trained, ["", "  "]) == 0.0


def test_the_packaged_encoder_is_read_only_when_its_files_are_the_pinned_ones(tmp_path):
    folder = minilm_folder()  # the installed package passes
    copy = tmp_path / "model"
    copy.mkdir()
    for name in MINILM_SHA256:
        (copy / name).write_bytes((folder / name).read_bytes())
    assert check_minilm(copy) == copy
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    (tampered / "tokenizer.json").write_text((folder / "tokenizer.json").read_text().replace('"[UNK]"', '"[UNKNOWN]"'))
    with pytest.raises(ConfigError, match="tokenizer.json has sha256 .* not the all-MiniLM-L6-v2 file Keel pins"):
        check_minilm(tampered)
    with pytest.raises(ConfigError, match="cannot be read"):
        check_minilm(tmp_path / "missing")
