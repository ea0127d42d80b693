"""OpenVINO helpers shared by the YuNet and SFace backends."""
from __future__ import annotations

PRECISIONS = ("auto", "f32", "bf16")


def cpu_config(threads: int | None, precision: str = "auto") -> dict:
    """Compile options for one worker process's CPU inference. No thread pinning: OpenVINO pins every process's
    threads from core 0 on, so a detector and an embedder on one machine would share a core. precision "auto"
    is the runtime's choice, the fastest the CPU runs natively (bf16 on AVX-512 BF16 / AMX: 1.2-2x faster here,
    vectors within cosine 0.9998 of f32); "f32" gives OpenCV's numbers exactly."""
    if precision not in PRECISIONS:
        from ..models import ModelError
        raise ModelError(f"unknown models.cpu_precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    config: dict = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision != "auto":
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def u8_bgr_input(model, *, rgb: bool):
    """An OpenVINO model whose (NCHW float) input is fed uint8 NHWC BGR images: the conversion (and the channel
    swap when the network wants RGB) runs inside the compiled graph."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    if rgb:
        steps.reverse_channels()
    return ppp.build()
