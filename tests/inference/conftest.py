"""Fixtures of the inference tests."""

from tests.inference.cluster_helpers import cluster_env  # noqa: F401 - a database for real qcluster processes
