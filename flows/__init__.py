"""Keel's Prefect flows: each chains the tasks of one user journey (the `keel` command is cli/)."""

import logging

from keel.core.secrets import install_log_redaction

# The CLI, workers and deployments import flows/ first: from here on no log record of the
# process carries a credential (a URL's password, a token), whichever handler sends it on.
install_log_redaction()

# The library's progress records (INFO of the "keel" loggers) reach a flow run's logs on a worker
# too, where the `keel` command's own set-up (cli/main.py) does not run.
if logging.getLogger("keel").level == logging.NOTSET:
    logging.getLogger("keel").setLevel(logging.INFO)
