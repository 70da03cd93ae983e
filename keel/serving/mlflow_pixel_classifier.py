"""The models-from-code file of versions registered before text models (new versions hold
mlflow_classifier.py). Each such version holds its own copy, which imports `PixelClassifier`
from keel.serving.pyfunc: that name stays, for the same class. Keel's own loader
(keel.serving.pyfunc.load_verified_model) runs neither file."""

from mlflow.models import set_model

from keel.serving.pyfunc import PixelClassifier

set_model(PixelClassifier())
