"""Simulator options: ``--sim-seed N`` (or env SIM_SEED=N) runs the randomized test on one seed,
e.g. the seed a failing run printed."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--sim-seed", type=int, default=None, help="run the random sim on one seed")


@pytest.fixture
def sim_seed(request: pytest.FixtureRequest) -> int | None:
    # The option exists only when pytest starts in tests/sim (this conftest loads early then).
    seed = request.config.getoption("--sim-seed", default=None)
    if seed is None and os.environ.get("SIM_SEED"):
        seed = int(os.environ["SIM_SEED"])
    return seed
