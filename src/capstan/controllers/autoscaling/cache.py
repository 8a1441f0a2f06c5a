"""One set of scalers per ScaledObject (or ScaledJob) generation.

The set is built from the object's triggers and the resolved configs (authentication, target
environment); it is reused across polls while the fingerprint (generation + resolved configs)
stays the same, and closed when the object changes or goes. A trigger whose read fails is
rebuilt before its next read (KEDA's refreshScaler), without touching the other triggers.
Scalers that need I/O before they know their metric specs (``Scaler.prepare``, e.g. the external
scaler's GetMetricSpec) are prepared by the first read, concurrently and bounded, never on the
build path; one that cannot be prepared is a failing trigger (metric ``s{index}-{type}``), retried
every pass, so health, fallback and Ready treat it like any other failure.
Push scalers run in their own task and call ``wake`` when their source changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from capstan.scalers.base import MetricResult, MetricSpec, PushScaler, Scaler, ScalerConfig, ScalerError
from capstan.scalers.registry import build_scaler

log = logging.getLogger(__name__)

Wake = Callable[[bool], None]


@dataclass(frozen=True)
class Reading:
    """One metric of one trigger, read this pass."""

    index: int
    config: ScalerConfig
    spec: MetricSpec
    result: MetricResult | None
    error: str | None
    seconds: float


def unprepared_spec(config: ScalerConfig) -> MetricSpec:
    """What a trigger whose metric specs are not known yet (its ``prepare()`` failed) is reported
    as: one metric ``s{index}-{type}``, so its failures are counted (health, fallback) like any
    trigger's until the specs arrive."""
    return MetricSpec(name=f"s{config.trigger_index}-{config.trigger_type}", target=1.0,
                      target_type=config.metric_type)


@dataclass
class ScalerSet:
    fingerprint: Hashable
    configs: tuple[ScalerConfig, ...]
    scalers: list[Scaler]
    specs: list[list[MetricSpec] | None]
    """None: the scaler's ``prepare()`` has not succeeded yet (it is retried before every read)."""
    push_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stale: set[int] = field(default_factory=set)

    @classmethod
    def build(cls, fingerprint: Hashable, configs: Sequence[ScalerConfig], wake: Wake | None) -> ScalerSet:
        """Build every scaler; a ScalerConfigError of any trigger propagates (after closing the others).
        No I/O: the specs of scalers that need ``prepare()`` are loaded by ``read_all``."""
        scalers: list[Scaler] = []
        try:
            for config in configs:
                scalers.append(build_scaler(config))
            specs = [None if scaler.needs_prepare else scaler.metric_specs() for scaler in scalers]
        except BaseException:
            for scaler in scalers:
                _close_soon(scaler)
            raise
        built = cls(fingerprint, tuple(configs), scalers, specs)
        if wake is not None:
            for scaler in scalers:
                if isinstance(scaler, PushScaler):
                    built.push_tasks.append(asyncio.create_task(_follow(scaler, wake)))
        return built

    async def read_all(self) -> list[Reading]:
        """Read every metric of every trigger concurrently, each bounded by its trigger's timeout;
        triggers still to be prepared are prepared first (concurrently, bounded the same way)."""
        pending = [index for index, specs in enumerate(self.specs) if specs is None]
        failed = dict(zip(pending, await asyncio.gather(*(self._prepare(i) for i in pending)), strict=True))
        jobs = []
        for index, specs in enumerate(self.specs):
            if specs is None:
                jobs.append(self._unprepared(index, failed.get(index) or "not prepared"))
            else:
                jobs.extend(self._read(index, spec) for spec in specs)
        return list(await asyncio.gather(*jobs))

    async def _prepare(self, index: int) -> tuple[str, float] | None:
        """Run the scaler's ``prepare()`` and take its specs; (error, seconds) when that failed."""
        config, scaler = self.configs[index], self.scalers[index]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(config.timeout_seconds + 1.0):
                await scaler.prepare()
            self.specs[index] = scaler.metric_specs()
            return None
        except TimeoutError:
            error = f"no answer within {config.timeout_seconds:g}s"
        except ScalerError as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:  # a scaler bug must not stop the object's other triggers
            log.exception("%s: prepare failed", config.label)
            error = f"{type(exc).__name__}: {exc}"
        return error, time.perf_counter() - started

    async def _unprepared(self, index: int, failure: tuple[str, float] | str) -> Reading:
        error, seconds = failure if isinstance(failure, tuple) else (failure, 0.0)
        config = self.configs[index]
        return Reading(index, config, unprepared_spec(config), None, error, seconds)

    async def _read(self, index: int, spec: MetricSpec) -> Reading:
        config = self.configs[index]
        if index in self.stale:
            await self._rebuild(index)
        scaler = self.scalers[index]
        started = time.perf_counter()
        try:
            # The scaler bounds its own waits; this is the backstop for one that does not.
            async with asyncio.timeout(config.timeout_seconds + 1.0):
                result = await scaler.get_metrics_and_activity(spec.name)
        except TimeoutError:
            self.stale.add(index)
            return Reading(index, config, spec, None, f"no answer within {config.timeout_seconds:g}s",
                           time.perf_counter() - started)
        except ScalerError as exc:
            self.stale.add(index)
            return Reading(index, config, spec, None, str(exc) or type(exc).__name__, time.perf_counter() - started)
        except Exception as exc:  # a scaler bug must not stop the object's other triggers
            self.stale.add(index)
            log.exception("%s failed", config.label)
            return Reading(index, config, spec, None, f"{type(exc).__name__}: {exc}", time.perf_counter() - started)
        return Reading(index, config, spec, result, None, time.perf_counter() - started)

    async def _rebuild(self, index: int) -> None:
        self.stale.discard(index)
        old = self.scalers[index]
        if old.is_push:
            return  # a push scaler reconnects by itself; rebuilding would restart its follower
        try:
            fresh = build_scaler(self.configs[index])
        except ScalerError:
            return
        self.scalers[index] = fresh
        _close_soon(old)

    async def aclose(self) -> None:
        for task in self.push_tasks:
            task.cancel()
        await asyncio.gather(*self.push_tasks, return_exceptions=True)
        for scaler in self.scalers:
            with contextlib.suppress(Exception):
                await scaler.aclose()


async def _follow(scaler: PushScaler, wake: Wake) -> None:
    while True:
        try:
            await scaler.run(wake)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: push follower failed; restarting in 5 s", scaler.config.label)
            await asyncio.sleep(5)


def _close_soon(scaler: Scaler) -> None:
    async def close() -> None:
        with contextlib.suppress(Exception):
            await scaler.aclose()

    with contextlib.suppress(RuntimeError):
        task = asyncio.get_running_loop().create_task(close())
        _closing.add(task)
        task.add_done_callback(_closing.discard)


_closing: set[asyncio.Task[None]] = set()
CLOSE_TIMEOUT_SECONDS = 10.0


def _close_set_soon(scaler_set: ScalerSet) -> None:
    """Close in the background, bounded: a scaler slow to close never holds up a pass."""

    async def close() -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await scaler_set.aclose()
        except TimeoutError:
            log.warning("closing the scalers of %s took over %gs; left behind", scaler_set.configs[:1],
                        CLOSE_TIMEOUT_SECONDS)

    task = asyncio.get_running_loop().create_task(close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


class ScalerCache:
    """Scaler sets by object key."""

    def __init__(self) -> None:
        self._sets: dict[Hashable, ScalerSet] = {}

    def get(self, key: Hashable, fingerprint: Hashable) -> ScalerSet | None:
        found = self._sets.get(key)
        return found if found is not None and found.fingerprint == fingerprint else None

    async def put(self, key: Hashable, scaler_set: ScalerSet) -> None:
        old = self._sets.get(key)
        self._sets[key] = scaler_set
        if old is not None and old is not scaler_set:
            _close_set_soon(old)

    async def drop(self, key: Hashable) -> None:
        old = self._sets.pop(key, None)
        if old is not None:
            _close_set_soon(old)

    async def close_all(self) -> None:
        sets = list(self._sets.values())
        self._sets.clear()
        if sets:
            await asyncio.wait([asyncio.create_task(s.aclose()) for s in sets], timeout=CLOSE_TIMEOUT_SECONDS)

    def __len__(self) -> int:
        return len(self._sets)
