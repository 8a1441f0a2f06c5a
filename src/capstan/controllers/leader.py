"""Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules and timings.

Several operator replicas run; one leads and runs the controllers, the others wait. The lock is one Lease
object (``spec.holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``, ``renewTime``,
``leaseTransitions``), written through the Store with optimistic concurrency: every take-over and every
renewal is an update that carries the resourceVersion just read, so of two candidates writing at once
exactly one succeeds and the other gets a Conflict. Two candidates can never both hold the Lease.

Time. Clocks of different machines are never compared. A candidate judges a Lease by *its own* clock: the
moment it last saw the Lease record change (``observed``). The Lease is free once it has not changed for
``leaseDurationSeconds`` of that clock (or its holder is empty). The leader renews every ``retry_period``;
if no renewal has succeeded within ``renew_deadline`` of the moment it *sent* the last successful one, it
has lost leadership and must stop acting at once. Because a follower can only have seen that renewal after
it was sent, the follower waits at least ``lease_duration`` from a point after the leader's deadline
started: a leader stops ``lease_duration - renew_deadline`` (4 s with the defaults) before anyone else can
take over. Every wait of the renew loop and every renewal request is bounded by the deadline, so the loop
itself is the watchdog; ``LeaderElector.is_leader`` also compares against the deadline, for work that wants
to check just before it acts.

Followers watch the Lease (as a hint that wakes them up and records when it changed) and also read it
every ``retry_period``; with the watch, a dead leader's Lease is taken over ``lease_duration`` after its
last renewal. Without the watch (it failed) it takes up to one ``retry_period`` longer; never less.

A leader that stops on purpose (SIGTERM) first stops its work, then *releases* the Lease (empty holder,
duration 1 s), so the next candidate takes over within a retry period instead of waiting the Lease out.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Gauge

from capstan.api.coordinationv1 import MICRO_TIME_FORMAT
from capstan.api.errors import AlreadyExistsError, ApiError, ConflictError, GoneError, NotFoundError
from capstan.api.registry import ResourceType
from capstan.controllers import metrics
from capstan.store.base import Obj, Store

log = logging.getLogger(__name__)

LEADER_STATUS = Gauge("capstan_leader_election_master_status",
                      "1 while this process holds the leader-election Lease, else 0.", ["name"],
                      registry=metrics.REGISTRY)

Work = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""What runs while leading: gets an event that is set when it should stop gracefully."""

# client-go waits retry_period * (1 + random * JITTER) between attempts while following.
JITTER = 0.2


@dataclass(frozen=True)
class LeaderElectionConfig:
    """Which Lease, who we are, and client-go's three timings (seconds)."""

    namespace: str
    name: str
    identity: str
    # Shorter than client-go's 15/10/2 so that a dead leader is replaced within 15 s even when
    # it died just after renewing (takeover = lease_duration after the last renewal + a little).
    lease_duration: float = 12.0
    renew_deadline: float = 8.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.identity:
            raise ValueError("leader election needs a non-empty identity")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        if self.renew_deadline <= self.retry_period * (1 + JITTER):
            raise ValueError("renew_deadline must be greater than retry_period * 1.2")
        if self.lease_duration != int(self.lease_duration) or self.lease_duration < 1:
            raise ValueError("lease_duration must be a whole number of seconds (leaseDurationSeconds)")


class Outcome(enum.Enum):
    """How a term of leadership ended."""

    STOPPED = "stopped"  # asked to stop (signal): work stopped gracefully, Lease released
    LOST = "lost"  # no renewal within the renew deadline, or someone else took the Lease


class LeadershipLostError(RuntimeError):
    """The Lease was lost; the work was cancelled."""


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(MICRO_TIME_FORMAT)


class LeaderElector:
    """One candidate for one Lease. ``run(work, stop)`` campaigns, runs ``work`` while leading, and
    cancels it the moment leadership is lost."""

    def __init__(self, store: Store, config: LeaderElectionConfig, *,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.config = config
        self._leases: ResourceType = store.registry.lookup("leases.coordination.k8s.io")
        self._wall_clock = wall_clock
        self._rng = random.Random()
        # What we last saw of the Lease and when (monotonic) we saw it change.
        self._observed: Obj | None = None
        self._observed_at = 0.0
        # While leading: the monotonic time by which the next renewal must have succeeded.
        self._deadline = 0.0
        self._leading = False
        self._changed = asyncio.Event()
        self.transitions: list[tuple[float, str]] = []  # (wall time, "acquired"/"lost"/"released")

    # ---- what others may ask ---------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while we hold the Lease and the renew deadline has not passed."""
        return self._leading and time.monotonic() < self._deadline

    @property
    def holder(self) -> str | None:
        """The holder of the Lease as last observed (None when free or unknown)."""
        if self._observed is None:
            return None
        return (self._observed.get("spec") or {}).get("holderIdentity") or None

    # ---- the whole cycle -------------------------------------------------------------------------

    async def run(self, work: Work, stop: asyncio.Event) -> Outcome:
        """Wait to lead, then run ``work(work_stop)`` while renewing. ``stop`` set: ``work_stop`` is set,
        the work is awaited, the Lease released → STOPPED. Leadership lost: the work is cancelled at once
        → LOST. Work that ends by itself (or raises) ends the term too; its exception propagates after the
        Lease is released."""
        if not await self.acquire(stop):
            return Outcome.STOPPED
        work_stop = asyncio.Event()
        work_task = asyncio.create_task(work(work_stop), name=f"leader-work-{self.config.name}")
        renewing = asyncio.create_task(self._renew_until_lost(stop, work_task),
                                       name=f"lease-renew-{self.config.name}")
        try:
            outcome = await renewing
        except BaseException:  # we are being cancelled: nothing may go on acting in our name
            await _cancel(renewing)
            await _cancel(work_task)
            self._set_leading(False, "lost")
            raise
        if outcome is Outcome.LOST:
            await _cancel(work_task)
            self._set_leading(False, "lost")
            log.error("leader election: lost the Lease %s/%s; controllers cancelled",
                      self.config.namespace, self.config.name)
            return Outcome.LOST
        work_stop.set()
        try:
            await work_task
        finally:
            await self.release()
        return Outcome.STOPPED

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Block until we hold the Lease (True) or ``stop`` is set (False)."""
        watcher = asyncio.create_task(self._watch_lease(stop), name=f"lease-watch-{self.config.name}")
        try:
            while not stop.is_set():
                try:
                    if await self._try_acquire_or_renew():
                        self._set_leading(True, "acquired")
                        log.info("leader election: %s acquired the Lease %s/%s", self.config.identity,
                                 self.config.namespace, self.config.name)
                        return True
                except ApiError as exc:
                    log.warning("leader election: could not read or take the Lease: %s", exc)
                except Exception as exc:  # the Store's transport: connection refused, timeouts, ...
                    log.warning("leader election: could not reach the API: %r", exc)
                await self._wait_to_retry(stop)
            return False
        finally:
            await _cancel(watcher)

    async def release(self) -> None:
        """Give the Lease up (only if we still hold it and are within our deadline): empty holder, 1 s
        duration, so the next candidate need not wait the Lease out."""
        was_leading = self.is_leader
        self._set_leading(False, "released")
        if not was_leading:
            return
        try:
            lease = await self.store.get(self._leases, self.config.name, self.config.namespace)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.config.identity:
                return
            spec.pop("holderIdentity", None)
            spec["leaseDurationSeconds"] = 1
            spec["renewTime"] = micro_time(self._wall_clock())
            await self.store.update({**lease, "spec": spec})
            log.info("leader election: %s released the Lease", self.config.identity)
        except Exception as exc:
            # Not fatal: the Lease simply expires after lease_duration instead.
            log.warning("leader election: could not release the Lease: %r", exc)

    # ---- one attempt -----------------------------------------------------------------------------

    async def _try_acquire_or_renew(self) -> bool:
        """One read-and-write round. True when we hold the Lease afterwards; a Conflict (someone wrote in
        between) or a Lease held by someone else within its duration is False."""
        started = time.monotonic()  # before the read: the deadline counts from before our write was sent
        now = micro_time(self._wall_clock())
        try:
            lease = await self.store.get(self._leases, self.config.name, self.config.namespace)
        except NotFoundError:
            return await self._create(now, started)
        self._observe(lease)
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        ours = holder == self.config.identity
        if holder and not ours and not self._observed_expired():
            return False
        if not ours and self._leading:
            return False  # someone else took it: we lost it, never take it back silently
        transitions = int(spec.get("leaseTransitions") or 0)
        new_spec = {
            **spec,
            "holderIdentity": self.config.identity,
            "leaseDurationSeconds": int(self.config.lease_duration),
            "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours else transitions + 1,
        }
        try:
            updated = await self.store.update({**lease, "spec": new_spec})
        except ConflictError:
            return False
        self._observe(updated)
        self._deadline = started + self.config.renew_deadline
        return True

    async def _create(self, now: str, started: float) -> bool:
        lease: Obj = {
            "apiVersion": self._leases.api_version, "kind": "Lease",
            "metadata": {"name": self.config.name, "namespace": self.config.namespace},
            "spec": {"holderIdentity": self.config.identity,
                     "leaseDurationSeconds": int(self.config.lease_duration),
                     "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
        }
        try:
            created = await self.store.create(lease)
        except AlreadyExistsError:
            return False
        self._observe(created)
        self._deadline = started + self.config.renew_deadline
        return True

    # ---- leading ---------------------------------------------------------------------------------

    async def _renew_until_lost(self, stop: asyncio.Event, work: asyncio.Task[None]) -> Outcome:
        """Renew every retry_period until ``stop`` (STOPPED) or the renew deadline passes (LOST). Work that
        ends by itself ends the term as STOPPED (``run`` then surfaces its result)."""
        stopped = asyncio.create_task(stop.wait())
        try:
            while True:
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    return Outcome.LOST
                pause = min(self.config.retry_period, remaining)
                await asyncio.wait({stopped, work}, timeout=pause, return_when=asyncio.FIRST_COMPLETED)
                if stop.is_set() or work.done():
                    return Outcome.STOPPED if self.is_leader else Outcome.LOST
                remaining = self._deadline - time.monotonic()
                if remaining <= 0:
                    return Outcome.LOST
                try:
                    async with asyncio.timeout(remaining):
                        renewed = await self._try_acquire_or_renew()
                except TimeoutError:
                    return Outcome.LOST
                except Exception as exc:
                    log.warning("leader election: renewal failed: %r", exc)
                    continue
                if not renewed and self.holder not in (None, self.config.identity):
                    return Outcome.LOST  # someone else holds it now
        finally:
            stopped.cancel()

    # ---- observing -------------------------------------------------------------------------------

    def _observe(self, lease: Obj) -> None:
        """Remember the Lease; restart the expiry clock when its record changed."""
        before = self._observed
        if before is None or _record(before) != _record(lease):
            self._observed_at = time.monotonic()
            self._changed.set()
        self._observed = lease

    def _observed_duration(self) -> float:
        spec = (self._observed or {}).get("spec") or {}
        return float(spec.get("leaseDurationSeconds") or self.config.lease_duration)

    def _observed_expired(self) -> bool:
        return time.monotonic() > self._observed_at + self._observed_duration()

    def _time_to_expiry(self) -> float | None:
        """Seconds until the observed holder's Lease runs out by our clock; None without a holder."""
        if not self.holder:
            return None
        return self._observed_at + self._observed_duration() - time.monotonic()

    async def _wait_to_retry(self, stop: asyncio.Event) -> None:
        """Sleep a jittered retry period, less when the observed Lease expires sooner; wake early when the
        watch sees the Lease change (it may have been released)."""
        pause = self.config.retry_period * (1 + self._rng.random() * JITTER)
        expiry = self._time_to_expiry()
        if expiry is not None and expiry >= 0:
            pause = min(pause, expiry + 0.01)
        self._changed.clear()
        waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._changed.wait())}
        try:
            await asyncio.wait(waits, timeout=max(pause, 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _watch_lease(self, stop: asyncio.Event) -> None:
        """Follow the Lease's changes as they happen (a hint: reads every retry period are the fallback)."""
        selector = f"metadata.name={self.config.name}"
        while not stop.is_set():
            stream = self.store.watch(self._leases, self.config.namespace, field_selector=selector,
                                      bookmarks=False)
            try:
                async for event in stream:
                    if event.type in ("ADDED", "MODIFIED"):
                        self._observe(event.object)
                    elif event.type == "DELETED":
                        self._observed = None
                        self._changed.set()
            except GoneError:
                continue
            except Exception as exc:
                log.debug("leader election: Lease watch ended: %r", exc)
            finally:
                closer = getattr(stream, "aclose", None)
                if closer is not None:
                    with contextlib.suppress(Exception):
                        await closer()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.retry_period)

    def _set_leading(self, leading: bool, what: str) -> None:
        if leading != self._leading:
            self.transitions.append((time.time(), what))
        self._leading = leading
        LEADER_STATUS.labels(name=self.config.name).set(1 if leading else 0)


def _record(lease: Obj) -> tuple[object, ...]:
    """The part of a Lease whose change proves its holder is alive (client-go compares the whole record)."""
    spec = lease.get("spec") or {}
    return (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("acquireTime"),
            spec.get("leaseDurationSeconds"), spec.get("leaseTransitions"))


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
