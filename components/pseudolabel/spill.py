"""A run's claims kept on local disk while it runs: the cross-window step reads back only those it needs."""

from __future__ import annotations

import os
import pickle
import tempfile
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence

from crownsam.pseudolabel.exclusive import Claim

# windows' claims held in memory at once when read back: the cross-window step's regions come in an order
# that meets windows about a row at a time (about 100 KB each; each window was read about once on a mosaic)
KEEP_WINDOWS = 64


class SpilledClaims(Mapping[int, Claim]):
    """The claims of a run's windows by ``segment_id`` (a later window's claim replaces an earlier one's).

    Each window's claims are pickled to one unnamed local temporary file as they come (:meth:`add`) and
    read back on demand, the last ``keep`` windows read staying in memory. A run's memory then follows
    its labels, not their logit patches: about 100 KB per 1024 px window, which grew a run over a
    40,960 px mosaic by 0.6 GB. The file is gone when the object is (or the process ends)."""

    def __init__(self, keep: int = KEEP_WINDOWS) -> None:
        self._file = tempfile.TemporaryFile(prefix="crownsam-claims-")  # noqa: SIM115 (lives with self)
        self._parts: list[tuple[int, int]] = []  # (offset, length) of each window's pickled claims
        self._index: dict[int, tuple[int, int]] = {}  # segment_id -> (part, position in it)
        self._held: OrderedDict[int, list[Claim]] = OrderedDict()
        self._keep = max(1, keep)

    def add(self, claims: Sequence[Claim]) -> None:
        """Keep one window's claims (on disk)."""
        if not claims:
            return
        data = pickle.dumps(list(claims), protocol=pickle.HIGHEST_PROTOCOL)
        offset = self._file.seek(0, os.SEEK_END)
        self._file.write(data)
        part = len(self._parts)
        self._parts.append((offset, len(data)))
        for k, claim in enumerate(claims):
            self._index[claim.segment_id] = (part, k)

    def _part(self, part: int) -> list[Claim]:
        held = self._held.get(part)
        if held is not None:
            self._held.move_to_end(part)
            return held
        offset, length = self._parts[part]
        self._file.seek(offset)
        claims: list[Claim] = pickle.loads(self._file.read(length))
        self._held[part] = claims
        if len(self._held) > self._keep:
            self._held.popitem(last=False)
        return claims

    @property
    def windows_held(self) -> int:
        """Windows whose claims are in memory now (at most ``keep``)."""
        return len(self._held)

    def __getitem__(self, segment_id: int) -> Claim:
        part, k = self._index[segment_id]
        return self._part(part)[k]

    def __iter__(self) -> Iterator[int]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def in_file_order(self) -> Iterator[tuple[int, Claim]]:
        """``(segment_id, claim)`` of every claim, window by window as added (each window read once)."""
        for part in range(len(self._parts)):
            for k, claim in enumerate(self._part(part)):
                if self._index.get(claim.segment_id) == (part, k):
                    yield claim.segment_id, claim
