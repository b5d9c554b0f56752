"""Terminal progress for a search (rich); silent when disabled or not a terminal."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class SearchProgress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True)
        self._progress: Progress | None = None
        self._task = None
        self._best: str = ""

    def __enter__(self) -> SearchProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def log(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[dim]autoprune:[/] {message}", highlight=False)

    def start(self, total: int, done: int) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=not sys.stderr.isatty(),
        )
        self._progress.start()
        self._task = self._progress.add_task("", total=total, completed=done)

    def advance(self, trial, budget_ms: float) -> None:
        if self._progress is None:
            return
        attrs = trial.user_attrs
        if trial.state.name == "COMPLETE":
            lat, acc = attrs["latency_ms"], attrs["accuracy"]
            mark = "[green]within budget[/]" if lat <= budget_ms else "[yellow]over budget[/]"
            extra = ""
            if str(attrs.get("evaluation", "full")).startswith("zero-shot"):
                extra += "  [dim]zero-shot (fine-tune skipped)[/]"
            if attrs.get("build_tasks"):  # TVM: how much tuning this candidate cost
                extra += (f"  [dim]tuning {attrs.get('build_tuning_s', 0):.0f} s, "
                          f"{attrs.get('build_tasks_reused', 0)}/{attrs['build_tasks']} tasks reused[/]")
            self._progress.console.print(
                f"  trial {trial.number:>3}: accuracy {acc:6.2f}%  latency {lat:7.3f} ms  "
                f"size {attrs['size_mb']:.3f} MB  {mark}{extra}",
                highlight=False,
            )
        elif attrs.get("fail_stage") and attrs.get("fail_stage") != "interrupted":
            self._progress.console.print(
                f"  trial {trial.number:>3}: [red]failed at {attrs['fail_stage']}[/]: "
                f"{attrs.get('fail_reason', '')[:160]}",
                highlight=False,
            )
        if trial.state.name == "COMPLETE" or attrs.get("fail_stage") not in (None, "interrupted"):
            self._progress.advance(self._task)
