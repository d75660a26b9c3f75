"""Adapters at run time: model names → vLLM LoRA requests, pushes, deletes, in-flight leases.

The disk (`AdapterStore`) is the truth that replicas share; this process keeps a cache of the
versions it has met, each with its own LoRA id (never reused: vLLM keys its prefix cache on
it, vllm#42125). Every request re-reads which version a name means (a pointer file), so a push,
rollback or delete made through another replica is seen at once. A version met for the first
time is checked and registered then (lazy resolution); the engine loads it on first use.
"""

import asyncio
import itertools
import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.adapters.checks import BaseModelInfo, check_adapter, inspect_base
from server.adapters.store import (
    NAME_PATTERN,
    AdapterStore,
    VersionRecord,
    check_name,
    content_hash,
)
from server.engine.generation import AdapterRef, ChoiceDelta, Engine, SamplingOptions
from server.errors import (
    InvalidAdapterError,
    InvalidRequestError,
    KangarooError,
    ModelNotFoundError,
)
from server.observability.metrics import Metrics

logger = logging.getLogger(__name__)

# The no-op check: greedy tokens and their log-probabilities on this prompt, with and without
# the adapter. An adapter whose every value stays within PROBE_TOLERANCE changes nothing.
PROBE_MESSAGES = [{"role": "user", "content": "Hello! Who are you?"}]
PROBE_TOKENS = 2
PROBE_TOLERANCE = 1e-4
# A pinned version ("name@N"): ASCII digits without a leading zero. Not str.isdigit(), which
# takes "²" (int() refuses it); 18 digits at most, far past any version (and below int()'s limit).
_PIN = re.compile(r"[1-9][0-9]{0,17}")


@dataclass
class Served:
    """One version this process has registered."""

    ref: AdapterRef
    record: VersionRecord
    leases: int = 0  # requests generating with it now
    deleted: bool = False


class AdapterRegistry:
    """The adapters of one server process, over a shared `AdapterStore`."""

    def __init__(
        self,
        root: Path,
        base_model_id: str,
        max_lora_rank: int,
        max_bytes: int,
        metrics: Metrics,
    ):
        self.store = AdapterStore(root)
        self._metrics = metrics
        self.base_model_id = base_model_id
        self._limits = (max_lora_rank, max_bytes)
        self._base: BaseModelInfo | None = None
        self._engine: Engine | None = None
        self._served: dict[tuple[str, int], Served] = {}
        self._registering: dict[tuple[str, int], asyncio.Task[Served]] = {}
        self._lora_ids = itertools.count(1)
        self._writing = asyncio.Lock()  # one push/delete at a time in this process

    async def start(self, engine: Engine, model_dir: Path) -> None:
        """Inspect the served model, clean up after crashes, register what the root holds.

        A version that fails its checks is logged and skipped; the server starts anyway.
        """
        self._base = await asyncio.to_thread(inspect_base, model_dir, *self._limits)
        self._engine = engine
        await asyncio.to_thread(self.store.sweep)
        for name in self.store.names():
            for version in self.store.versions(name):
                try:
                    await self._register(name, version)
                except KangarooError as exc:
                    logger.warning("Skipping adapter %s@%d: %s", name, version, exc)
        logger.info("Adapter registry at %s: %d version(s)", self.store.root, len(self._served))

    # Serving

    async def resolve(self, model: str) -> Served:
        """The version `model` ("name" or "name@N") means now; 404 `model_not_found` if none."""
        name, _, pin = model.partition("@")
        version = int(pin) if _PIN.fullmatch(pin) else None
        # The name becomes a path: anything but a valid name ("..", "a/b") never reaches the disk.
        if not NAME_PATTERN.fullmatch(name) or (pin and version is None):
            raise ModelNotFoundError(model)
        if version is None:
            version = self.store.active_version(name)
        if version is None or not self.store.is_live(name, version):
            raise ModelNotFoundError(model)
        served = self._served.get((name, version))
        if served is None:
            try:
                served = await self._register(name, version)
            except KangarooError as exc:
                raise ModelNotFoundError(model, f": its files fail the checks ({exc})") from None
        return served

    async def hold(
        self, served: Served, deltas: AsyncIterator[list[ChoiceDelta]]
    ) -> AsyncIterator[list[ChoiceDelta]]:
        """`deltas`, counted as a use of `served` until it ends (a delete waits for it)."""
        served.leases += 1
        try:
            async for batch in deltas:
                yield batch
        finally:
            await deltas.aclose()  # type: ignore[attr-defined]  # aborts an unfinished request
            served.leases -= 1
            if served.deleted and served.leases == 0:
                await self._drop(served)

    # Admin

    async def push(self, name: str, staged: Path) -> tuple[VersionRecord, bool]:
        """Check a staged folder, probe it in the engine, store it as `name`'s newest version.

        Returns the version and whether it is new: identical files to the newest version make
        that version active again instead of a copy. The staging folder is consumed either way.
        """
        try:
            check_name(name)
            if name == self.base_model_id:
                raise InvalidRequestError(f"'{name}' is the base model's id; pick another.", "name")
            info = await asyncio.to_thread(check_adapter, staged, self._base_info())
            sha256 = await asyncio.to_thread(content_hash, staged)
            async with self._writing:
                versions = self.store.versions(name)
                if versions and self.store.record(name, versions[-1]).sha256 == sha256:
                    self.store.set_active(name, versions[-1])
                    return self.store.record(name, versions[-1]), False
                await self._probe_changes_output(name, staged)
                record = await asyncio.to_thread(self.store.commit, name, staged, info, sha256)
        finally:
            self.store.discard(staged)  # gone after a commit (renamed); removed otherwise
        served = await self._register(name, record.version)
        await self._load(served.ref)  # now, so the first request does not wait for it
        return record, True

    def set_active(self, name: str, version: int) -> None:
        """Point `name` at one of its versions (rollback, or forward again)."""
        self.store.set_active(check_name(name), version)

    async def delete(self, name: str, version: int | None = None) -> list[int]:
        """Delete one version, or every version of `name`; the deleted version numbers.

        New requests get 404 at once (also on other replicas); requests generating with a
        deleted version finish first, then its weights leave the engine and the disk.
        """
        async with self._writing:
            versions = self.store.versions(check_name(name))
            if not versions:
                raise ModelNotFoundError(name, param="name")
            doomed = versions if version is None else [version]
            for number in doomed:
                self.store.mark_deleted(name, number)
        for number in doomed:
            served = self._served.pop((name, number), None)
            if served is None:
                await asyncio.to_thread(self.store.purge, name, number)
                continue
            served.deleted = True
            if served.leases == 0:
                await self._drop(served)
        return doomed

    def describe(self, name: str) -> dict[str, Any]:
        """An adapter with all its live versions, for the admin API."""
        versions = self.store.versions(check_name(name))
        if not versions:
            raise ModelNotFoundError(name, param="name")
        return {
            "id": name,
            "object": "adapter",
            "active_version": self.store.active_version(name),
            "versions": [self.store.record(name, v).public() for v in versions],
        }

    def names(self) -> list[str]:
        """Every adapter name on disk (all replicas' pushes included)."""
        return self.store.names()

    def active_record(self, name: str) -> VersionRecord | None:
        """The record of the version `name` means now, if any."""
        version = self.store.active_version(name)
        return None if version is None else self.store.record(name, version)

    # Internals

    def _base_info(self) -> BaseModelInfo:
        if self._base is None:
            raise KangarooError("the adapter registry has not started")
        return self._base

    def _engine_ready(self) -> Engine:
        if self._engine is None:
            raise KangarooError("the adapter registry has not started")
        return self._engine

    async def _register(self, name: str, version: int) -> Served:
        # One check per version even when several requests meet it at once.
        key = (name, version)
        if key in self._served:
            return self._served[key]
        if key not in self._registering:
            self._registering[key] = asyncio.create_task(self._check_and_register(name, version))
        try:
            return await asyncio.shield(self._registering[key])
        finally:
            self._registering.pop(key, None)

    async def _check_and_register(self, name: str, version: int) -> Served:
        path = self.store.path(name, version)
        await asyncio.to_thread(check_adapter, path, self._base_info())
        record = self.store.record(name, version)
        served = Served(AdapterRef(f"{name}@{version}", next(self._lora_ids), str(path)), record)
        self._served[(name, version)] = served
        return served

    async def _load(self, ref: AdapterRef) -> None:
        try:
            await self._engine_ready().load_adapter(ref)
        except InvalidAdapterError:
            self._metrics.adapter_loads.labels("refused").inc()
            raise
        self._metrics.adapter_loads.labels("loaded").inc()

    async def _drop(self, served: Served) -> None:
        name, version = served.record.name, served.record.version
        await self._engine_ready().remove_adapter(served.ref.lora_id)
        await asyncio.to_thread(self.store.purge, name, version)
        logger.info("Adapter %s@%d deleted", name, version)

    async def _probe_changes_output(self, name: str, staged: Path) -> None:
        """Refuse an adapter that leaves the model's output as it is (vllm#55193)."""
        engine = self._engine_ready()
        probe = AdapterRef(f"{name}@probe", next(self._lora_ids), str(staged))
        await self._load(probe)  # InvalidAdapterError when vLLM refuses it
        try:
            base, adapted = await asyncio.gather(self._probe(None), self._probe(probe))
        finally:
            await engine.remove_adapter(probe.lora_id)
        if len(base[2]) != len(base[1]):  # nothing to compare would pass any adapter
            raise KangarooError("the engine returned no log-probabilities for the probe")
        if base[:2] == adapted[:2] and all(
            abs(a - b) <= PROBE_TOLERANCE for a, b in zip(base[2], adapted[2], strict=True)
        ):
            raise InvalidAdapterError(
                "The adapter does not change the model's output: greedy tokens and their "
                f"log-probabilities on a probe prompt are the same with and without it (within "
                f"{PROBE_TOLERANCE}). Its weights may be zero (untrained) or may not reach the "
                "model's layers; vLLM would silently serve the base model."
            )

    async def _probe(self, adapter: AdapterRef | None) -> tuple[str, list[int], list[float]]:
        """Text, token ids and their log-probabilities of a short greedy answer."""
        engine = self._engine_ready()
        prompt = await asyncio.to_thread(
            lambda: engine.tokenize(engine.render_chat(PROBE_MESSAGES))
        )
        options = SamplingOptions(max_tokens=PROBE_TOKENS, temperature=0.0, logprobs=1)
        text, tokens, logprobs = "", list[int](), list[float]()
        request_id = f"adapter-probe-{uuid.uuid4().hex}"
        async for batch in engine.generate(request_id, prompt, options, adapter):
            for delta in batch:
                text += delta.text
                tokens.extend(delta.token_ids)
                logprobs.extend(lp.logprob for lp in delta.logprobs or ())
        return text, tokens, logprobs
