"""Keel's Prefect flows: each chains the tasks of one user journey (the `keel` command is cli/)."""

from keel.core.secrets import install_log_redaction

# The CLI, workers and deployments import flows/ first: from here on no log record of the
# process carries a credential (a URL's password, a token), whichever handler sends it on.
install_log_redaction()
