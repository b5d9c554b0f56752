"""Terminal progress for a search (rich); silent when disabled or not a terminal."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from autoprune.evaluate import MetricInfo

if TYPE_CHECKING:
    from autoprune.trials import TrialRecord


class SearchProgress:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.console = Console(stderr=True, emoji=False)
        self._progress: Progress | None = None
        self._task = None
        self._screen = None  # the screen's own bar (a line per screened plan would bury the trained ones)
        self.screen_total = 0
        self._best: str = ""
        self.metric = MetricInfo()  # the task's, once it is loaded

    def __enter__(self) -> SearchProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()

    def log(self, message: str) -> None:
        if self.enabled:
            # escaped: a message quotes user text (paths, reasons), never markup; soft_wrap: one
            # line per message in a log file too, where the console is 80 columns wide
            self.console.print(f"[dim]autoprune:[/] {escape(message)}", highlight=False, soft_wrap=True)

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

    def advance(self, record: TrialRecord, budget_ms: float) -> None:
        """One line for a finished trial, and the bar moved on if it counts."""
        if self._progress is None:
            return
        if record.screen and not record.interrupted and record.fail_stage is None:
            if record.screen_score is None:
                return  # timed over the budget: not one of the plans the screen is to score
            if self._screen is None:
                self._screen = self._progress.add_task("[dim]screened plans (pruned, timed, scored; not trained)[/]",
                                                       total=self.screen_total or None)
            self._progress.advance(self._screen)
            return
        if record.complete:
            lat, acc = record.latency_ms or 0.0, record.accuracy or 0.0
            mark = "[green]within budget[/]" if lat <= budget_ms else "[yellow]over budget[/]"
            extra = f"  {record.precision}" if record.precision not in (None, "float32") else ""
            if str(record.evaluation or "full").startswith("zero-shot"):
                extra += "  [dim]zero-shot (fine-tune skipped)[/]"
            elif record.finetune_steps:  # the accuracy's fidelity: how many steps it rests on
                extra += f"  [dim]{record.finetune_steps} steps[/]"
            if record.latency_rounds:  # timed again: the first was far slower than the screen's figure
                extra += f"  [dim]fastest of {len(record.latency_rounds)} timings[/]"
            if record.build.get("tasks"):  # TVM: how much tuning this candidate cost
                extra += (f"  [dim]tuning {record.build.get('tuning_s', 0):.0f} s, "
                          f"{record.build.get('tasks_reused', 0)}/{record.build['tasks']} tasks reused[/]")
            self._progress.console.print(
                f"  trial {record.number:>3}: {self.metric.name} {self.metric.fmt(acc):>7}  latency {lat:7.3f} ms  "
                f"size {record.size_mb or 0.0:.3f} MB  {mark}{extra}",
                highlight=False, soft_wrap=True,
            )
        elif not record.interrupted:
            stage = record.fail_stage.value if record.fail_stage else "?"
            self._progress.console.print(
                f"  {'screened plan' if record.screen else 'trial'} {record.number:>3}: [red]failed at {stage}[/]: {escape((record.fail_reason or '')[:160])}",
                highlight=False, soft_wrap=True,
            )
        if record.counts:
            self._progress.advance(self._task)
