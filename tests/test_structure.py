"""tools/structure.py: the import-graph check `make lint` runs (cycles, arrows back up, big modules/functions)."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("structure", REPO / "tools" / "structure.py")
structure = importlib.util.module_from_spec(_spec)
sys.modules["structure"] = structure  # dataclasses look their module up there
_spec.loader.exec_module(structure)


def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, src in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(src))
    for pkg in ("pipeline", "workers", "index"):
        (root / pkg).mkdir(exist_ok=True)
        (root / pkg / "__init__.py").touch()


def test_finds_cycles_back_arrows_and_big_code(tmp_path):
    long_body = "".join(f"    x{i} = {i}\n" for i in range(70))
    _tree(tmp_path, {
        "pipeline/a.py": "from . import b\n",
        "pipeline/b.py": "def f():\n    from .a import g\n",          # a -> b -> a, one edge in a function
        "pipeline/cli/__init__.py": "",
        "pipeline/cli/cmd.py": "def helper():\n    pass\n",
        "pipeline/api/__init__.py": "",
        "pipeline/api/r.py": "from ..cli.cmd import helper\n",      # the API imports the CLI
        "pipeline/core.py": "import workers.w\n",                    # core imports a worker
        "pipeline/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .cli import cmd\n",
        "workers/w.py": "def run():\n" + long_body,
        "index/big.py": "x = 1\n" * 401,
    })
    rep = structure.analyse(tmp_path)
    assert [c["modules"] for c in rep["cycles"]] == [["pipeline.a", "pipeline.b"]]
    assert {(e["src"], e["lazy"]) for e in rep["cycles"][0]["edges"]} == {("pipeline.a", False), ("pipeline.b", True)}
    back = {(b["src"], b["dst"]): b["why"] for b in rep["back_arrows"]}
    assert set(back) == {("pipeline.api.r", "pipeline.cli.cmd"), ("pipeline.core", "workers.w")}
    assert "the API does not import the CLI" in back[("pipeline.api.r", "pipeline.cli.cmd")]
    assert "core -> apps" in back[("pipeline.core", "workers.w")]
    assert [m["module"] for m in rep["big_modules"]] == ["index.big"]
    assert [(f["module"], f["function"], f["lines"]) for f in rep["big_functions"]] == [("workers.w", "run", 71)]


def test_check_fails_on_new_and_on_fixed_findings(tmp_path, monkeypatch, capsys):
    _tree(tmp_path, {"pipeline/a.py": "from . import b\n", "pipeline/b.py": "from . import a\n"})
    monkeypatch.setattr(structure, "ROOT", tmp_path)
    allow = tmp_path / "allow.txt"
    allow.write_text("# header\n")
    assert structure.main(["--check", "--allow", str(allow)]) == 1          # a new cycle
    allow.write_text("cycle pipeline.a pipeline.b\n")
    assert structure.main(["--check", "--allow", str(allow)]) == 0          # known
    allow.write_text("cycle pipeline.a pipeline.b\nmodule pipeline.gone\n")
    assert structure.main(["--check", "--allow", str(allow)]) == 1          # a fixed one still listed
    assert "delete its line" in capsys.readouterr().err

