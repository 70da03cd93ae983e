import pytest

from keel.core.config import TrainConfig, load_dataset_config
from keel.core.errors import ConfigError
from tests.conftest import REPO


def test_shipped_configs_load():
    sign = load_dataset_config(REPO / "conf/datasets/sign-mnist.yaml")
    assert sign.format == "csv" and sign.image.n_pixels == 784
    assert len(sign.labels) == 24 and 9 not in sign.labels and sign.classes[24] == "Y"
    assert sign.expected_columns[:2] == ["label", "pixel1"] and sign.expected_columns[-1] == "pixel784"
    mnist = load_dataset_config(REPO / "conf/datasets/mnist.yaml")
    assert mnist.format == "idx" and mnist.class_names == [str(i) for i in range(10)]
    assert mnist.resolve(mnist.train[0].path) == str(REPO / "data/mnist/train-images-idx3-ubyte.gz")


def test_invalid_config_names_file_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nformat: xlsx\ntrain: [{path: a.csv}]\nimage: {height: 28, width: 28}\nclasses: [a, b]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*format"):
        load_dataset_config(path)


def test_missing_config_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset_config(tmp_path / "nope.yaml")


def test_idx_source_needs_labels(tmp_path):
    path = tmp_path / "idx.yaml"
    path.write_text("name: x\nformat: idx\ntrain: [{path: a.gz}]\nimage: {height: 28, width: 28}\nclasses: [a, b]\n")
    with pytest.raises(ConfigError, match="labels_path"):
        load_dataset_config(path)


def test_train_config_rejects_nonsense():
    with pytest.raises(ValueError):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError):
        TrainConfig(model="resnet9000")
