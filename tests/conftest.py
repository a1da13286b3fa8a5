"""Suite-wide fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def restore_logging_config() -> Iterator[None]:
    """Commands and harnesses run in-process configure structlog for the whole process (levels,
    renderers); restore it after each test so later tests see the configuration they expect."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
