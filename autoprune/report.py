"""A self-contained HTML report of a study: ``autoprune report results/<study>``.

Sections: a summary (baseline, budget, trials by state, failures, best speed-up), the
accuracy/latency front, the per-group pruning ratios of the front's members, the
hypervolume history, the latency distribution and the methods chosen. plotly.js is
embedded once, inline, so the file opens offline and can be mailed around.

Any folder a search wrote gives a report: a section with nothing to show (no completed
trial, no baseline, an older folder without some attribute) says so in a note.

Example:
    >>> from autoprune.report import write_report
    >>> write_report("results/fashion-mnist-x86-ort")
    PosixPath('results/fashion-mnist-x86-ort/report.html')
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from autoprune._config import atomic_write_text
from autoprune.errors import StudyError
from autoprune.pareto import hypervolume_2d
from autoprune.results import SearchResult

REPORT_NAME = "report.html"

# Columns the report reads; a folder written by an older autoprune may lack some.
_COLUMNS = (
    "trial", "state", "baseline", "accuracy", "accuracy_drop", "latency_ms", "latency_ci_low_ms",
    "latency_ci_high_ms", "latency_noisy", "latency_cached", "size_mb", "speedup", "feasible",
    "fail_stage", "fail_reason", "precision", "float_accuracy", "calibration",
)
_NUMERIC = ("accuracy", "accuracy_drop", "latency_ms", "latency_ci_low_ms", "latency_ci_high_ms", "size_mb", "speedup")


def write_report(results_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the HTML report of the study in ``results_dir`` and return its path.

    Args:
        results_dir: the folder a search wrote (``results/<study>``).
        out: the HTML file to write; default ``results_dir/report.html``.

    Raises:
        StudyError: ``results_dir`` is not a readable study, or ``out`` cannot be written.

    Example:
        >>> write_report("results/fashion-mnist-x86-ort", out="/tmp/fm.html")
        PosixPath('/tmp/fm.html')
    """
    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / REPORT_NAME
    result = _load(results_dir)
    _check_output(results_dir, out)
    html = _render(result)
    try:
        atomic_write_text(out, html)
    except OSError as exc:
        raise StudyError(
            f"cannot write the report to {out}: {exc.strerror or exc}. Pass -o FILE to write it elsewhere."
        ) from None
    return out


def _load(results_dir: Path) -> SearchResult:
    if not results_dir.is_dir():
        what = "is not a directory" if results_dir.exists() else "does not exist"
        raise StudyError(
            f"{results_dir} {what}. Pass the folder a search wrote, e.g. results/fashion-mnist-x86-ort."
        )
    try:
        recorded = json.loads((results_dir / "config.json").read_text()).get("storage")
    except (OSError, ValueError, AttributeError):
        pass  # missing or damaged config.json: SearchResult.load below says which
    else:
        # SQLite creates a missing database file: check first, so that a report never
        # leaves an empty study.db behind in someone's results folder.
        if not recorded and not (results_dir / "study.db").is_file():
            raise StudyError(
                f"{results_dir} has no study.db, so there are no trials to report. "
                "Run the search (again) to create it, or pass the folder that holds it."
            )
    # SearchResult.load opens the storage through storage.open_storage, which turns a
    # damaged database into one readable StudyError
    return SearchResult.load(results_dir)


def _check_output(results_dir: Path, out: Path) -> None:
    if not out.parent.is_dir():  # a report is one file: it does not make folders
        raise StudyError(f"the folder {out.parent} does not exist; create it first or pass -o FILE elsewhere.")
    if out.is_dir():
        raise StudyError(f"{out} is a directory; pass the report's file name, e.g. -o {out / REPORT_NAME}.")
    # The report may replace an earlier report, but never a file the search wrote.
    inside = results_dir.resolve() in out.resolve().parents
    if inside and out.exists() and out.name != REPORT_NAME:
        raise StudyError(
            f"{out} already exists in the results folder and is not a report; "
            f"write the report elsewhere with -o FILE (or as {results_dir / REPORT_NAME})."
        )


# -- the page -------------------------------------------------------------------------


class _Page:
    """HTML parts in order; plotly.js goes inline with the first figure only."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self._plotlyjs_done = False
        self.metric = None  # a named metric (MetricInfo): tables show its columns under its name

    def section(self, title: str, intro: str = "") -> None:
        self.parts.append(f"<h2>{escape(title)}</h2>")
        if intro:
            self.parts.append(f"<p>{escape(intro)}</p>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{escape(text)}</p>')

    def table(self, df: pd.DataFrame, index: bool = False) -> None:
        if self.metric is not None:  # the metric's columns under its name, as in the CSV files
            df = df.rename(columns=self.metric.key)
        self.parts.append(df.to_html(index=index, border=0, classes="table", na_rep="–", escape=True))

    def figure(self, fig) -> None:
        fig.update_layout(template="plotly_white", margin={"t": 50, "b": 40, "l": 60, "r": 20})
        self.parts.append(fig.to_html(full_html=False, include_plotlyjs=not self._plotlyjs_done,
                                      config={"displaylogo": False}))
        self._plotlyjs_done = True


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
.table th, .table td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; }
.small { color: #666; font-size: 0.85em; }
"""


def _render(result: SearchResult) -> str:
    df = _trials(result)
    front = df[df["trial"].isin(set(result.front["trial"]) if not result.front.empty else set())]
    front = front.sort_values("latency_ms")
    plans = _plans(result)
    page = _Page()
    page.metric = result.metric if result.metric.name != "accuracy" else None
    _recommended(page, result)
    _summary(page, result, df, front)
    _front_section(page, result, result.shown(df), front)
    _ratios_section(page, front, plans, result.metric)
    _hypervolume_section(page, result, df)
    _latency_section(page, result, df)
    _methods_section(page, df, front, plans)
    from autoprune._version import __version__

    name = escape(str(result.identity.get("study", result.study_dir.name)))
    written = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>autoprune report: {name}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>autoprune report: {name}</h1>\n"
        f"<p class=\"small\">{escape(str(result.study_dir))}, written {written} by autoprune "
        f"{escape(__version__)}. Self-contained: opens offline.</p>\n"
        + "\n".join(page.parts)
        + "\n</body>\n</html>\n"
    )


def _trials(result: SearchResult) -> pd.DataFrame:
    """The trials table with every column the report reads (missing ones empty)."""
    df = result.trials.copy()
    for col in _COLUMNS:
        if col not in df:
            df[col] = None
    for col in _NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["baseline"] = df["baseline"].fillna(False).astype(bool)
    df["feasible"] = df["feasible"].fillna(False).astype(bool)
    return df


def _plans(result: SearchResult) -> dict[int, dict[str, dict[str, Any]]]:
    """Each trial's plan as {group: {"method", "ratio"}}, removed blocks included.

    From the ``plan`` user attribute; a trial without it (an older folder) falls back to
    its Optuna parameters ``<group>.method`` / ``<group>.ratio``.
    """
    plans = {}
    for r in result.records:
        groups = (r.plan or {}).get("groups")
        if not groups:
            groups = {
                name[: -len(".method")]: {"method": method, "ratio": r.params.get(name[: -len(".method")] + ".ratio", 0.0)}
                for name, method in r.params.items()
                if name.endswith(".method")
            }
        # a removed block shows as its own column, cut whole (ratio 1)
        blocks = (r.plan or {}).get("drop_blocks") or []
        groups = dict(groups or {}, **{b: {"method": "drop_block", "ratio": 1.0} for b in blocks})
        if groups:
            plans[r.number] = groups
    return plans


# -- sections ---------------------------------------------------------------------------


def _summary(page: _Page, result: SearchResult, df: pd.DataFrame, front: pd.DataFrame) -> None:
    ident = result.identity
    budget = result.budget_ms
    base = result.baseline
    complete = df[df["state"] == "COMPLETE"]
    feasible = df[df["feasible"]]
    states = df["state"].value_counts()
    rows: list[tuple[str, str]] = [
        ("study", str(ident.get("study", ""))),
        ("task / device / space", f"{ident.get('task', '?')} / {ident.get('device', '?')} / {ident.get('space', '?')}"),
        ("latency budget", f"{budget:g} ms"),
    ]
    if base is not None:
        text = (f"trial {int(base['trial'])}: {result.metric.name} {result.metric.fmt(base['accuracy'])} at "
                f"{base['latency_ms']:.3f} ms, "
                f"{base['size_mb']:.3f} MB")
        rows.append(("baseline", text))
    else:
        rows.append(("baseline", f"none completed: speed-ups and {result.metric.name} drops cannot be computed"))
    rows.append(("trials", f"{len(df)} ({', '.join(f'{n} {s}' for s, n in states.items()) or 'none'})"))
    rows.append(("within the budget", f"{len(feasible)} of {len(complete)} completed"))
    rows.append(("Pareto front", f"{len(front)} trial(s)" + (f": {', '.join(str(int(t)) for t in front['trial'])}"
                                                            if len(front) else "")))
    shown = result.shown(feasible)
    rows.append(("metric", f"{result.metric.label()}, {result.metric.direction}"))
    rows.append(("best speed-up within the budget", _best_speedup(shown, base, result.metric)
                 + " (search-time figures)"))
    if len(shown) < len(feasible):
        rows.append(("not shown", (f"{len(feasible) - len(shown)} feasible trial(s) below "
                                   f"{result.metric.fmt(result.metric_floor)} (--min-metric; they stay in "
                                   "trials.csv)")))
    page.section("Summary")
    page.table(pd.DataFrame(rows, columns=["", "value"]))

    failed = df[df["state"] == "FAIL"]
    if failed.empty:
        return
    page.parts.append("<h3>Failures, grouped by stage and reason</h3>")
    # A reason can be a long traceback line; its first line is what groups alike failures.
    reason = failed["fail_reason"].fillna("(no reason recorded)").astype(str).str.split("\n").str[0].str.slice(0, 300)
    grouped = (
        failed.assign(stage=failed["fail_stage"].fillna("?"), reason=reason)
        .groupby(["stage", "reason"], sort=False)["trial"]
        .agg(count="size", trials=lambda s: ", ".join(str(int(t)) for t in s))
        .reset_index()
        .sort_values("count", ascending=False)
    )
    page.table(grouped)


def _recommended(page: _Page, result: SearchResult) -> None:
    """The search's answer first: the recommended picks, then how to read the figures."""
    page.section("Recommended",
                 "Final figures come from the full fine-tune (the space's final_steps), the whole validation set "
                 "and a latency timed again right after the baseline (paired); search-time figures come from a "
                 "short recovery (its rung: the steps say how long) on a validation subset, timed once. "
                 "Only final figures are fit to choose a model by; `autoprune finalize` makes them.")
    if result.baseline is None or result.front.empty:
        page.note("Nothing to recommend yet: no completed baseline or no feasible trial.")
        return
    rec = result.recommend()
    page.parts.append("<ul>" + "".join(f"<li><code>{escape(line.strip())}</code></li>" if line.startswith(" ")
                                       else f"<li>{escape(line)}</li>" for line in rec.lines(result.study_dir))
                      + "</ul>")
    if not result.final.empty:
        cols = ["trial", "finetune_steps", "search_accuracy", "final_accuracy", "accuracy_drop",
                "search_latency_ms", "final_latency_ms", "baseline_latency_ms", "paired_speedup"]
        page.parts.append("<h3>Finalized members</h3>")
        page.table(result.final[[c for c in cols if c in result.final]].round(3))


def _best_speedup(feasible: pd.DataFrame, base: pd.Series | None, metric) -> str:
    if feasible.empty:
        return "no completed trial within the budget yet"
    if base is None:
        r = feasible.sort_values("latency_ms").iloc[0]
        return f"unknown without a baseline; fastest is trial {int(r['trial'])} at {r['latency_ms']:.3f} ms"
    r = feasible.sort_values("speedup", ascending=False).iloc[0]
    return (f"{r['speedup']:.2f}x: trial {int(r['trial'])}, {r['latency_ms']:.3f} ms, {metric.name} "
            f"{metric.fmt(r['accuracy'])} "
            f"({-r['accuracy_drop']:+.2f} points vs the baseline)")


def _front_section(page: _Page, result: SearchResult, df: pd.DataFrame, front: pd.DataFrame) -> None:
    import plotly.graph_objects as go

    metric = result.metric
    page.section(f"{'Accuracy' if metric.name == 'accuracy' else metric.name} against measured latency",
                 "Every completed trial; the feasible Pareto front joined by a line. Trials over the latency "
                 "budget are kept by the search but ranked behind the feasible ones.")
    complete = df[df["state"] == "COMPLETE"].dropna(subset=["accuracy", "latency_ms"])
    if complete.empty:
        page.note(f"No completed trial has a measured {metric.name} and latency, so there is nothing to plot.")
        return
    hover = (f"trial %{{customdata[0]}}<br>{metric.name} %{{y:.2f}}{metric.unit}<br>latency %{{x:.3f}} ms<br>"
             "size %{customdata[1]:.3f} MB<br>speed-up %{customdata[2]:.2f}x<br>precision %{customdata[3]}"
             "<extra></extra>")
    complete = complete.assign(precision=complete["precision"].fillna("float32"))  # studies from before precisions
    front = front.assign(precision=front["precision"].fillna("float32") if "precision" in front else "float32")
    cols = ["trial", "size_mb", "speedup", "precision"]
    on_front = complete["trial"].isin(front["trial"])
    fig = go.Figure()
    other = complete[~on_front & complete["feasible"]]
    over = complete[~complete["feasible"]]
    fig.add_scatter(x=other["latency_ms"], y=other["accuracy"], mode="markers", name="within budget",
                    marker={"color": "#9e9e9e", "size": 8}, customdata=other[cols], hovertemplate=hover)
    fig.add_scatter(x=over["latency_ms"], y=over["accuracy"], mode="markers", name="over budget (infeasible)",
                    marker={"color": "#ef6c00", "symbol": "x", "size": 9}, customdata=over[cols],
                    hovertemplate=hover)
    fig.add_scatter(x=front["latency_ms"], y=front["accuracy"], mode="lines+markers+text", name="Pareto front",
                    text=front["trial"].astype(int).astype(str), textposition="top right",
                    marker={"color": "#1565c0", "size": 10}, customdata=front[cols], hovertemplate=hover)
    base = result.baseline
    if base is not None:
        fig.add_scatter(x=[base["latency_ms"]], y=[base["accuracy"]], mode="markers", name="baseline (unpruned)",
                        marker={"symbol": "star", "size": 16, "color": "#c62828"})
    fig.add_vline(x=result.budget_ms, line_dash="dash", line_color="#2e7d32",
                  annotation_text=f"budget {result.budget_ms:g} ms")
    fig.update_layout(xaxis_title="latency, median (ms)",
                      yaxis_title=f"validation {metric.label()}, {metric.direction}", height=480)
    page.figure(fig)
    # Failed trials have no accuracy or latency to place on these axes.
    n_failed = int((df["state"] == "FAIL").sum())
    if n_failed:
        page.note(f"{n_failed} failed trial(s) have no measurement and are not plotted; see Failures above.")
    if base is None:
        page.note("No completed baseline (trial 0), so it is not marked and speed-ups are unknown.")
    if front.empty:
        page.note("No completed trial is within the budget, so there is no front yet.")


def _ratios_section(page: _Page, front: pd.DataFrame, plans: dict[int, dict[str, dict[str, Any]]], metric) -> None:
    import plotly.graph_objects as go

    page.section("Pruning ratios of the front",
                 "One row per front member (fastest first), one column per prunable group: the share of its "
                 "channels removed and the method that ranked them ('none': the group is left whole).")
    members = [int(t) for t in front["trial"] if int(t) in plans]
    if front.empty:
        page.note("There is no feasible front yet, so there is nothing to show.")
        return
    if not members:
        page.note("The front's trials carry no pruning plan (an older results folder).")
        return
    rows = [{"trial": n, "group": g, "method": c.get("method"), "ratio": float(c.get("ratio") or 0.0)}
            for n in members for g, c in plans[n].items()]
    tidy = pd.DataFrame(rows)
    groups = list(dict.fromkeys(tidy["group"]))  # the plan's order, which is the model's
    ratio = tidy.pivot(index="trial", columns="group", values="ratio").reindex(index=members, columns=groups)
    method = tidy.pivot(index="trial", columns="group", values="method").reindex(index=members, columns=groups)
    info = front.set_index("trial").loc[members]
    labels = [f"trial {n} · {info.loc[n, 'latency_ms']:.3f} ms · {metric.fmt(info.loc[n, 'accuracy'], 1)}" for n in members]
    fig = go.Figure(go.Heatmap(
        z=ratio.to_numpy(), x=groups, y=labels, text=method.fillna("").to_numpy(), zmin=0, zmax=1,
        colorscale="Blues", texttemplate="%{text}<br>%{z:.2f}", colorbar={"title": "ratio"},
        hovertemplate="%{y}<br>group %{x}<br>%{text}, ratio %{z:.2f}<extra></extra>",
    ))
    fig.update_layout(height=max(260, 120 + 40 * len(members)), xaxis_title="group (root layer)",
                      yaxis={"autorange": "reversed"})
    page.figure(fig)


def _hypervolume_section(page: _Page, result: SearchResult, df: pd.DataFrame) -> None:
    import plotly.graph_objects as go

    base = result.baseline
    budget = result.budget_ms
    # Only trials within the budget and faster than the unpruned model are worth
    # anything, so the reference latency is the smaller of the two.
    if base is not None:
        ref = min(budget, float(base["latency_ms"]))
        ref_text = f"min(budget {budget:g} ms, baseline {float(base['latency_ms']):.3f} ms) = {ref:.3f} ms"
        counts = "within the budget and faster than the baseline"
    else:
        ref, ref_text, counts = budget, f"the budget, {budget:g} ms (there is no baseline)", "within the budget"
    m = result.metric
    page.section("Hypervolume history",
                 f"How much of the {m.name}/latency plane the trials so far dominate ({m.name} "
                 f"{'maximised' if m.higher_is_better else 'minimised'}, "
                 f"latency minimised), after each trial. Reference point: 0{m.unit} {m.name} and latency {ref_text}. "
                 f"Shown as a share of the box 0..{ref:.3f} ms x 0..100, so 1 would be 100{m.unit} {m.name} at no "
                 f"latency; a trial adds to it only if it is {counts}. Size, the third objective, is left out "
                 "so that the number stays readable.")
    complete = df[(df["state"] == "COMPLETE")].dropna(subset=["accuracy", "latency_ms"])
    if not math.isfinite(ref) or ref <= 0:
        page.note(f"No usable reference latency ({ref}), so there is no history to show.")
        return
    numbers = sorted(int(t) for t in df["trial"])
    box = ref * 100.0
    history = pd.DataFrame({
        "trial": numbers,
        "hypervolume": [hypervolume_2d(complete[complete["trial"] <= n], ref, m.sign) / box for n in numbers],
    })
    if history.empty or history["hypervolume"].iloc[-1] == 0:
        page.note(f"No completed trial is {counts} yet: the hypervolume is 0 throughout.")
        return
    fig = go.Figure(go.Scatter(x=history["trial"], y=history["hypervolume"], mode="lines+markers",
                               line_shape="hv", hovertemplate="after trial %{x}: %{y:.4f}<extra></extra>"))
    fig.update_layout(xaxis_title="trial", yaxis_title="hypervolume (share of the box)", height=360)
    page.figure(fig)


def _latency_section(page: _Page, result: SearchResult, df: pd.DataFrame) -> None:
    from plotly.subplots import make_subplots

    page.section("Measured latency",
                 "Left: the distribution of the median latency of completed trials. Right: each trial's "
                 "median with the 95% confidence interval of the median (where recorded).")
    complete = df[df["state"] == "COMPLETE"].dropna(subset=["latency_ms"])
    if complete.empty:
        page.note("No completed trial has a measured latency.")
        return
    fig = make_subplots(rows=1, cols=2, column_widths=[0.4, 0.6],
                        subplot_titles=("median latency of completed trials", "per trial, with 95% CI"))
    fig.add_histogram(x=complete["latency_ms"], nbinsx=30, name="trials", marker_color="#1565c0",
                      showlegend=False, row=1, col=1)
    has_ci = complete[["latency_ci_low_ms", "latency_ci_high_ms"]].notna().all(axis=1)
    error = {"type": "data", "array": (complete["latency_ci_high_ms"] - complete["latency_ms"]).where(has_ci),
             "arrayminus": (complete["latency_ms"] - complete["latency_ci_low_ms"]).where(has_ci)}
    colours = complete["feasible"].map({True: "#1565c0", False: "#ef6c00"})
    fig.add_scatter(x=complete["trial"], y=complete["latency_ms"], mode="markers", error_y=error,
                    marker={"color": colours}, showlegend=False,
                    hovertemplate="trial %{x}: %{y:.3f} ms<extra></extra>", row=1, col=2)
    fig.add_vline(x=result.budget_ms, line_dash="dash", line_color="#2e7d32", row=1, col=1)
    fig.add_hline(y=result.budget_ms, line_dash="dash", line_color="#2e7d32", row=1, col=2,
                  annotation_text=f"budget {result.budget_ms:g} ms")
    fig.update_xaxes(title_text="latency (ms)", row=1, col=1)
    fig.update_yaxes(title_text="trials", row=1, col=1)
    fig.update_xaxes(title_text="trial", row=1, col=2)
    fig.update_yaxes(title_text="latency (ms)", row=1, col=2)
    fig.update_layout(height=400)
    page.figure(fig)
    if not has_ci.any():
        page.note("No confidence intervals are recorded for these trials.")
    noisy = int(complete["latency_noisy"].eq(True).sum())  # None (not recorded) is not noisy
    if noisy:
        page.note(f"{noisy} trial(s) are flagged latency_noisy: their timing processes disagreed by more "
                  "than 15%, so compare them with care.")


def _methods_section(page: _Page, df: pd.DataFrame, front: pd.DataFrame,
                     plans: dict[int, dict[str, dict[str, Any]]]) -> None:
    import plotly.express as px

    page.section("Methods chosen",
                 "How often each method was picked for a group: one count per group per trial, among completed "
                 "trials and among front members. The baseline (every group 'none') is the reference, not a "
                 "choice, so it is left out; the warm-start trials (uniform l1) are counted.")
    candidates = df[(df["state"] == "COMPLETE") & ~df["baseline"]]
    where = {"completed trials": candidates["trial"], "front members": front[~front["baseline"]]["trial"]}
    rows = [{"trials": label, "method": choice.get("method")}
            for label, numbers in where.items() for n in numbers if int(n) in plans
            for choice in plans[int(n)].values()]
    if not rows:
        page.note("No completed trial other than the baseline carries a plan, so there is nothing to count.")
        return
    counts = pd.DataFrame(rows).value_counts(["trials", "method"]).rename("count").reset_index()
    counts["share"] = counts["count"] / counts.groupby("trials")["count"].transform("sum")
    fig = px.bar(counts.sort_values("method"), x="method", y="share", color="trials", barmode="group",
                 text="count", hover_data=["count"], labels={"share": "share of group choices"})
    fig.update_layout(height=360, yaxis_tickformat=".0%")
    page.figure(fig)
    table = counts.pivot(index="method", columns="trials", values="count").fillna(0).astype(int)
    page.table(table.rename_axis(index=None, columns=None), index=True)
    _precision_table(page, df, front)


def _precision_table(page: _Page, df: pd.DataFrame, front: pd.DataFrame) -> None:
    """Which numeric precisions were tried and which reached the front; for quantized
    candidates, what quantization cost against their own float model."""
    complete = df[(df["state"] == "COMPLETE") & ~df["baseline"]].assign(
        precision=lambda d: d["precision"].fillna("float32"))
    if complete.empty:
        return
    on_front = complete["trial"].isin(front["trial"])
    lost = pd.to_numeric(complete["float_accuracy"], errors="coerce") - complete["accuracy"]
    table = complete.assign(on_front=on_front, lost=lost).groupby("precision").agg(
        trials=("trial", "size"), front_members=("on_front", "sum"),
        median_points_lost_to_quantization=("lost", "median")).reset_index()
    page.parts.append("<h3>Numeric precision</h3>")
    page.note("Points lost to quantization: the float model's accuracy less the quantized model's own, on the "
              "same validation subset (empty for float32).")
    page.table(table.round(3))
