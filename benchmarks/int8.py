"""INT8 on this CPU: which formats are faster than float32, what they cost in accuracy,
and which channel counts INT8 convolutions like.

Three parts, one report (``results/benchmarks/int8.md``):

1. **Formats**: the reference model (fashion-mnist, its shipped checkpoint) and
   ResNet-18 at 224x224 (random weights: latency only) in float32 and in every INT8
   format autoprune can make (``autoprune.quantize`` and ONNX Runtime's quantizer
   directly for the formats it does not offer), each timed with the x86-ort profile's
   full protocol (build, 3 timing processes, median of their medians, no cache). The
   reference model's accuracy is scored on the whole validation set (10,000 images;
   final fidelity: the shipped model, no search) at each format and calibration method.
2. **Channel counts**: one 3x3 convolution (C -> C channels, 14x14 input, batch 1) for C
   from 40 to 72, float32 and INT8 (QDQ u8s8, per channel), timed in this process with
   ONNX Runtime at 1 thread, the two precisions interleaved (median of 3 rounds of
   300 runs each). The step pattern gives the profile's INT8 ``round_to``.
3. **TVM**: the reference model in float32 and INT8 QDQ built by the x86-tvm profile's
   backend with tuning off, timed the same way: whether TVM 0.27's Relax flow turns
   QDQ into integer kernels.

Run alone (a timing benchmark): ``.venv/bin/python benchmarks/int8.py [--out FILE] [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, facts, write_report
from _measure import profile, time_onnx

ROOT = Path(__file__).resolve().parent.parent


def _ort_formats(src: Path, work: Path, calib: np.ndarray, methods=("minmax",)) -> dict[str, Path | str]:
    """float32 plus each INT8 format, written next to each other; name -> file."""
    import onnxruntime.quantization as q

    from autoprune.export import INPUT_NAME
    from autoprune.quantize import _quiet, _Reader

    def reader():
        return _Reader(INPUT_NAME, [calib[i:i + 1] for i in range(len(calib))])

    from autoprune.quantize import _without_shared_initializers

    raw = src
    src = Path(_without_shared_initializers(src, work / "deshared.onnx"))  # what autoprune.quantize does first
    u8, s8 = q.QuantType.QUInt8, q.QuantType.QInt8
    cm = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
          "percentile": q.CalibrationMethod.Percentile}
    files = {"float32": src}
    specs = [(f"int8 QDQ u8s8 per-channel {m}", q.QuantFormat.QDQ, u8, s8, True, m) for m in methods]
    if src != raw:  # the same quantizer on the export as it is, shared initializers read through Identity
        specs.append(("int8 QDQ u8s8 per-channel minmax, shared initializers kept", q.QuantFormat.QDQ, u8, s8,
                      True, "minmax"))
    specs += [("int8 QDQ s8s8 per-channel minmax", q.QuantFormat.QDQ, s8, s8, True, "minmax"),
              ("int8 QDQ u8s8 per-tensor minmax", q.QuantFormat.QDQ, u8, s8, False, "minmax"),
              ("int8 QOperator u8s8 per-channel minmax", q.QuantFormat.QOperator, u8, s8, True, "minmax")]
    with _quiet():
        for name, fmt, act, wt, per_channel, method in specs:
            path = work / (name.replace(" ", "_") + ".onnx")
            try:
                q.quantize_static(str(raw if "kept" in name else src), str(path), reader(), quant_format=fmt,
                                  per_channel=per_channel,
                                  activation_type=act, weight_type=wt, calibrate_method=cm[method])
            except Exception as exc:  # noqa: BLE001 - the report says which format the quantizer refused
                files[name] = f"quantizer failed: {type(exc).__name__}: {str(exc)[:120]}"
                continue
            files[name] = path
        path = work / "dynamic.onnx"
        q.quantize_dynamic(str(src), str(path), weight_type=s8, op_types_to_quantize=["MatMul", "Gemm"])
        files["int8-dynamic (MatMul/Gemm)"] = path
    return files


def formats(prof, work: Path, quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    import torch
    import torchvision

    from autoprune.evaluate import onnx_accuracy
    from autoprune.export import to_onnx
    from autoprune.tasks import load_task

    task = load_task("fashion-mnist")
    rows, acc_rows = [], []
    rng = np.random.default_rng(0)
    calib_ref = task.train.x[torch.randperm(len(task.train), generator=torch.Generator().manual_seed(1))[:200]].numpy()
    models = [("reference (fashion-mnist)", task.model, task.example_input(1), calib_ref)]
    if not quick:
        resnet = torchvision.models.resnet18(num_classes=1000).eval()
        models.append(("ResNet-18 at 224", resnet, torch.randn(1, 3, 224, 224),
                       rng.standard_normal((32, 3, 224, 224)).astype(np.float32)))
    for label, model, example, calib in models:
        d = work / label.split()[0]
        d.mkdir(parents=True, exist_ok=True)
        art = to_onnx(model, example, d / "float32.onnx", parity_atol=1e-2)
        methods = ("minmax", "entropy", "percentile") if label.startswith("reference") and not quick else ("minmax",)
        files = _ort_formats(Path(art.path), d, calib, methods)
        base = None
        for name, path in files.items():
            if isinstance(path, str):  # the quantizer refused this format for this model
                rows.append({"model": label, "format": name, "latency_ms": None, "speedup_vs_float32": None,
                             "cv": None, "noisy": None, "MB": None, "note": path})
                continue
            m = time_onnx(path, prof, d / "build")
            base = base or m.median_ms
            rows.append({"model": label, "format": name, "latency_ms": round(m.median_ms, 4),
                         "speedup_vs_float32": round(base / m.median_ms, 2), "cv": round(m.cv, 3),
                         "noisy": m.noisy, "MB": round(Path(path).stat().st_size / 1e6, 2)})
            print(f"{label}: {name}: {m.median_ms:.3f} ms", flush=True)
            if label.startswith("reference"):
                samples = 2000 if quick else None
                acc_rows.append({"format": name, "accuracy_%": round(onnx_accuracy(path, task.val, samples), 2),
                                 "validation_images": samples or len(task.val)})
    return pd.DataFrame(rows), pd.DataFrame(acc_rows)


def channel_sweep(work: Path, quick: bool) -> pd.DataFrame:
    import onnxruntime as ort
    import torch

    from autoprune.export import to_onnx
    from autoprune.quantize import quantize

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    counts = range(40, 73, 4 if quick else 1)
    rows = []
    for c in counts:
        conv = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, padding=1), torch.nn.ReLU()).eval()
        x = torch.randn(1, c, 14, 14)
        art = to_onnx(conv, x, work / f"conv{c}.onnx", parity_atol=1e-2)
        q8 = quantize(art, "int8", work / f"conv{c}.int8.onnx", calibration=torch.randn(16, c, 14, 14).numpy())
        sessions = {p: ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
                    for p, path in (("float32", art.path), ("int8", q8.artifact.path))}
        feed = {"input": x.numpy()}
        medians: dict[str, list[float]] = {p: [] for p in sessions}
        for _ in range(3):
            for p, s in sessions.items():
                for _ in range(30):
                    s.run(None, feed)
                ts = []
                for _ in range(100 if quick else 300):
                    t0 = time.perf_counter()
                    s.run(None, feed)
                    ts.append(time.perf_counter() - t0)
                medians[p].append(float(np.median(ts)) * 1e3)
        f, i8 = float(np.median(medians["float32"])), float(np.median(medians["int8"]))
        rows.append({"channels": c, "float32_us": round(f * 1e3, 1), "int8_us": round(i8 * 1e3, 1),
                     "int8_speedup": round(f / i8, 2)})
        print(f"conv {c}: float32 {f * 1e3:.1f} us, int8 {i8 * 1e3:.1f} us", flush=True)
    return pd.DataFrame(rows)


def tvm_rows(work: Path) -> pd.DataFrame:
    import torch

    from autoprune.export import to_onnx
    from autoprune.quantize import quantize
    from autoprune.tasks import load_task

    task = load_task("fashion-mnist")
    prof = profile("x86-tvm")
    prof = dataclasses.replace(prof, tvm=dataclasses.replace(
        prof.tvm, tuning=dataclasses.replace(prof.tvm.tuning, max_trials=0, database=str(work / "tvm-db"))))
    art = to_onnx(task.model, task.example_input(1), work / "tvm-float32.onnx", parity_atol=1e-2)
    calib = task.train.x[torch.randperm(len(task.train), generator=torch.Generator().manual_seed(1))[:200]].numpy()
    q8 = quantize(art, "int8", work / "tvm-int8.onnx", calibration=calib)
    rows = []
    for name, path in (("float32", art.path), ("int8 QDQ u8s8 per-channel minmax", q8.artifact.path)):
        try:
            m = time_onnx(path, prof, work / f"tvm-{name[:5]}")
            rows.append({"format": name, "latency_ms": round(m.median_ms, 4), "result": "built and timed"})
        except Exception as exc:  # noqa: BLE001 - the report says what TVM could not do
            rows.append({"format": name, "latency_ms": None, "result": f"failed: {str(exc)[:200]}"})
        print(f"tvm {name}: {rows[-1]}", flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/int8.md")
    parser.add_argument("--quick", action="store_true", help="smoke run: short protocol, fewer points")
    parser.add_argument("--no-tvm", action="store_true")
    add_load_arguments(parser)
    args = parser.parse_args()

    monitor = LoadMonitor()
    start = time.time()
    prof = profile("x86-ort", quick=args.quick)
    with tempfile.TemporaryDirectory(prefix="autoprune-int8-") as tmp:
        work = Path(tmp)
        lat, acc = formats(prof, work, args.quick)
        sweep = channel_sweep(work, args.quick)
        tvm = None if args.no_tvm else tvm_rows(work)
    minutes = (time.time() - start) / 60
    best = sweep.loc[sweep["int8_us"].idxmin()]
    text = f"""# INT8 on this CPU: formats, accuracy, channel counts

{facts()}- Wall time: {minutes:.1f} min. Profile x86-ort (ONNX Runtime CPU, 1 thread, batch 1);
  latencies are the full protocol (3 timing processes, median of medians, no cache).
- CPU flags that matter: AVX-512 VNNI and AMX-INT8 (`grep -o 'avx512_vnni\\|amx_int8' /proc/cpuinfo`).

## Latency by format

Calibration: 200 training images for the reference model, 32 random inputs for
ResNet-18 (random weights: its accuracy means nothing, its latency does). Every INT8
file is made from the export after `autoprune.quantize` replaced the `Identity` reads
of shared initializers (torch's exporter shares equal tensors, such as a fresh model's
zero biases) with copies; the "shared initializers kept" row shows what ONNX Runtime's
quantizer makes of the export as it is.

{lat.to_markdown(index=False)}

## Reference model accuracy by format (final fidelity: shipped checkpoint, validation set)

{acc.to_markdown(index=False)}

## INT8 convolution latency against channel count

One 3x3 convolution C -> C at 14x14, batch 1, ONNX Runtime 1 thread in one process,
float32 and INT8 (QDQ u8s8 per-channel) interleaved, median of 3 rounds.
Fastest INT8 point: {int(best['channels'])} channels ({best['int8_us']} us).

{sweep.to_markdown(index=False)}
"""
    if tvm is not None:
        text += f"""
## TVM 0.27 (x86-tvm profile, tuning off)

{tvm.to_markdown(index=False)}
"""
    write_report(args.out, text, monitor, args.allow_noisy)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
