"""Keel: the library behind the pipeline. Pure logic, importable without Prefect."""

__version__ = "0.1.0"
