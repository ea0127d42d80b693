"""Negative examples from "wrong person" corrections, applied to gallery search results.

A track a person marked "not X" leaves its mean and best faces as negatives of X. A face whose best cosine
to X's negatives is higher than its score for X (its best cosine to X's templates) is closer to the people X
was confused with than to X: X is dropped from that face's candidates, so neither a face vote nor a track mean
can name X from it. Every searcher (matchers, the API, the CLI) wraps its gallery search in a NegativeFilter;
the negatives are reloaded within `refresh_s` of a change (`<p>:neg:ver`)."""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from . import keys as K


class NegativeFilter:
    def __init__(self, r, settings, refresh_s: float = 1.0):
        self.r = r
        self.settings = settings
        self.refresh_s = refresh_s
        self._checked = 0.0
        self._ver: bytes | None = None
        self.negatives: dict[str, np.ndarray] = {}  # identity id -> (n, 128) unit vectors

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.refresh_s:
            return
        self._checked = now
        ver = self.r.get(K.negatives_version(self.settings))
        if ver == self._ver:
            return
        negs = {}
        for iid in self.r.smembers(K.negatives(self.settings, "index")):
            iid = iid.decode() if isinstance(iid, bytes) else iid
            blobs = [b for b in self.r.hvals(K.negatives(self.settings, iid)) if b]
            if blobs:
                negs[iid] = np.concatenate([np.frombuffer(b, dtype="<f4").reshape(-1, 128) for b in blobs])
        self.negatives, self._ver = negs, ver

    def apply(self, vectors: np.ndarray, results: Sequence[Sequence]) -> list[list]:
        """results[i]: the candidates (identity_id, name, score) of vectors[i]; returns them without the
        identities this face is closer to the negatives of."""
        self._refresh()
        if not self.negatives:
            return [list(c) for c in results]
        out = []
        for v, cands in zip(np.asarray(vectors, np.float32), results):
            keep = []
            for c in cands:
                neg = self.negatives.get(c.identity_id)
                if neg is not None and float(np.max(neg @ v)) > float(c.score):
                    continue
                keep.append(c)
            out.append(keep)
        return out

    def wrap(self, search: Callable[[np.ndarray], Sequence[Sequence]]) -> Callable[[np.ndarray], list[list]]:
        def filtered(vectors):
            return self.apply(vectors, search(vectors))

        return filtered
