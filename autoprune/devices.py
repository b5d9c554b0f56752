"""``autoprune devices check NAME``: can this profile's device be reached, what is it, how steady.

The check does what a search does to one candidate, on a reference model (the
``digits`` task's network, unpruned, random weights): export, build with the profile's
backend, time with its runner under its measurement protocol. What it reports:

- for an ``rpc`` profile: the tracker and key, and whether a device is registered;
- what the device is (CPU, ISA features as the kernel reports them, cores) and its
  runtime versions (asked over the RPC session itself, so it is the board that answers);
- the reference model's latency with its CV, 95% CI and the spread between sessions,
  and a verdict on whether figures from this device can be trusted to a few per cent.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoprune.trials import TrialFailure

STEADY = 0.10  # CI half-width and session spread both below this: "steady"


@dataclass
class DeviceReport:
    profile: str
    runner: str
    where: str
    info: dict[str, Any] = field(default_factory=dict)
    reference: str = ""
    measurement: Any = None  # measure.Measurement
    error: str | None = None
    seconds: float = 0.0

    @property
    def verdict(self) -> str:
        if self.error:
            return f"[red]timing the reference model failed:[/] {self.error}"
        m = self.measurement
        if m is None:
            return ""
        resolution = max(m.ci_rel, m.session_spread)
        if m.noisy or resolution > STEADY:
            return (f"[yellow]noisy[/]: CV {m.cv:.1%}, CI ±{m.ci_rel:.1%}, sessions {m.session_spread:.1%} apart. "
                    f"Latency differences below ~{resolution:.0%} are not real here; stop other work on the "
                    "device (or accept that only large speed-ups can be told apart).")
        return f"[green]steady[/]: differences above ~{resolution:.1%} are measurable."

    def rows(self) -> list[tuple[str, str]]:
        i = self.info
        rows = [("profile", self.profile), ("runner", self.runner), ("where", self.where),
                ("machine", f"{i.get('machine')} ({i.get('cores')} cores)"), ("cpu", str(i.get("cpu"))),
                ("isa", " ".join(i.get("isa") or []) or "-"), ("python", str(i.get("python")))]
        rows += [(name, str(i.get(name) or "not installed")) for name in ("tvm", "onnxruntime", "numpy", "autoprune")]
        rows.append(("reference model", self.reference))
        m = self.measurement
        if m is not None:
            rows += [("latency", f"{m.median_ms:.3f} ms median (95% CI {m.ci_low_ms:.3f}-{m.ci_high_ms:.3f}), "
                                 f"{m.runs} runs in {m.sessions} sessions"),
                     ("noise", f"CV {m.cv:.1%}, CI ±{m.ci_rel:.1%}, session spread {m.session_spread:.1%}")]
        rows.append(("check took", f"{self.seconds:.1f} s"))
        return rows


def check_device(name: str, log: Callable[[str], None] = print) -> DeviceReport:
    """Reach the device, ask what it is, and time the reference model on it.

    Raises:
        ConfigError: unknown profile. BackendError: the backend is missing here.
        DeviceError: the device cannot be reached (the message says how to start one).
    """
    from autoprune.device import Device

    start = time.monotonic()
    device = Device.open(name, fresh=True)
    profile = device.profile
    log("asking the device what it is")
    where, info = device.describe()
    report = DeviceReport(profile.name, profile.runner, where, info)

    log("exporting and building the reference model (the digits task's network)")
    from autoprune.export import to_onnx
    from autoprune.tasks import load_task

    task = load_task("digits")
    with tempfile.TemporaryDirectory(prefix="autoprune-check-") as tmp:
        onnx = to_onnx(task.model, task.example_input(profile.batch_size), Path(tmp) / "model.onnx", 1e-3)
        report.reference = f"digits network, {onnx.params:,} params, {onnx.macs:,} MACs"
        log(f"timing it: {profile.measurement.sessions} sessions")
        try:
            report.measurement = device.measure(onnx, Path(tmp), tag="devices check").measurement
        except TrialFailure as exc:
            report.error = f"{exc.stage.value}: {exc.reason}"
    report.seconds = time.monotonic() - start
    return report
