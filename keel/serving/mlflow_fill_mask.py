"""The fill-mask model as MLflow's own loaders build it (MLflow's models-from-code): a logged
masked language model holds this file instead of a pickled Python object, so loading it
unpickles nothing. Keel's own loader (keel.serving.masked_lm.load_verified_mlm) does not run it."""

from mlflow.models import set_model

from keel.serving.masked_lm import FillMask

set_model(FillMask())
