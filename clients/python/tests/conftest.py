"""Fixtures of the client tests: the platform comes from the harness that runs pytest
(tests/clients, a Rust test), which starts every service as a process and passes
``EASEL_URL`` and ``EASEL_TEST_CONTROL``, a port that makes users and restarts the gateway.
Without them (a developer running pytest alone) the platform tests are skipped."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Dict, Iterator

import pytest

import easel

CONTROL = os.environ.get("EASEL_TEST_CONTROL")

requires_platform = pytest.mark.skipif(
    not CONTROL, reason="needs the platform of tests/clients (EASEL_TEST_CONTROL)"
)


def _control(path: str, body: Dict[str, str]) -> Dict[str, str]:
    assert CONTROL, "EASEL_TEST_CONTROL is not set"
    request = urllib.request.Request(
        CONTROL + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def new_user(tier: str = "pro") -> Dict[str, str]:
    """A fresh user of ``tier`` (free, pro, enterprise) with an API key: tests never share one."""
    return _control("/users", {"tier": tier})


def restart_gateway() -> None:
    """Kills the gateway with SIGKILL and starts it again on the same port."""
    _control("/gateway/restart", {})


@pytest.fixture
def user() -> Dict[str, str]:
    return new_user("pro")


@pytest.fixture
def client(user: Dict[str, str]) -> Iterator[easel.Client]:
    with easel.Client(api_key=user["api_key"]) as client:
        yield client
