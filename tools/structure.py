"""Structure check: the import graph of pipeline/, workers/ and index/, read with `ast` (nothing is imported).

It reports
- import cycles (strongly connected components of the module graph; module-level and function-level imports
  both count, and each edge of a cycle says which kind it is),
- arrows back up: an import from a lower layer into a higher one (the layers are LAYERS below, and README
  "Architecture" explains them), plus the rules in FORBIDDEN,
- modules over MAX_MODULE_LINES lines and functions over MAX_FUNCTION_LINES lines.

    python tools/structure.py            # the report; exit 0
    python tools/structure.py --check    # the report, then exit 1 on anything not in tools/structure_allow.txt
    python tools/structure.py --json     # the same findings as JSON

`--check` is what `make lint` runs. tools/structure_allow.txt lists the known offenders, one finding key a line;
a finding that is not listed fails, and so does a listed one that is gone (delete its line: the list only
shrinks). `--write-allow` rewrites the list from the current findings (use it only to shrink the list).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "workers", "index")
ALLOW_FILE = Path(__file__).resolve().parent / "structure_allow.txt"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Layers, lowest first. A module belongs to the layer of its longest matching prefix; it may import its own layer
# and any layer below it. Imports upwards are "arrows back up".
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # config, message models, model registry, backbone (Redis), streams, engine, events, metrics, unknowns' parts;
    # index.hooks is the gallery's hook registry, a leaf with no project imports that the events store registers
    # its purge on (so the gallery calls the events store without importing it): it sits below both
    ("core", ("pipeline", "index.hooks")),
    # the gallery: Redis store, FAISS index, replication (snapshot + change log), enrollment
    ("gallery", ("index",)),
    # the stages (pipeline/stages: detect, embed, match) and what decides on top of the gallery: tracking/identity,
    # identify on a still (runs the stages in-process), unknown clustering and promotion
    ("stages", ("pipeline.stages", "pipeline.tracking", "pipeline.identify", "pipeline.unknowns.store")),
    # the processes and front ends: REST API, web UI, demo, worker roles
    ("apps", ("pipeline.api", "pipeline.ui", "pipeline.demo", "workers")),
    # the command line sits on top of everything; nothing imports it
    ("cli", ("pipeline.cli",)),
]

# Rules beside the layer order: (importer prefix, imported prefix, exempt importer prefixes, why).
FORBIDDEN: list[tuple[str, str, tuple[str, ...], str]] = [
    ("", "pipeline.cli", ("pipeline.cli",), "nothing imports the CLI"),
    ("pipeline", "workers", ("pipeline.cli", "pipeline.api", "pipeline.ui", "pipeline.demo"),
     "pipeline/ (outside cli/api/ui/demo) does not import workers/"),
    ("pipeline.api", "pipeline.cli", (), "the API does not import the CLI"),
]


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    lazy: bool  # imported inside a function (or class body), not at module level
    line: int


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    lines: int = 0
    functions: list[tuple[str, int, int]] = field(default_factory=list)  # (qualname, first line, length)


def discover(root: Path = ROOT) -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            mods[".".join(parts)] = Module(".".join(parts), path, is_package)
    return mods


def _resolve(mod: Module, node: ast.ImportFrom | ast.Import, known: dict[str, Module]) -> list[str]:
    """The project modules an import statement names (empty for third-party ones)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = mod.name.split(".")
            if not mod.is_package:
                base = base[:-1]
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        # `from pkg import sub` names the submodule pkg.sub when there is one, else pkg itself
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    out = []
    for name in names:
        # `import a.b.c` of a non-module attribute path: the longest known prefix
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name not in out:
            out.append(name)
    return out


class _Walker(ast.NodeVisitor):
    def __init__(self, mod: Module, known: dict[str, Module]):
        self.mod, self.known = mod, known
        self.edges: list[Edge] = []
        self.depth = 0  # > 0 inside a function or class body
        self.scope: list[str] = []

    def _imp(self, node: ast.Import | ast.ImportFrom) -> None:
        for dst in _resolve(self.mod, node, self.known):
            if dst != self.mod.name:
                self.edges.append(Edge(self.mod.name, dst, self.depth > 0, node.lineno))

    visit_Import = _imp
    visit_ImportFrom = _imp

    def visit_If(self, node: ast.If) -> None:
        # `if TYPE_CHECKING:` imports are not runtime arrows; they stay out of the graph
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for n in node.orelse:
                self.visit(n)
            return
        self.generic_visit(node)

    def _func(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # from the `def` line to the last line of the body (decorators not counted)
        end = node.end_lineno or node.lineno
        self.mod.functions.append((".".join(self.scope + [node.name]), node.lineno, end - node.lineno + 1))
        self._nested(node)

    def _nested(self, node: ast.AST) -> None:
        self.depth += 1
        self.scope.append(getattr(node, "name", "?"))
        self.generic_visit(node)
        self.scope.pop()
        self.depth -= 1

    visit_FunctionDef = _func
    visit_AsyncFunctionDef = _func

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        # a class body runs at import time: its imports are module-level; its methods are functions
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()


def build(root: Path = ROOT) -> tuple[dict[str, Module], list[Edge]]:
    mods = discover(root)
    edges: list[Edge] = []
    for mod in mods.values():
        src = mod.path.read_text()
        mod.lines = src.count("\n") + (0 if src.endswith("\n") or not src else 1)
        w = _Walker(mod, mods)
        w.visit(ast.parse(src, str(mod.path)))
        edges.extend(w.edges)
    return mods, edges


def layer_of(name: str) -> int:
    best, rank = -1, 0
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    return rank


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def sccs(nodes: list[str], adj: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), those with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(adj.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(adj.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def analyse(root: Path = ROOT) -> dict:
    mods, edges = build(root)
    # a package's __init__ importing its own submodules (re-exports) and the submodule importing its package
    # are one unit; the edge from a submodule up to its parent package is ignored for cycles
    adj: dict[str, set[str]] = {}
    kinds: dict[tuple[str, str], list[Edge]] = {}
    for e in edges:
        kinds.setdefault((e.src, e.dst), []).append(e)
        if e.src.startswith(e.dst + "."):
            continue
        adj.setdefault(e.src, set()).add(e.dst)
    cycles = []
    for comp in sccs(sorted(mods), adj):
        members = set(comp)
        inner = []
        for (s, d), es in sorted(kinds.items()):
            if s in members and d in members and not s.startswith(d + "."):
                lazy = all(x.lazy for x in es)
                inner.append({"src": s, "dst": d, "lazy": lazy, "line": es[0].line})
        cycles.append({"key": "cycle " + " ".join(comp), "modules": comp, "edges": inner})

    back = []
    for (s, d), es in sorted(kinds.items()):
        lazy = all(x.lazy for x in es)
        reasons = []
        if layer_of(d) > layer_of(s):
            reasons.append(f"{LAYERS[layer_of(s)][0]} -> {LAYERS[layer_of(d)][0]}")
        for imp, dst, exempt, why in FORBIDDEN:
            if _under(s, imp) and _under(d, dst) and not any(_under(s, x) for x in exempt):
                reasons.append(why)
        if reasons:
            back.append({"key": f"back {s} -> {d}", "src": s, "dst": d, "lazy": lazy, "line": es[0].line,
                         "why": sorted(set(reasons))})

    big_modules = [{"key": f"module {m.name}", "module": m.name, "path": str(m.path.relative_to(root)),
                    "lines": m.lines} for m in sorted(mods.values(), key=lambda m: -m.lines)
                   if m.lines > MAX_MODULE_LINES]
    long_functions = sorted(((m.name, q, ln, n) for m in mods.values() for q, ln, n in m.functions
                             if n > MAX_FUNCTION_LINES), key=lambda f: -f[3])
    big_functions = [{"key": f"function {name}:{q}", "module": name, "function": q, "line": ln, "lines": n}
                     for name, q, ln, n in long_functions]
    return {"modules": len(mods), "edges": len(edges),
            "edges_module_level": sum(1 for e in edges if not e.lazy),
            "edges_function_level": sum(1 for e in edges if e.lazy),
            "cycles": cycles, "back_arrows": back, "big_modules": big_modules, "big_functions": big_functions}


def findings(report: dict) -> list[str]:
    return [f["key"] for part in ("cycles", "back_arrows", "big_modules", "big_functions") for f in report[part]]


def read_allow(path: Path = ALLOW_FILE) -> list[str]:
    if not path.exists():
        return []
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def render(report: dict, allowed: set[str]) -> str:
    def mark(key: str) -> str:
        return "  (allowed)" if key in allowed else "  NEW"

    out = [f"structure: {report['modules']} modules, {report['edges']} project imports "
           f"({report['edges_module_level']} module-level, {report['edges_function_level']} in functions)"]
    out.append(f"\nimport cycles: {len(report['cycles'])}")
    for c in report["cycles"]:
        out.append(f"  {' <-> '.join(c['modules'])}{mark(c['key'])}")
        for e in c["edges"]:
            out.append(f"      {e['src']} -> {e['dst']}  ({'in a function' if e['lazy'] else 'module level'}, "
                       f"line {e['line']})")
    out.append(f"\narrows back up: {len(report['back_arrows'])}  "
               f"(layers, lowest first: {', '.join(n for n, _ in LAYERS)})")
    for b in report["back_arrows"]:
        out.append(f"  {b['src']} -> {b['dst']}  [{'; '.join(b['why'])}] "
                   f"({'in a function' if b['lazy'] else 'module level'}, line {b['line']}){mark(b['key'])}")
    out.append(f"\nmodules over {MAX_MODULE_LINES} lines: {len(report['big_modules'])}")
    for m in report["big_modules"]:
        out.append(f"  {m['path']}: {m['lines']}{mark(m['key'])}")
    out.append(f"\nfunctions over {MAX_FUNCTION_LINES} lines: {len(report['big_functions'])}")
    for f in report["big_functions"]:
        out.append(f"  {f['module']}:{f['function']} (line {f['line']}): {f['lines']}{mark(f['key'])}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail on findings not in the allowlist, and on stale lines")
    ap.add_argument("--json", action="store_true", help="print the findings as JSON")
    ap.add_argument("--write-allow", action="store_true", help="rewrite the allowlist from the current findings")
    ap.add_argument("--allow", type=Path, default=ALLOW_FILE, help="allowlist file (default: %(default)s)")
    args = ap.parse_args(argv)
    report = analyse(ROOT)
    found = findings(report)
    if args.write_allow:
        header = [ln for ln in (args.allow.read_text().splitlines() if args.allow.exists() else [])
                  if ln.startswith("#")]
        args.allow.write_text("\n".join(header + sorted(found)) + "\n")
        print(f"wrote {len(found)} findings to {args.allow}")
        return 0
    allowed = read_allow(args.allow)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report, set(allowed)))
    if not args.check:
        return 0
    new = [k for k in found if k not in set(allowed)]
    stale = [k for k in allowed if k not in set(found)]
    for k in new:
        print(f"structure: NEW finding, fix it (the allowlist only shrinks): {k}", file=sys.stderr)
    for k in stale:
        print(f"structure: fixed, delete its line from {args.allow.name}: {k}", file=sys.stderr)
    if new or stale:
        return 1
    print(f"\nstructure: ok ({len(allowed)} known offenders in {args.allow.name}, none new)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
