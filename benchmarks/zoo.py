"""Which torchvision classification models autoprune can prune, and with what.

Every model from ``torchvision.models.list_models(module=torchvision.models)`` (random
weights, 10 classes, 64x64 input or the size the model requires) goes through, in a
fresh process with a time limit: the dependency graph, one structured plan (L1, 0.3 of
every group, round_to 8), one 2:4 plan, block removal where blocks exist, ONNX export
and the ONNX Runtime parity check. The result table says what failed and why.

Run: ``.venv/bin/python benchmarks/zoo.py [--timeout 300] [--max-params-m 150]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import LoadMonitor, add_load_arguments, write_report  # noqa: E402

FIXED_SIZE = {"inception_v3": 299, "googlenet": 64}  # models that need a given input size


def one(name: str) -> dict:
    """Run in a child: prune ``name`` each way and export; print one JSON line."""
    import tempfile
    import warnings

    import torch
    import torchvision

    from autoprune import pruning
    from autoprune.export import to_onnx
    from autoprune.pruning import GroupChoice, PruningPlan

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    kwargs = {"num_classes": 10}
    if name.startswith(("vit_", "swin", "maxvit")):
        kwargs["image_size"] = 224 if name.startswith(("swin", "maxvit")) else 64
    if name in ("inception_v3", "googlenet"):
        kwargs.update(aux_logits=False, init_weights=False)
    try:
        model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    except TypeError:
        kwargs.pop("image_size", None)
        model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    size = kwargs.get("image_size") or FIXED_SIZE.get(name, 64)
    x = torch.randn(1, 3, size, size)
    last = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)][-1]
    row = {"model": name, "params_M": sum(p.numel() for p in model.parameters()) / 1e6, "input": size}
    start = time.perf_counter()
    groups = pruning.find_groups(model, x, (last,))
    row["groups"] = len(groups)
    row["heads_groups"] = sum(1 for g in groups if g.heads)
    blocks = pruning.find_blocks(model)
    row["blocks"] = len(blocks)
    plans = {
        "l1": PruningPlan({g.name: GroupChoice("l1", 0.3) for g in groups}, round_to=8),
        "nm_2_4": PruningPlan({g.name: GroupChoice("nm_2_4", 0.5) for g in groups}),
    }
    if blocks:
        plans["drop_block"] = PruningPlan(drop_blocks=tuple(blocks[::2]))
    with tempfile.TemporaryDirectory() as tmp:
        for label, plan in plans.items():
            try:
                pruned, _ = pruning.apply(model, plan, x, ignored_layers=(last,))
                art = to_onnx(pruned, x, Path(tmp) / f"{label}.onnx", parity_atol=1e-3)
                row[label] = f"ok (params {art.params / 1e6 / row['params_M']:.2f}, nonzero {art.nonzero_params / 1e6 / row['params_M']:.2f})"
            except Exception as exc:  # noqa: BLE001 - the table records it
                row[label] = f"FAIL {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--max-params-m", type=float, default=150, help="skip larger models (memory, time)")
    parser.add_argument("--only", nargs="*")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/zoo.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    add_load_arguments(parser)
    args = parser.parse_args()
    monitor = LoadMonitor()
    if args.child:
        print("ZOO-RESULT " + json.dumps(one(args.child)), flush=True)
        return
    import pandas as pd
    import torchvision

    names = args.only or torchvision.models.list_models(module=torchvision.models)
    big = {"vit_h_14", "regnet_y_128gf", "vit_l_16", "vit_l_32", "regnet_y_32gf", "regnet_y_16gf"}
    rows = []
    for name in names:
        if name in big and not args.only:
            rows.append({"model": name, "l1": f"skipped (over {args.max_params_m:g} M parameters)"})
            continue
        start = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True,
                                  timeout=args.timeout)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("ZOO-RESULT ")]
            row = json.loads(line[-1][11:]) if line else {
                "model": name, "l1": f"FAIL process exited {proc.returncode}: "
                                     f"{(proc.stderr.strip().splitlines() or [''])[-1][:160]}"}
        except subprocess.TimeoutExpired:
            row = {"model": name, "l1": f"FAIL no result within {args.timeout:g} s"}
        row.setdefault("seconds", round(time.perf_counter() - start, 1))
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    cols = [c for c in ("model", "params_M", "input", "groups", "heads_groups", "blocks", "l1", "nm_2_4",
                        "drop_block", "seconds") if c in df]
    ok = df["l1"].astype(str).str.startswith("ok").sum()
    text = (f"# Torch-Pruning + autoprune across torchvision models\n\n{ok} of {len(df)} models pruned "
            f"structurally (L1 0.3), exported and matched ONNX Runtime. Machine: {platform.machine()}, "
            f"{os.cpu_count()} CPUs. Command: `.venv/bin/python benchmarks/zoo.py`.\n\n"
            + df[cols].to_markdown(index=False, floatfmt=".1f") + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, text, monitor, args.allow_noisy or getattr(args, "quick", False))
    print(text)


if __name__ == "__main__":
    main()
