"""Incremental clustering of unknown tracks: FAISS neighbours of a track's mean, then a centroid rule.

Why this and not HDBSCAN/DBSCAN on a batch: tracks arrive one at a time, all day, and every cluster id must stay
put (the UI shows it, a user names it). A batch algorithm relabels everything on each run, and density methods
call a stranger seen once "noise", while here a single visit must already form a cluster. So each new track
takes its k nearest track means from a flat inner-product FAISS index (exact; 100k x 128 floats is 51 MB and
a search is about a millisecond), every cluster with a member at >= `link` cosine is a candidate, and the track
joins the candidate whose centroid (the normalised sum of its members' means) is closest, if that is >= `join`.
Otherwise it founds a new cluster. Single linkage alone chains two strangers through one blurred track; the
centroid check stops that, and purity is what matters most (two strangers under one name is a false match).
Thresholds: bench/bench_unknowns.py (README "Unknown visitors")."""
from __future__ import annotations

from dataclasses import dataclass, field

import faiss
import numpy as np

DIM = 128


@dataclass
class ClusterIndex:
    link: float
    join: float
    k: int = 16
    index: faiss.Index = field(default_factory=lambda: faiss.IndexFlatIP(DIM))
    labels: list[str] = field(default_factory=list)      # row -> cluster id
    tracks: list[str] = field(default_factory=list)      # row -> track id
    sums: dict[str, np.ndarray] = field(default_factory=dict)  # cluster id -> sum of member means

    def add(self, track_id: str, mean: np.ndarray, cluster: str) -> None:
        v = _unit(mean)
        self.index.add(v[None, :])
        self.labels.append(cluster)
        self.tracks.append(track_id)
        self.sums[cluster] = self.sums.get(cluster, np.zeros(DIM, np.float32)) + v

    def add_many(self, track_ids: list[str], means: np.ndarray, clusters: list[str]) -> None:
        if not track_ids:
            return
        m = np.ascontiguousarray(means, np.float32)
        m /= np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
        self.index.add(m)
        self.labels += clusters
        self.tracks += track_ids
        for c, v in zip(clusters, m):
            s = self.sums.get(c)
            self.sums[c] = v.copy() if s is None else s + v

    def centroid(self, cluster: str) -> np.ndarray | None:
        s = self.sums.get(cluster)
        return None if s is None else _unit(s)

    def assign(self, mean: np.ndarray) -> tuple[str | None, float]:
        """(cluster id, centroid cosine) the track joins, or (None, best cosine seen) for a new cluster."""
        if self.index.ntotal == 0:
            return None, 0.0
        v = _unit(mean)
        sims, rows = _search_one(self.index, v, min(self.k, self.index.ntotal))
        cands = {self.labels[r] for s, r in zip(sims[0], rows[0]) if r >= 0 and s >= self.link}
        best, best_s = None, -1.0
        for c in sorted(cands):
            s = float(self.centroid(c) @ v)
            if s > best_s:
                best, best_s = c, s
        if best is not None and best_s >= self.join:
            return best, best_s
        return None, max(best_s, float(sims[0][0]))


def _search_one(index: faiss.Index, v: np.ndarray, k: int):
    """One query on one OpenMP thread: FAISS's threads spin-wait, and on a busy 2-core box one query took 82 ms
    on 2 threads against 25 ms on one (100k tracks). Restored afterwards (the gallery batches queries)."""
    n = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(v[None, :], k)
    finally:
        faiss.omp_set_num_threads(n)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float32).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-12)
