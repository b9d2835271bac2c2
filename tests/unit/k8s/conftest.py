"""Fixtures of the k8s tests."""

from __future__ import annotations

import pytest
from k8s_testlib import FakeClusterApi


@pytest.fixture
def fake_api() -> FakeClusterApi:
    return FakeClusterApi()
