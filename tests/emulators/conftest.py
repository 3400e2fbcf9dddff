"""Fixtures every emulator test module shares; each module provides its `emulator` app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from app.emulators.faults import FaultPlan
from tests.support.servers import serve_in_thread


@pytest.fixture(scope="module")
def base_url(emulator: FastAPI) -> Iterator[str]:
    """The module's emulator served over real HTTP on loopback."""
    with serve_in_thread(emulator) as url:
        yield url


@pytest.fixture
def plan(emulator: FastAPI) -> FaultPlan:
    """The emulator's fault plan, emptied before each test."""
    faults: FaultPlan = emulator.state.faults
    faults.reset()
    return faults
