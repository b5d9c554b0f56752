"""The ``autoprune`` command: one function per sub-command.

A user mistake prints one line (``autoprune: error: ...``) and exits with code 2;
nothing is written before the inputs are checked.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape  # messages quote `pip install -e .[tvm]`: not markup
from rich.table import Table

from autoprune.errors import AutopruneError, ConfigError

# A pipe gets a wide table rather than rich's 80-column default.
out = Console(width=None if sys.stdout.isatty() else 160, emoji=False)  # user text is never an emoji code
err = Console(stderr=True, emoji=False)


def cmd_devices(args: argparse.Namespace) -> int:
    from autoprune.profiles import available_profiles, load_profile

    if args.action == "check":
        if not args.name:
            raise ConfigError("`autoprune devices check` needs a profile name, e.g. `autoprune devices check "
                              "rpi4-ort`; list them with `autoprune devices`.")
        return _check_device(args.name)
    if args.name:
        raise ConfigError(f"unexpected {args.name!r}: did you mean `autoprune devices check {args.name}`?")

    table = Table(title="device profiles", title_justify="left")
    for col in ("name", "backend", "runner", "batch", "precisions", "description"):
        table.add_column(col)
    for name in available_profiles():
        p = load_profile(name)
        table.add_row(name, p.backend, p.runner, str(p.batch_size), ", ".join(p.precision.supported), p.description)
    out.print(table)
    return 0


def _check_device(name: str) -> int:
    from autoprune.devices import check_device

    report = check_device(name, log=lambda msg: err.print(f"[dim]{escape(msg)}[/]", highlight=False))
    table = Table(title=f"device {report.profile}", title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in report.rows():
        table.add_row(key, value)
    out.print(table)
    if report.verdict:
        out.print(report.verdict)
    return 1 if report.error else 0


def cmd_tracker(args: argparse.Namespace) -> int:
    from autoprune.device_server import serve_tracker

    _warn_open(args.host)
    serve_tracker(args.host, args.port, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return 0


def cmd_device_server(args: argparse.Namespace) -> int:
    from autoprune.device_server import serve
    from autoprune.profiles import RpcSettings

    try:
        tracker = RpcSettings.address(args.tracker)
    except ValueError as exc:
        raise ConfigError(f"--tracker: {exc}") from None
    if args.token_file is not None:
        import os

        from autoprune.runners._protocol import TOKEN_ENV

        try:
            token = args.token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--token-file: cannot read {args.token_file} ({exc}).") from None
        if len(token) < 16:
            raise ConfigError(f"--token-file: the token in {args.token_file} is shorter than 16 characters; "
                              "make one with `python -c 'import secrets; print(secrets.token_hex(32))'`.")
        os.environ[TOKEN_ENV] = token  # the server's sessions sign their replies with it
    if args.max_upload_mb is not None:
        import os

        from autoprune.device_server import MAX_UPLOAD_ENV

        if args.max_upload_mb < 1:
            raise ConfigError(f"--max-upload-mb {args.max_upload_mb}: give at least 1 (MiB).")
        os.environ[MAX_UPLOAD_ENV] = str(args.max_upload_mb)  # read by the server's sessions
    _warn_open(args.host)
    serve(tracker, args.key, args.host, args.port, args.port + 100,
          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    return 0


def _warn_open(host: str) -> None:
    if host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning:[/] listening on {host}: a TVM RPC server runs any code a client uploads. "
                  "Only do this on a network you trust.", highlight=False)


def cmd_methods(args: argparse.Namespace) -> int:
    from autoprune.pruning import METHODS

    table = Table(title="pruning methods", title_justify="left")
    for col in ("name", "kind", "description"):
        table.add_column(col)
    for m in METHODS.values():
        table.add_row(m.name, m.kind, m.description + (" (needs labelled batches)" if m.needs_gradients else ""))
    out.print(table)
    return 0


def cmd_groups(args: argparse.Namespace) -> int:
    from autoprune.search_loop import log_trace
    from autoprune.space import load_space, resolve_task
    from autoprune.tasks import load_task

    space = load_space(args.space)
    task = load_task(args.task, args.data_dir, _task_args_of(args))
    for note in task.notes:
        out.print(note)
    whole = resolve_task(space, task, args.setup_timeout_s, args.setup_memory_gb)
    resolved = {g.info.name: g for g in whole.groups}
    from autoprune.pruning import find_blocks

    table = Table(title=f"prunable groups of {task.name} under space {space.name!r}", title_justify="left")
    for col in ("group", "type", "channels", "searched", "methods", "layers"):
        table.add_column(col)
    for info in whole.found:
        g = resolved.get(info.name)
        channels = f"{info.channels} ({info.heads} heads)" if info.heads else str(info.channels)
        if info.channel_groups > 1:
            channels += f" ({info.channel_groups} conv groups)"
        table.add_row(info.name, info.root_type, channels, "yes" if g else "no",
                      ", ".join(g.rule.methods) if g else "", ", ".join(info.members))
    if whole.found:
        out.print(table)
    else:
        out.print(f"no prunable group in {task.name}: autoprune cuts the output channels of nn.Conv*/nn.Linear "
                  "layers (and what they reach), and none of this model's can be cut; why:", markup=False)
    log_trace(whole, out.print)
    blocks = find_blocks(task.model)
    if blocks:
        searched = set(whole.blocks)
        out.print("residual blocks that may be removed whole (space `depth:`): " + ", ".join(
            f"{b}{'' if b in searched else ' (not searched)'}" for b in blocks))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from autoprune.search_loop import search

    devices, budgets = args.device, args.latency_budget_ms or []
    if args.speedup is not None:
        if budgets:
            raise ConfigError("give the first device's budget once: --latency-budget-ms MS or --speedup X, not "
                              "both (with --speedup, the other devices are timed without a budget).")
        budgets = [None]
    elif not budgets:
        raise ConfigError("give a latency budget: --latency-budget-ms MS (on the first --device), or --speedup X "
                          "for a model X times faster than the unpruned one there (e.g. --speedup 4).")
    if len(budgets) not in (1, len(devices)):
        raise ConfigError(f"{len(devices)} --device but {len(budgets)} --latency-budget-ms: give one budget "
                          "(for the first device) or one per device, in the same order.")
    budgets = budgets + [None] * (len(devices) - len(budgets))
    result = search(
        task=args.task,
        device=devices[0],
        latency_budget_ms=budgets[0],
        also=dict(zip(devices[1:], budgets[1:], strict=True)),
        n_trials=args.trials,
        space=args.space,
        study_name=args.study,
        results_dir=args.results_dir,
        storage=args.storage,
        seed=args.seed,
        data_dir=args.data_dir,
        progress=not args.quiet,
        sampler=args.sampler,
        warm_start=not args.no_warm_start,
        finalize=not args.no_finalize,
        final_members=args.final_members,
        max_drop=args.max_drop,
        min_metric=args.min_metric,
        setup_timeout_s=args.setup_timeout_s,
        setup_memory_gb=args.setup_memory_gb,
        precisions=None if args.precision is None else [p.strip() for p in args.precision.split(",") if p.strip()],
        screen_plans=args.screen_plans,
        task_args=_task_args_of(args),
        workers=args.workers,
        artifacts=args.artifacts,
        train_device=args.train_device,
        amp=args.amp,
        speedup=args.speedup,
    )
    _print_front(result)
    _print_recommendation(result)
    out.print(f"results: {result.study_dir}/ (trials.csv, pareto.csv, pareto.png, pareto.html"
              f"{', final.csv' if not result.final.empty else ''})")
    return 0


def _print_recommendation(result) -> None:
    if result.baseline is None or result.front.empty:
        return
    pick = result.recommend()
    out.print("[bold]recommended[/] (" + ("final figures" if pick.final else "search-time figures")
              + "):", highlight=False)
    for line in pick.lines(result.study_dir):
        out.print(f"  {line}", highlight=False)


def cmd_worker(args: argparse.Namespace) -> int:
    from autoprune.search_loop import join

    result = join(storage=args.storage, study_name=args.study, results_dir=args.results_dir,
                  n_trials=args.trials, data_dir=args.data_dir, progress=not args.quiet,
                  setup_timeout_s=args.setup_timeout_s, setup_memory_gb=args.setup_memory_gb,
                  finalize=not args.no_finalize, artifacts=args.artifacts, train_device=args.train_device,
                  amp=args.amp)
    if not args.quiet:
        _print_front(result)
    return 0


def cmd_finalize(args: argparse.Namespace) -> int:
    from autoprune.finalize import finalize

    df = finalize(args.results, steps=args.steps, trials=args.trials, members=args.members,
                  log=lambda m: err.print(f"[dim]autoprune:[/] {escape(m)}", highlight=False), artifacts=args.artifacts,
                  train_device=args.train_device, amp=args.amp)
    from autoprune.results import SearchResult, noisy_mark

    result = SearchResult.load(args.results)
    short = _short(result.metric)
    table = Table(title=f"finalized front of {args.results} (written to final.csv)", title_justify="left")
    cols = {"trial": "trial", "finetune_steps": "steps (all)", "search_accuracy": f"search {short}",
            "final_accuracy": f"final {short}",
            "accuracy_drop": "drop", "search_latency_ms": "search ms", "final_latency_ms": "final ms",
            "baseline_latency_ms": "baseline ms", "paired_speedup": "speedup"}
    for c in cols.values():
        table.add_column(c, justify="right")
    for _, r in df.iterrows():
        table.add_row(str(int(r["trial"])), str(int(r["finetune_steps"])), f"{r['search_accuracy']:.2f}",
                      f"{r['final_accuracy']:.2f}",
                      f"{r['accuracy_drop']:+.2f}", f"{r['search_latency_ms']:.3f}",
                      f"{r['final_latency_ms']:.3f}{noisy_mark(r)}",
                      f"{r['baseline_latency_ms']:.3f}", f"{r['paired_speedup']:.2f}x")
    out.print(table)
    _print_recommendation(result)
    return 0


def _short(metric) -> str:
    """A column title for the metric: 'acc %' for top-1 accuracy, else e.g. 'mIoU %'."""
    name = "acc" if metric.name == "accuracy" else metric.name
    return f"{name} {metric.unit}".strip()


def cmd_front(args: argparse.Namespace) -> int:
    from autoprune.results import SearchResult

    result = SearchResult.load(args.results, storage=args.storage)
    if args.format == "table":
        _print_front(result)
        _print_recommendation(result)
    else:  # the metric's columns under its name, as in pareto.csv
        from autoprune.results import named

        front = named(result.front, result.metric)
        sys.stdout.write(front.to_csv(index=False) if args.format == "csv"
                         else front.to_json(orient="records", indent=1) + "\n")
    return 0


def _print_front(result) -> None:
    from autoprune.results import FRONT_COLUMNS, device_columns, noisy_mark

    base = result.baseline
    n_ok = int((result.trials["state"] == "COMPLETE").sum()) if not result.trials.empty else 0
    n_fail = int((result.trials["state"] == "FAIL").sum()) if not result.trials.empty else 0
    asked = f" (--speedup {result.identity['speedup']:g})" if result.identity.get("speedup") else ""
    budgets = [f"{result.budget_ms:g} ms{asked} on {result.identity['device']}"] + [
        f"{b:g} ms on {name}" if b is not None else f"none on {name}" for name, _, b, *_ in result.identity.get("also", [])]
    title = (f"Pareto front of {result.identity['study']}: budget {', '.join(budgets)} "
             f"({n_ok} complete, {n_fail} failed trials)")
    if base is not None:
        title += (f"\nbaseline (trial {int(base['trial'])}): {result.metric.name} "
                  f"{result.metric.fmt(base['accuracy'])} at {base['latency_ms']:.3f} ms")
    table = Table(title=title, title_justify="left")
    headers = {"trial": "trial", "accuracy": _short(result.metric), "accuracy_drop": "drop", "latency_ms": "latency ms",
               "latency_p90_ms": "p90 ms", "speedup": "speedup", "size_mb": "size MB",
               "macs_ratio": "MACs", "params": "params", "sparsity": "zeros", "precision": "precision",
               "round_to": "round_to",
               "methods": "methods", "fidelity": "figures"}
    others = device_columns(result.front)
    for col in FRONT_COLUMNS:
        table.add_column(headers[col], justify="right")
        if col == "speedup":  # each other device's latency and speed-up next to this one's
            for c in others:
                table.add_column(f"ms on {c.split('@', 1)[1]}", justify="right")
                table.add_column("speedup", justify="right")
    for _, r in result.front.iterrows():
        there = [v for c in others for v in (f"{r[c]:.3f}", f"{r['speedup@' + c.split('@', 1)[1]]:.2f}x")]
        table.add_row(
            str(int(r["trial"])), f"{r['accuracy']:.2f}", f"{r['accuracy_drop']:+.2f}",
            f"{r['latency_ms']:.3f}{noisy_mark(r)}", f"{r['latency_p90_ms']:.3f}", f"{r['speedup']:.2f}x", *there,
            f"{r['size_mb']:.3f}", f"{r['macs_ratio']:.2f}", f"{int(r['params']):,}", f"{r['sparsity']:.0%}",
            str(r.get("precision") or "float32"), _whole(r["round_to"]), str(r["methods"]), str(r["fidelity"]),
        )
    out.print(table)
    if result.front.empty:
        out.print("[yellow]no trial met the latency budget yet; run more trials or raise the budget[/]")


def _task_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="a keyword argument for the task factory (package.module:factory); repeat for more. "
                             "Values are read as YAML scalars: size=32 is a number, root=data/x a string")
    parser.add_argument("--model", metavar="torchvision:NAME",
                        help="with --task imagefolder:DIR: the torchvision classification model (e.g. "
                             "torchvision:resnet18)")
    parser.add_argument("--weights", metavar="FILE",
                        help="with --task imagefolder:DIR: the trained model's state_dict (or whole saved model) "
                             "with the folder's number of classes; required: a pruning search needs a trained model")
    parser.add_argument("--input-size", type=int, metavar="PX",
                        help="with --task imagefolder:DIR: the square input size images are resized and "
                             "centre-cropped to (default 224)")


def _task_args_of(args: argparse.Namespace) -> dict:
    """--task-arg pairs, and for an image folder --model, --weights and --input-size."""
    from autoprune.tasks._loader import IMAGEFOLDER, parse_task_args

    out = parse_task_args(args.task_arg)
    given = {k: v for k, v in (("model", args.model), ("weights", args.weights),
                               ("input_size", args.input_size)) if v is not None}
    if given and not args.task.startswith(IMAGEFOLDER):
        raise ConfigError("--model, --weights and --input-size go with --task imagefolder:DIR; a task factory "
                          "takes its arguments as --task-arg key=value.")
    if args.task.startswith(IMAGEFOLDER):
        if "weights" in given:  # absolute: a later finalize or export may run from elsewhere
            given["weights"] = str(Path(given["weights"]).expanduser().resolve())
        out.update(given)
    return out


def _whole(value) -> str:
    """A count as text (pandas turns a column with a gap into floats: 16.0)."""
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "-"


def cmd_export(args: argparse.Namespace) -> int:
    from autoprune.deploy import export_trial, package_digest
    from autoprune.results import SearchResult

    if args.study is not None:  # a study known by its storage only: its folder here is made from it
        from autoprune.results import study_folder

        if args.storage is None:
            raise ConfigError("--study needs --storage: the storage the study is in.")
        study_folder(args.results, args.storage, args.study)
    result = SearchResult.load(args.results, storage=args.storage, artifacts=args.artifacts)
    path = export_trial(result, args.trial, args.out)
    manifest = json.loads((path / "manifest.json").read_text())
    m, metric = manifest["metrics"], result.metric
    out.print(f"exported trial {args.trial} to {path}/: {metric.name} {metric.fmt(m[metric.name])}, "
              f"latency {m['latency_ms']:.3f} ms ({m['speedup']:.2f}x) {escape('[' + m['fidelity'] + ']')}, "
              f"files: {', '.join(manifest['files'])}")
    out.print(f"digest {package_digest(path)} (give it to `autoprune run --expect-digest` where the package is used)",
              highlight=False)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from autoprune.deploy import run_package

    if args.save_output is not None and not args.save_output.parent.is_dir():
        raise ConfigError(f"--save-output: the folder {args.save_output.parent} does not exist; create it first.")
    res = run_package(args.package, args.input, runs=args.runs, expect_digest=args.expect_digest)
    if res["note"]:
        err.print(f"[dim]autoprune:[/] {escape(res['note'])}", highlight=False)
    shapes = "; ".join(f"{name} {tuple(a.shape)}" for name, a in res["outputs"].items()) \
        if len(res["outputs"]) > 1 else f"output shape {tuple(res['output_shape'])}"
    out.print(f"checksums ok; {escape(shapes)}; latency median "
              f"{res['latency_median_ms']:.3f} ms, p90 {res['latency_p90_ms']:.3f} ms over {res['runs']} runs "
              f"(search measured {res['manifest']['metrics']['latency_ms']:.3f} ms)")
    if res.get("agreement"):
        a, precision = res["agreement"], (res["manifest"].get("precision") or {}).get("precision", "float32")
        top1 = f"same top class on {a['top1_agreement']:.0%}, " if "top1_agreement" in a else ""
        each = "".join(f", {name} {diff:.3g}" for name, diff in a.get("per_output", {}).items())
        out.print(f"check against the float model ({precision} package) on {a['examples']} validation inputs: "
                  f"{top1}max |difference| {a['max_abs_diff']:.3g}{each}", highlight=False, markup=False)
    if res.get("no_check"):
        err.print(f"[yellow]warning:[/] {escape(res['no_check'])}", highlight=False)
    out.print(f"digest {res['digest']} " + ("(as expected)" if args.expect_digest else
              "(compare it with the one `autoprune export` printed, or pass --expect-digest)"), highlight=False)
    if args.save_output:
        import numpy as np

        if len(res["outputs"]) > 1:  # one array per output, named as the manifest names them
            np.savez(args.save_output, **res["outputs"])
        else:
            np.save(args.save_output, res["output"])
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from autoprune.report import write_report

    path = write_report(args.results, args.out)
    out.print(f"report: {path} (self-contained HTML, opens offline)")
    return 0


def _train_device_arguments(s: argparse.ArgumentParser) -> None:
    s.add_argument("--train-device", default="auto", metavar="DEVICE",
                   help="where recovery, distillation, batch-norm re-estimation and scoring run: auto (CUDA when "
                        "torch sees it), cpu, cuda or cuda:N; latency is measured by --device either way")
    s.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision of training on CUDA (auto: bf16 where supported, else fp16; off on the CPU)")


def _count(least: int):
    """An argparse type: a whole number of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def _setup_limits(s: argparse.ArgumentParser) -> None:
    s.add_argument("--setup-timeout-s", type=float, default=60.0, metavar="S",
                   help="longest time tracing the model for pruning may take (default 60)")
    s.add_argument("--setup-memory-gb", type=float, metavar="GB",
                   help="most memory tracing the model may add (default: half of what is available)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="autoprune", description="Hardware-aware pruning search: "
                                "find the pruned model that is fastest on your device, by measuring it.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("devices", help="list device profiles; `devices check NAME` tests one")
    s.add_argument("action", nargs="?", choices=("list", "check"), default="list")
    s.add_argument("name", nargs="?", help="profile name or YAML path (with check)")
    s.set_defaults(func=cmd_devices)
    s = sub.add_parser("tracker", help="run a TVM RPC tracker that boards register with (binds 127.0.0.1)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=9190)
    s.set_defaults(func=cmd_tracker)
    s = sub.add_parser("device-server", help="run on a board: a TVM RPC server that times TVM and ONNX Runtime")
    s.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the tracker to register with")
    s.add_argument("--key", required=True, help="device key (the profile's rpc.key, e.g. rpi4)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; the tracker's clients must reach it)")
    s.add_argument("--port", type=int, default=9091, help="first port to try (default 9091)")
    s.add_argument("--token-file", type=Path, metavar="FILE",
                   help="sign timing replies with the token in FILE (or $AUTOPRUNE_DEVICE_TOKEN); hosts with "
                        "the same $AUTOPRUNE_DEVICE_TOKEN refuse replies of boards without it")
    s.add_argument("--max-upload-mb", type=int, metavar="MB",
                   help="what one session may upload in all (default 2048; a larger upload is refused)")
    s.set_defaults(func=cmd_device_server)
    s = sub.add_parser("methods", help="list pruning methods")
    s.set_defaults(func=cmd_methods)
    s = sub.add_parser("groups", help="list a task's prunable groups under a search space")
    s.add_argument("--task", required=True)
    _task_args(s)
    s.add_argument("--space", default="default")
    s.add_argument("--data-dir")
    _setup_limits(s)
    s.set_defaults(func=cmd_groups)

    s = sub.add_parser("search", help="run or resume a search")
    s.add_argument("--task", required=True, help="built-in task name or package.module:factory")
    _task_args(s)
    s.add_argument("--device", required=True, action="append",
                   help="device profile name or YAML path; repeat to time every candidate on several "
                        "devices (the first is the main one)")
    s.add_argument("--latency-budget-ms", type=float, action="append", metavar="MS",
                   help="latency budget on the (first) device; repeat to give each --device its own")
    s.add_argument("--speedup", type=float, metavar="X",
                   help="instead of --latency-budget-ms: the budget is the unpruned model's latency on the first "
                        "device, measured when the search starts, divided by X (the study keeps it on resume)")
    s.add_argument("--trials", type=int, default=40, help="total trials, baseline included (default 40)")
    s.add_argument("--space", default="default", help="search space name or YAML path")
    s.add_argument("--study", help="study name (default TASK-DEVICE)")
    s.add_argument("--results-dir", default="results")
    s.add_argument("--storage", help="Optuna storage URL (default: SQLite in the study folder)")
    s.add_argument("--artifacts", metavar="URL",
                   help="an artifact store for the trials' files (a folder, file://PATH, s3://BUCKET or gs://BUCKET), so "
                        "finalize and export work from machines without this results folder")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sampler", default="tpe", choices=("tpe", "nsga2", "gp", "random"),
                   help="Optuna sampler (default tpe; see results/benchmarks/samplers.md)")
    s.add_argument("--no-warm-start", action="store_true",
                   help="do not start with the uniform 50%% and 30%% L1 plans (and the unpruned model at INT8)")
    s.add_argument("--precision", metavar="LIST",
                   help="numeric precisions to search, comma-separated among float32, int8 (static, calibrated "
                        "on training inputs), int8-dynamic (linear layers), float16 (default: the space's "
                        "`precision.choices`, e.g. float32,int8; float32 is always offered, as the baseline's). "
                        "Only those the device profile supports (`precision.supported`)")
    s.add_argument("--screen-plans", type=int, metavar="N",
                   help="plans to screen cheaply (pruned, timed, and if within the budget BatchNorm re-estimated, "
                        "a few distilled steps, scored on a validation subset) before the best --trials are "
                        "trained; a plan timed over the budget does not count, up to 4x N drawn (default: the "
                        "space's `screen.plans`; 0: no screen, every trial is the sampler's)")
    s.add_argument("--data-dir", help="dataset folder (default: the Debian package's)")
    s.add_argument("--workers", type=int, metavar="N",
                   help="processes loading a task's data when it is read from a Dataset or image folder "
                        "(default: the cores less one, at most 4; 0 loads in the main process)")
    s.add_argument("--final-members", type=int, metavar="N",
                   help="finalize at most N front members (default: the space's recovery.final_members, 4)")
    s.add_argument("--no-finalize", action="store_true",
                   help="stop after the trials: skip the full fine-tune, full validation and paired re-timing of "
                        "the front's best members (run `autoprune finalize` later)")
    s.add_argument("--max-drop", type=float, default=1.0, metavar="PTS",
                   help="points of the task's metric below the baseline the recommended pick may lose "
                        "(default 1.0)")
    s.add_argument("--min-metric", type=float, metavar="VALUE",
                   help="least accuracy shown on the front and plots (default: the baseline's less 10 points; "
                        "lower candidates stay in trials.csv)")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    _train_device_arguments(s)
    _setup_limits(s)
    s.set_defaults(func=cmd_search)

    s = sub.add_parser("worker", help="join a running study (shared --storage) and run its trials")
    s.add_argument("--storage", required=True, help="the study's Optuna storage URL, e.g. postgresql://...")
    s.add_argument("--study", required=True, help="study name")
    s.add_argument("--results-dir", default="results", help="where this worker writes trial files")
    s.add_argument("--trials", type=int, help="total trials the study should hold (default: the search's)")
    s.add_argument("--data-dir", help="dataset folder on this machine")
    s.add_argument("--artifacts", metavar="URL", help="the artifact store (default: the one the search named)")
    s.add_argument("--no-finalize", action="store_true",
                   help="when the trials are done, leave finalizing to the other processes (by default every "
                        "process finalizes the front members whose trial files it holds, each member once)")
    s.add_argument("--quiet", action="store_true", help="no progress output")
    _train_device_arguments(s)
    _setup_limits(s)
    s.set_defaults(func=cmd_worker)

    s = sub.add_parser("finalize", help="fine-tune the front longer and time it again, paired with the baseline")
    s.add_argument("results", type=Path)
    s.add_argument("--steps", type=_count(0),
                   help="fine-tune steps per member on top of its search-time ones (default: the space's "
                        "recovery.final_steps)")
    s.add_argument("--members", type=_count(1),
                   help="finalize at most this many front members, the most accurate (default: the space's "
                        "recovery.final_members)")
    s.add_argument("--trials", type=lambda v: [int(x) for x in v.split(",")],
                   help="comma-separated trial numbers (default: the accuracy/latency front)")
    s.add_argument("--artifacts", metavar="URL", help="the artifact store (default: the one the search named)")
    _train_device_arguments(s)
    s.set_defaults(func=cmd_finalize)

    s = sub.add_parser("front", help="print a study's Pareto front")
    s.add_argument("results", type=Path)
    s.add_argument("--format", choices=("table", "csv", "json"), default="table")
    s.add_argument("--storage")
    s.set_defaults(func=cmd_front)

    s = sub.add_parser("export", help="write a trial as a deploy package")
    s.add_argument("results", type=Path)
    s.add_argument("--trial", type=int, required=True)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--storage", help="the study's storage URL (default: the one its config.json names)")
    s.add_argument("--study", help="with --storage: export from a study this machine has no folder of; RESULTS is "
                                   "made as its folder (config.json from the storage) and the files come from the "
                                   "artifact store")
    s.add_argument("--artifacts", metavar="URL", help="the artifact store (default: the one the search named)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("run", help="verify and run a deploy package with plain onnxruntime")
    s.add_argument("package", type=Path)
    s.add_argument("--input", type=Path, help=".npy input (default: random at the model's shape)")
    s.add_argument("--runs", type=_count(1), default=100, help="timed runs (default 100)")
    s.add_argument("--expect-digest", metavar="sha256:HEX",
                   help="refuse the package unless its digest (printed by `autoprune export`) is this one")
    s.add_argument("--save-output", type=Path, help="write the output array to this .npy file (a model with "
                   "several outputs: an .npz archive, one array per output name)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("report", help="write a self-contained HTML report of a study")
    s.add_argument("results", type=Path)
    s.add_argument("-o", "--out", type=Path, metavar="FILE", help="HTML file to write (default RESULTS/report.html)")
    s.set_defaults(func=cmd_report)
    return p


def _machine_refused(exc: Exception) -> str | None:
    """One line for an error of the machine, not of autoprune: a full disk, a read-only
    file or folder, a database that refuses to write. None for anything else."""
    hint = ("Finished trials are saved: free the disk or fix the permissions, then run the same command "
            "again to resume.")
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}. {hint}"
    if type(exc).__module__.startswith("sqlalchemy"):
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"the study's database refused the operation: {detail[0] if detail else type(exc).__name__}. {hint}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AutopruneError as exc:
        err.print(f"[bold red]autoprune: error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except Exception as exc:  # noqa: BLE001 - only the machine's refusals become one line; the rest is a bug
        message = _machine_refused(exc)
        if message is None:
            raise
        err.print(f"[bold red]autoprune: error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("autoprune: interrupted. Finished trials are saved; run the same command to resume.")
        return 130


if __name__ == "__main__":
    sys.exit(main())
