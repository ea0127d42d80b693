"""EmbedStage: FacesMsgs in, one EmbeddingsMsg per frame out (no Redis); the crops of a whole batch (all cameras)
go through the embedder in one call. A face without a crop (the detector's ReembedGate passed over it) gets an
empty embedding: the matcher tracks it by position. The embedder worker (workers/embedder.py) and `identify` on a
still (pipeline/identify.py) both run it."""
from __future__ import annotations

import numpy as np

from ..config import Settings
from ..engine.engine import FaceEngine
from ..messages import EmbeddedFace, EmbeddingsMsg, FacesMsg


class EmbedStage:
    def __init__(self, settings: Settings, engine: FaceEngine | None = None):
        self.engine = engine or FaceEngine(settings)

    @property
    def size(self) -> int:
        return int(getattr(self.engine.embedder, "input_size", 112))

    def crops_of(self, msg: FacesMsg) -> list[np.ndarray | None]:
        """Per face its aligned crop, or None where the detector sent none (not to be embedded)."""
        s = self.size
        if len(msg.crops) != len(msg.faces):
            raise ValueError(f"{len(msg.faces)} faces but {len(msg.crops)} crops")
        out: list[np.ndarray | None] = []
        for c in msg.crops:
            if not c:
                out.append(None)
                continue
            if len(c) != s * s * 3:
                raise ValueError(f"crop of {len(c)} bytes, expected {s}x{s}x3")
            out.append(np.frombuffer(c, np.uint8).reshape(s, s, 3))
        return out

    def process(self, msgs: list[FacesMsg], crops: list[list[np.ndarray | None]] | None = None
                ) -> list[EmbeddingsMsg]:
        """One EmbeddingsMsg per FacesMsg, same order. A face without a crop gets an empty embedding."""
        crops = crops if crops is not None else [self.crops_of(m) for m in msgs]
        flat = [c for cs in crops for c in cs if c is not None]
        vecs = iter(self.engine.embedder.embed(flat) if flat else ())
        out = []
        for m, cs in zip(msgs, crops):
            faces = [EmbeddedFace(**df.model_dump(), embedding=np.asarray(next(vecs), dtype="<f4").tobytes()
                                  if c is not None else b"")
                     for df, c in zip(m.faces, cs)]
            out.append(EmbeddingsMsg(frame=m.frame, faces=faces))
        return out


