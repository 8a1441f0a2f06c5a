"""Fixtures of the Store contract suite: every test runs once per entry of STORE_FACTORIES."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from capstan.store.base import Store
from tests.contract.factories import STORE_FACTORIES, StoreFactory, StoreOptions, StoreSession


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "store_feature(name): the test needs a store feature a factory may not support "
                   "(reopen, compaction, bookmark_interval, watch_queue_limit)")


@pytest.fixture(params=sorted(STORE_FACTORIES))
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    factory = STORE_FACTORIES[request.param]
    for marker in request.node.iter_markers("store_feature"):
        for feature in marker.args:
            reason = factory.unsupported.get(feature)
            if reason:
                pytest.skip(f"{request.param} store: {reason}")
    return factory


@pytest.fixture
async def session(store_factory: StoreFactory) -> AsyncIterator[StoreSession]:
    async with store_factory.open(StoreOptions()) as opened:
        yield opened


@pytest.fixture
def store(session: StoreSession) -> Store:
    return session.store


@pytest.fixture
def ns(session: StoreSession) -> str:
    return session.namespace
