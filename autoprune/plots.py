"""Pareto plots: the task's metric against measured latency, budget line and baseline marked."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from autoprune._config import atomic_write_bytes, atomic_write_text
from autoprune.evaluate import MetricInfo


def pareto_plots(trials: pd.DataFrame, front: pd.DataFrame, baseline: pd.Series | None, budget_ms: float,
                 device: str, study: str, out_dir: Path, metric: MetricInfo | None = None) -> None:
    """Write ``pareto.png`` (matplotlib) and ``pareto.html`` (plotly, self-contained) into ``out_dir``."""
    done = trials[trials["state"] == "COMPLETE"]
    # the front line at search-time figures (one fidelity for every point); finalized
    # members' final figures are marked apart, each linked to its search-time point
    on_front = done[done["trial"].isin(set(front["trial"]) if not front.empty else set())]
    final = front[front["fidelity"].astype(str).str.startswith("final")] if "fidelity" in front else front.iloc[0:0]
    metric = metric or MetricInfo()
    _png(done, on_front, final, baseline, budget_ms, device, study, Path(out_dir), metric)
    _html(done, on_front, final, baseline, budget_ms, study, Path(out_dir), metric)


def _png(df, front, final, base, budget_ms: float, device: str, study: str, out_dir: Path,
         metric: MetricInfo) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    other = df[~df["trial"].isin(front["trial"])]
    ax.scatter(other["latency_ms"], other["accuracy"], s=18, c="0.65", label="other trials")
    f = front.sort_values("latency_ms")
    ax.plot(f["latency_ms"], f["accuracy"], "o-", c="tab:blue", ms=6, label="Pareto front (feasible)")
    for _, r in f.iterrows():
        ax.annotate(str(int(r["trial"])), (r["latency_ms"], r["accuracy"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    for _, r in final.iterrows():
        ax.annotate("", (r["latency_ms"], r["accuracy"]), (r["search_latency_ms"], r["search_accuracy"]),
                    arrowprops={"arrowstyle": "->", "color": "tab:purple", "alpha": 0.6})
    if not final.empty:
        ax.scatter(final["latency_ms"], final["accuracy"], marker="D", s=30, c="tab:purple",
                   zorder=4, label="finalized (full fine-tune, all validation data)")
    if base is not None:
        ax.scatter([base["latency_ms"]], [base["accuracy"]], marker="*", s=160, c="tab:red",
                   zorder=5, label=f"baseline ({base['latency_ms']:.3f} ms)")
    ax.axvline(budget_ms, ls="--", c="tab:green", label=f"budget {budget_ms:g} ms")
    ax.set_xlabel(f"measured latency, median (ms) on {device}")
    ax.set_ylabel(f"validation {metric.label()}, {metric.direction}")
    ax.set_title(f"{study}: {metric.name} vs latency (grey, line: search-time figures)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png")
    plt.close(fig)
    atomic_write_bytes(out_dir / "pareto.png", png.getvalue())


def _html(df, front, final, base, budget_ms: float, study: str, out_dir: Path, metric: MetricInfo) -> None:
    import plotly.graph_objects as go

    hover = (f"trial %{{customdata[0]}}<br>{metric.name} %{{y:.2f}}{metric.unit}<br>latency %{{x:.3f}} ms<br>"
             "size %{customdata[1]:.3f} MB")
    fig = go.Figure()
    fig.add_scatter(x=df["latency_ms"], y=df["accuracy"], mode="markers", name="trials",
                    marker={"color": "lightgray"}, customdata=df[["trial", "size_mb"]], hovertemplate=hover)
    f = front.sort_values("latency_ms")
    fig.add_scatter(x=f["latency_ms"], y=f["accuracy"], mode="lines+markers", name="Pareto front",
                    customdata=f[["trial", "size_mb"]], hovertemplate=hover)
    if not final.empty:
        fig.add_scatter(x=final["latency_ms"], y=final["accuracy"], mode="markers", name="finalized",
                        marker={"symbol": "diamond", "color": "purple"}, customdata=final[["trial", "size_mb"]],
                        hovertemplate=hover)
    if base is not None:
        fig.add_scatter(x=[base["latency_ms"]], y=[base["accuracy"]], mode="markers", name="baseline",
                        marker={"symbol": "star", "size": 14, "color": "red"})
    fig.add_vline(x=budget_ms, line_dash="dash", line_color="green", annotation_text=f"budget {budget_ms:g} ms")
    fig.update_layout(title=f"{study}: {metric.name} vs measured latency",
                      xaxis_title="latency, median (ms)", yaxis_title=f"validation {metric.label()}, {metric.direction}")
    atomic_write_text(out_dir / "pareto.html", fig.to_html(include_plotlyjs=True, full_html=True))
