"""The anomaly scorer as MLflow's own loaders build it (MLflow's models-from-code): a logged
Keel model holds this file instead of a pickled Python object, so loading it unpickles nothing."""

from mlflow.models import set_model

from keel.serving.pyfunc import AnomalyScorer

set_model(AnomalyScorer())
