"""Fixtures for the write-ahead log tests."""

from __future__ import annotations

import pathlib

import pytest


@pytest.fixture
def logdir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A path for a log directory that does not exist yet (SegmentedLog.open creates it)."""
    return tmp_path / "log"
