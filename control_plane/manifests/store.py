"""Every model's parsed manifest, read from disk once per replica and kept.

Triton names are content-addressed and immutable, so the manifest under a name never
changes while its model is registered: registration, warm-up, the runtime cache and
`GET /api/v1/models/{id}` share one parsed handle instead of reading and parsing the
file each time. An entry leaves on `model_deleted`, and a read that finds the file
gone or invalid leaves none, so callers raise what they raised before (the OSError
or pydantic.ValidationError of the read). Registration alone reads afresh
(`reload`): it is where a changed file must be noticed. Blocking file IO runs in a
thread; concurrent first reads of one name share a single read.
"""

from __future__ import annotations

import asyncio
import errno
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pydantic

from conch_manifest.layout import manifest_path
from conch_manifest.schema import Manifest
from control_plane.core import metrics
from control_plane.core.settings import default

_CACHE_HIT, _CACHE_MISS = metrics.cache_results("manifests")


@dataclass(frozen=True)
class StoredManifest:
    manifest: Manifest
    size_bytes: int | None  # the manifest plus the files it lists, None when unknowable


class _NamesModel(Protocol):
    @property
    def triton_name(self) -> str: ...


def _directory_size(root: Path, manifest: Manifest, manifest_bytes: int) -> int | None:
    """Bytes of the manifest and of the files it lists (no directory walk). A listed
    file that is missing adds nothing; one resolving outside the model is not counted."""
    try:
        real_root = root.resolve()
        size = manifest_bytes
        for relative in manifest.files:
            path = root / relative
            if path.resolve().is_relative_to(real_root) and path.is_file():
                size += path.stat().st_size
    except OSError:  # unreadable, a link loop: the repository report says which
        return None
    return size


class ManifestStore:
    def __init__(
        self, repository: Path, max_entries: int = default("manifest_cache_max_entries")
    ) -> None:
        self.repository = repository
        self._max = max_entries
        self._entries: OrderedDict[str, StoredManifest] = OrderedDict()
        self._pending: dict[str, asyncio.Task[StoredManifest]] = {}
        # Bumped by every `forget`: a read that overlapped one answers once, unstored.
        self._generation = 0
        self.reads: Counter[str] = Counter()  # manifest files read from disk, by name

    def __contains__(self, triton_name: object) -> bool:
        return triton_name in self._entries

    async def get(self, triton_name: str) -> StoredManifest:
        """The stored manifest, read on the first call (raises what the read raised)."""
        entry = self._entries.get(triton_name)
        if entry is not None:
            self._entries.move_to_end(triton_name)
            _CACHE_HIT.inc()
            return entry
        _CACHE_MISS.inc()
        pending = self._pending.get(triton_name)
        if pending is None:
            pending = asyncio.create_task(self._read(triton_name))
            self._pending[triton_name] = pending
            pending.add_done_callback(lambda task: self._done(triton_name, task))
        # Shielded: one caller giving up must not cancel the read the others wait for.
        return await asyncio.shield(pending)

    async def still_present(self, triton_name: str) -> StoredManifest:
        """`get`, after checking that the manifest file is still on disk (one stat): a
        model whose files were removed must not be served from what was parsed before."""
        path = manifest_path(self.repository, triton_name)
        if not await asyncio.to_thread(path.is_file):
            self.forget(triton_name)
            raise FileNotFoundError(errno.ENOENT, "manifest missing from the model repository")
        return await self.get(triton_name)

    async def reload(self, triton_name: str) -> StoredManifest:
        """Read the file again whatever is stored (registration: has it changed?)."""
        return await self._read(triton_name)

    def forget(self, triton_name: str) -> None:
        self._generation += 1
        self._entries.pop(triton_name, None)

    async def on_model_deleted(self, event: _NamesModel) -> None:
        self.forget(event.triton_name)

    def _done(self, triton_name: str, task: asyncio.Task[StoredManifest]) -> None:
        if self._pending.get(triton_name) is task:
            del self._pending[triton_name]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    async def _read(self, triton_name: str) -> StoredManifest:
        generation = self._generation
        self.reads[triton_name] += 1
        try:
            entry = await asyncio.to_thread(self._read_blocking, triton_name)
        except (OSError, pydantic.ValidationError):
            self._entries.pop(triton_name, None)  # gone or invalid: nothing stays behind
            raise
        if generation == self._generation:
            self._entries[triton_name] = entry
            self._entries.move_to_end(triton_name)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
        return entry

    def _read_blocking(self, triton_name: str) -> StoredManifest:
        path = manifest_path(self.repository, triton_name)
        raw = path.read_bytes()
        manifest = Manifest.model_validate_json(raw)
        return StoredManifest(manifest, _directory_size(path.parent, manifest, len(raw)))
