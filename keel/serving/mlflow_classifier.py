"""The classifier as MLflow's own loaders build it (MLflow's models-from-code): a logged Keel
model holds this file instead of a pickled Python object, so loading it unpickles nothing.
Keel's own loader (keel.serving.pyfunc.load_verified_model) does not run it."""

from mlflow.models import set_model

from keel.serving.pyfunc import Classifier

set_model(Classifier())
