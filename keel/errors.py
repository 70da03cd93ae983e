"""Errors a user can cause; each message names the file, row or column and the fix."""


class KeelError(Exception):
    """Base of the errors Keel reports to users in one sentence."""


class ConfigError(KeelError):
    """A configuration file or parameter is wrong."""


class DatasetError(KeelError):
    """An input file cannot be read as the dataset its config describes."""


class DataValidationError(KeelError):
    """The data was read but failed the expectation suite; `report` holds the details."""

    def __init__(self, message: str, report=None):
        super().__init__(message)
        self.report = report
