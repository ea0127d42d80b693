"""GalleryIndex: the in-memory FAISS index of one process (templates -> identities).

Exact inner product (`IndexIDMap2(IndexFlatIP)`) by default. Once the gallery holds more than `ann_above`
templates it switches to an ANN index (`ann`), and back to exact below half of that (hysteresis, so a gallery
hovering at the threshold does not rebuild on every change):
- "pq" (default): `IndexIDMap2(IndexRefineFlat(IndexPQFastScan(d, 32, 4)))` - every template's 16-byte PQ code is
  scanned with SIMD (~2 ms a query at 1M on one core), then the best `k_factor` x k are re-scored exactly from
  the stored vectors, so returned scores are exact cosines. A probe's true match (cosine ~0.7 against ~0.4 for
  the best stranger at 1M) is never lost in the PQ error. Trained on a sample of the live vectors; builds 1M in
  seconds (bench/bench_gallery.py).
- "hnsw": `IndexIDMap2(IndexHNSWFlat(d, M))`; needs efSearch ~1024 (12 ms a query) for 0.99 recall at 1M on
  random vectors and ~10 minutes to build there; kept for comparison.

The ANN index is built (trained, filled) on a thread from a copy of the live vectors while searches keep using
the current index (exact search stays correct, just slower; background_build, the default); changes made
meanwhile are applied to both, and the new index is swapped in when ready. A process starting from a large
snapshot therefore serves at once.

Removal: the flat index removes vectors in place (`remove_ids`). Neither ANN index can (HNSW has no node
deletion, IndexRefineFlat no remove_ids), so removed template ids become tombstones that searches filter out
(over-fetching to make up for them); once tombstones exceed `tombstone_rebuild_fraction` of the index it is
rebuilt from the live vectors. A removed identity is never returned by a search either way.

Vectors are expected L2-normalised (cosine = inner product); `add`/`search` normalise defensively.
Search returns, per query, the top-k *identities*, each scored by its best template.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import faiss
import numpy as np


log = logging.getLogger("facetrail.gallery")

SMALL_BATCH = 8  # searches of fewer queries run single-threaded


@dataclass(frozen=True)
class IndexParams:
    dim: int = 128
    ann_above: int = 100_000
    ann: str = "pq"              # "pq" or "hnsw"
    pq_m: int = 32               # PQ sub-quantizers (4 bits each): 16-byte codes at 128-D
    pq_k_factor: int = 16        # candidates re-scored exactly per result wanted
    pq_train: int = 50_000       # vectors sampled to train the PQ codebooks
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256
    tombstone_rebuild_fraction: float = 0.1
    background_build: bool = True


def normalize(vectors: np.ndarray) -> np.ndarray:
    v = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if v.ndim == 1:
        v = v[None, :]
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(n, 1e-12), dtype=np.float32)


class GalleryIndex:
    """Template vectors with int64 ids, each owned by an identity id (str). Thread-safe."""

    def __init__(self, params: IndexParams | None = None):
        self.params = params or IndexParams()
        self._lock = threading.RLock()
        self._owner: dict[int, int] = {}          # template id -> identity label
        self._labels: dict[str, int] = {}         # identity id -> label
        self._label_ids: list[str | None] = []    # label -> identity id (None once freed)
        self._by_label: dict[int, list[int]] = {}  # label -> template ids (lists: a few per person, small)
        self._tombstones: set[int] = set()
        self._index = self._new_flat()
        self.kind = "flat"
        self._builder: threading.Thread | None = None
        self._pend_add: list[tuple[np.ndarray, np.ndarray]] = []
        self._pend_rm: set[int] = set()

    # ---- construction -------------------------------------------------------------------------------
    def _new_flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.params.dim))

    def _new_ann(self, sample: np.ndarray) -> faiss.Index:
        """An empty ANN index of kind params.ann, trained on `sample` where the kind needs it."""
        p = self.params
        if p.ann == "hnsw":
            h = faiss.IndexHNSWFlat(p.dim, p.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            h.hnsw.efConstruction = p.hnsw_ef_construction
            h.hnsw.efSearch = p.hnsw_ef_search
            return faiss.IndexIDMap2(h)
        if p.ann != "pq":
            raise ValueError(f"unknown ANN index {p.ann!r}; use pq or hnsw")
        ref = faiss.IndexRefineFlat(faiss.IndexPQFastScan(p.dim, p.pq_m, 4, faiss.METRIC_INNER_PRODUCT))
        ref.k_factor = float(p.pq_k_factor)
        index = faiss.IndexIDMap2(ref)
        if len(sample) > p.pq_train:
            sample = sample[np.random.default_rng(0).choice(len(sample), p.pq_train, replace=False)]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        return index

    def _base(self, index: faiss.Index) -> faiss.Index:
        return faiss.downcast_index(index.index)

    def _live_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every live template, read back from the current index."""
        n = self._index.ntotal
        if n == 0:
            return np.empty(0, np.int64), np.empty((0, self.params.dim), np.float32)
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        vecs = self._base(self._index).reconstruct_n(0, n)
        if self._tombstones:
            keep = ~np.isin(ids, np.fromiter(self._tombstones, np.int64, len(self._tombstones)))
            ids, vecs = ids[keep], vecs[keep]
        return ids, np.ascontiguousarray(vecs, dtype=np.float32)

    def _rebuild(self, kind: str, incoming: np.ndarray | None = None) -> None:
        """Replace the index by a new one of `kind` holding the live vectors (`incoming`: vectors about to be
        added, which the ANN index is trained on too)."""
        if kind == "ann" and self.params.background_build:
            self._start_build()
            return
        ids, vecs = self._live_vectors()
        t = time.monotonic()
        sample = vecs if incoming is None else np.concatenate([vecs, incoming])
        index = self._new_ann(sample) if kind == "ann" else self._new_flat()
        if len(ids):
            index.add_with_ids(vecs, ids)
        self._index, self.kind = index, kind
        self._tombstones.clear()
        log.info("gallery index rebuilt as %s: %d templates in %.1fs", kind, len(ids), time.monotonic() - t)

    @property
    def building(self) -> bool:
        return self._builder is not None

    def _start_build(self) -> None:
        ids, vecs = self._live_vectors()
        self._pend_add, self._pend_rm = [], set()
        self._builder = threading.Thread(target=self._build, args=(ids, vecs), daemon=True,
                                         name="gallery-ann-build")
        self._builder.start()

    def _build(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        t = time.monotonic()
        log.info("gallery index: building %s over %d templates in the background", self.params.ann, len(ids))
        try:
            index = self._new_ann(vecs)
            if len(ids):
                index.add_with_ids(vecs, ids)
        except Exception:  # noqa: BLE001 - keep serving from the current index
            log.exception("gallery index: %s build failed; staying on %s", self.params.ann, self.kind)
            with self._lock:
                self._builder = None
            return
        with self._lock:
            for a_ids, a_vecs in self._pend_add:  # added while we built
                index.add_with_ids(a_vecs, a_ids)
            present = set(ids.tolist()).union(*(a.tolist() for a, _ in self._pend_add))
            self._tombstones = {t for t in self._pend_rm if t in present}
            self._index, self.kind = index, "ann"
            self._pend_add, self._pend_rm, self._builder = [], set(), None
            log.info("gallery index switched to %s: %d templates, built in %.1fs", self.params.ann, len(self._owner),
                     time.monotonic() - t)
            self._maybe_switch()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait for a background HNSW build to finish; True when none is running."""
        b = self._builder
        if b is not None:
            b.join(timeout)
        return self._builder is None

    def _maybe_switch(self) -> None:
        if self._builder is not None:
            return
        live = len(self._owner)
        if self.kind == "flat" and live > self.params.ann_above:
            self._rebuild("ann")
        elif self.kind == "ann" and live < self.params.ann_above // 2:
            self._rebuild("flat")
        elif self.kind == "ann" and len(self._tombstones) > max(1000, self.params.tombstone_rebuild_fraction
                                                                 * self._index.ntotal):
            self._rebuild("ann")

    # ---- mutation -----------------------------------------------------------------------------------
    def _label(self, identity: str) -> int:
        lab = self._labels.get(identity)
        if lab is None:
            lab = len(self._label_ids)
            self._labels[identity] = lab
            self._label_ids.append(identity)
            self._by_label[lab] = []
        return lab

    def add(self, ids, vectors: np.ndarray, identity: str | list[str]) -> None:
        """Add templates. `identity` is one identity id for all rows or one per row. Known ids are skipped."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vecs = normalize(vectors)
        if len(ids) != len(vecs):
            raise ValueError(f"{len(ids)} ids for {len(vecs)} vectors")
        if vecs.shape[1] != self.params.dim:
            raise ValueError(f"vectors have dimension {vecs.shape[1]}, the index {self.params.dim}")
        owners = [identity] * len(ids) if isinstance(identity, str) else list(identity)
        with self._lock:
            fresh = [i for i, t in enumerate(ids.tolist()) if t not in self._owner and t not in self._tombstones]
            if not fresh:
                return
            if len(fresh) != len(ids):
                ids, vecs, owners = ids[fresh], vecs[fresh], [owners[i] for i in fresh]
            big = self.kind == "flat" and len(self._owner) + len(ids) > self.params.ann_above
            if big and not self.params.background_build:
                self._rebuild("ann", vecs)  # switch before adding: a big batch goes straight into the ANN index
            for t, o in zip(ids.tolist(), owners):
                lab = self._label(o)
                self._owner[t] = lab
                self._by_label[lab].append(t)
            self._index.add_with_ids(vecs, ids)
            if self._builder is not None:
                self._pend_add.append((ids, vecs))
            self._maybe_switch()

    def remove(self, ids) -> int:
        """Remove templates by id; returns how many were present."""
        with self._lock:
            gone = [t for t in (int(x) for x in np.asarray(ids, dtype=np.int64).reshape(-1)) if t in self._owner]
            if not gone:
                return 0
            for t in gone:
                lab = self._owner.pop(t)
                owned = self._by_label[lab]
                if t in owned:
                    owned.remove(t)
            if self.kind == "flat":
                self._index.remove_ids(np.asarray(gone, dtype=np.int64))
            else:
                self._tombstones.update(gone)
            if self._builder is not None:
                self._pend_rm.update(gone)
            self._maybe_switch()
            return len(gone)

    def remove_identity(self, identity: str) -> int:
        with self._lock:
            lab = self._labels.get(identity)
            if lab is None:
                return 0
            n = self.remove(list(self._by_label[lab]))
            del self._labels[identity]
            del self._by_label[lab]
            self._label_ids[lab] = None
            return n

    # ---- queries ------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._owner)

    @property
    def ntotal(self) -> int:
        return len(self._owner)

    def identities(self) -> list[str]:
        with self._lock:
            return list(self._labels)

    def template_ids(self, identity: str) -> list[int]:
        with self._lock:
            lab = self._labels.get(identity)
            return sorted(self._by_label[lab]) if lab is not None else []

    def search_templates(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw template search: (scores, template ids), -1 ids where fewer than k live templates."""
        q = normalize(queries)
        with self._lock:
            n = self._index.ntotal
            if n == 0 or k <= 0:
                return np.zeros((len(q), max(k, 0)), np.float32), np.full((len(q), max(k, 0)), -1, np.int64)
            extra = len(self._tombstones)
            kk = min(n, k + min(extra, 4 * k + 64)) if extra else min(n, k)
            scores, ids = self._search(q, kk)
            if not extra:
                return scores, ids
            out_s = np.zeros((len(q), k), np.float32)
            out_i = np.full((len(q), k), -1, np.int64)
            for r in range(len(q)):
                keep = [j for j, t in enumerate(ids[r]) if t >= 0 and int(t) not in self._tombstones][:k]
                out_s[r, :len(keep)] = scores[r, keep]
                out_i[r, :len(keep)] = ids[r, keep]
            return out_s, out_i

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(q) >= SMALL_BATCH:
            return self._index.search(q, k)
        # A few queries gain nothing from OpenMP (FAISS splits work by query) but pay for waking and parking
        # its threads, which on a busy 2-core box dominates the tail latency. The setting is per thread.
        prev = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._index.search(q, k)
        finally:
            faiss.omp_set_num_threads(prev)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k identities per query, each with its best template's cosine, best first."""
        q = normalize(queries)
        with self._lock:
            if not self._owner:
                return [[] for _ in range(len(q))]
            fetch = min(len(self._owner), max(4 * k, k + 16))
            scores, ids = self.search_templates(q, fetch)
            results = []
            for r in range(len(q)):
                seen: dict[int, float] = {}
                for s, t in zip(scores[r].tolist(), ids[r].tolist()):
                    if t < 0:
                        continue
                    lab = self._owner.get(t)
                    if lab is None or lab in seen:
                        continue
                    seen[lab] = s
                    if len(seen) == k:
                        break
                results.append([(self._identity_of(lab), float(s)) for lab, s in seen.items()])
            return results

    def dump(self) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(template ids, owning identity ids, vectors) of every live template."""
        with self._lock:
            ids, vecs = self._live_vectors()
            return ids, [self._identity_of(self._owner[int(t)]) for t in ids], vecs

    def _identity_of(self, label: int) -> str:
        """The identity id of a label that owns templates (a label is freed only once it owns none)."""
        iid = self._label_ids[label]
        if iid is None:
            raise KeyError(f"label {label} is freed but still owns templates")
        return iid

    def set_ef_search(self, ef: int) -> None:
        """HNSW's search breadth (benchmarks); no effect on the other kinds."""
        with self._lock:
            if self.kind == "ann" and self.params.ann == "hnsw":
                self._base(self._index).hnsw.efSearch = int(ef)

    def set_k_factor(self, k_factor: int) -> None:
        """PQ's exact re-scoring depth (benchmarks); no effect on the other kinds."""
        with self._lock:
            if self.kind == "ann" and self.params.ann == "pq":
                self._base(self._index).k_factor = float(k_factor)
