"""Gallery index benchmark: 128-D random unit vectors, exact (IndexFlatIP) vs the ANN indexes (PQ fast scan with
exact re-scoring, the default; HNSW with --ann pq hnsw), through GalleryIndex.

For each size (default 100k and 1M; one template per identity so template and identity top-1 coincide):
  - add throughput (templates/s, through GalleryIndex.add: FAISS + the id/identity bookkeeping)
  - search latency per query (p50/p99 of single-vector searches, k=5 identities) and per batch (64 queries)
  - recall@1 of each ANN index against exact search (by k_factor for pq, efSearch for hnsw), on two query sets:
      random  — fresh random unit vectors (the hard case: the true nearest neighbour is barely nearer than the
                next ones, cosine ~0.4 vs ~0.39)
      probe   — a gallery vector plus noise (cosine ~0.7 to its source), what a face probe looks like
  - memory: RSS growth while building each index

Writes bench/results/gallery.json. Usage:
    .venv/bin/python bench/bench_gallery.py [--sizes 100000 1000000] [--queries 1000] [--ann pq hnsw]
        [--k-factor 4 8 16 32] [--ef 64 128 256 512]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import faiss
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from index.faiss_index import GalleryIndex, IndexParams  # noqa: E402

DIM = 128


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def unit(rng, n: int) -> np.ndarray:
    out = np.empty((n, DIM), np.float32)
    for s in range(0, n, 200_000):
        v = rng.standard_normal((min(200_000, n - s), DIM), dtype=np.float32)
        out[s:s + len(v)] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def probes(rng, base: np.ndarray, n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    src = rng.choice(len(base), n, replace=False)
    v = base[src] + noise * rng.standard_normal((n, DIM), dtype=np.float32)
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32), src


def latency(ix: GalleryIndex, q: np.ndarray, n_single: int, batch: int = 64) -> dict:
    lat = []
    for i in range(n_single):
        t = time.perf_counter()
        ix.search(q[i:i + 1], 5)
        lat.append(time.perf_counter() - t)
    bl = []
    for s in range(0, min(len(q), max(batch * 4, n_single)) - batch + 1, batch):
        t = time.perf_counter()
        ix.search(q[s:s + batch], 5)
        bl.append(time.perf_counter() - t)
    lat_ms, bl_ms = np.array(lat) * 1e3, np.array(bl) * 1e3
    return {"per_query_ms": {"p50": round(float(np.percentile(lat_ms, 50)), 3),
                             "p99": round(float(np.percentile(lat_ms, 99)), 3), "n": len(lat)},
            "per_batch_ms": {"batch": batch, "p50": round(float(np.percentile(bl_ms, 50)), 3),
                             "p99": round(float(np.percentile(bl_ms, 99)), 3),
                             "per_query_in_batch_ms": round(float(np.median(bl_ms)) / batch, 4), "n": len(bl)}}


def top1(ix: GalleryIndex, q: np.ndarray) -> np.ndarray:
    out = []
    for s in range(0, len(q), 256):
        out += [int(r[0][0]) if r else -1 for r in ix.search(q[s:s + 256], 1)]
    return np.array(out)


def build(params: IndexParams, data: np.ndarray) -> tuple[GalleryIndex, dict]:
    ix = GalleryIndex(params)
    owners = [str(i) for i in range(len(data))]  # identity id = row number
    before = rss_mb()
    t = time.perf_counter()
    ix.add(np.arange(len(data), dtype=np.int64), data, owners)
    dt = time.perf_counter() - t
    return ix, {"kind": ix.kind, "build_s": round(dt, 2), "add_per_s": round(len(data) / dt),
                "rss_growth_mb": round(rss_mb() - before, 1)}


def bench_size(n: int, args, rng) -> dict:
    print(f"== {n} templates", flush=True)
    data = unit(rng, n)
    q_rand = unit(rng, args.queries)
    q_probe, _ = probes(rng, data, args.queries, args.noise)
    res: dict = {"templates": n}

    exact, info = build(IndexParams(ann_above=10 ** 12, background_build=False), data)
    print(f"exact build {info}", flush=True)
    n_exact = min(args.queries, 200 if n > 200_000 else 1000)
    info.update(latency(exact, q_rand, n_exact))
    t = time.perf_counter()
    gt_rand, gt_probe = top1(exact, q_rand), top1(exact, q_probe)
    info["exact_batch_search_s_for_all_queries"] = round((time.perf_counter() - t) / 2, 2)
    res["exact"] = info
    print(f"exact {info}", flush=True)
    del exact

    for kind in args.ann:
        p = IndexParams(ann_above=1, ann=kind, hnsw_m=args.m, hnsw_ef_construction=args.ef_construction,
                        hnsw_ef_search=args.ef[0], background_build=False)
        ann, info = build(p, data)
        knob, values, setter = (("efSearch", args.ef, ann.set_ef_search) if kind == "hnsw" else
                                ("k_factor", args.k_factor, ann.set_k_factor))
        if kind == "hnsw":
            info.update({"M": args.m, "efConstruction": args.ef_construction})
        else:
            info.update({"pq_m": p.pq_m, "pq_train": p.pq_train})
        print(f"{kind} build {info}", flush=True)
        sweep = []
        for v in values:
            setter(v)
            row = {knob: v,
                   "recall_at_1_random": round(float(np.mean(top1(ann, q_rand) == gt_rand)), 4),
                   "recall_at_1_probe": round(float(np.mean(top1(ann, q_probe) == gt_probe)), 4)}
            row.update(latency(ann, q_rand, args.queries))
            row["probe_latency"] = latency(ann, q_probe, args.queries)["per_query_ms"]
            sweep.append(row)
            print(f"{kind} {row}", flush=True)
        info["sweep"] = sweep
        res[kind] = info
        del ann
    del data
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--noise", type=float, default=0.09, help="probe noise per dimension (cosine ~0.7 at 0.09)")
    ap.add_argument("--m", type=int, default=32)
    ap.add_argument("--ef-construction", type=int, default=80)
    ap.add_argument("--ef", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--ann", nargs="+", choices=["pq", "hnsw"], default=["pq"],
                    help="ANN kinds to measure (hnsw takes ~10 min to build at 1M on 2 cores)")
    ap.add_argument("--k-factor", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gallery.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    out = {"bench": "gallery", "dim": DIM, "queries": args.queries, "k": 5,
           "machine": {"cpus": os.cpu_count(), "faiss_threads": faiss.omp_get_max_threads(),
                       "loadavg_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
                       "faiss": faiss.__version__, "python": platform.python_version()},
           "sizes": [bench_size(n, args, rng) for n in args.sizes]}
    out["total_s"] = round(time.perf_counter() - t0, 1)
    out["machine"]["loadavg_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out} in {out['total_s']} s", flush=True)


if __name__ == "__main__":
    main()
