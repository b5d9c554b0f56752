"""The rpc runner against real TVM RPC trackers and device servers.

Two devices: this machine's own Python as a device server (fast; checks the protocol),
and an emulated Cortex-A72 board, an arm64 Debian root file system under qemu-user
(``autoprune/testing/arm_device.py``; slow). Nothing is mocked: the tracker, the
servers, the uploads, ONNX Runtime and TVM on the device are the real ones.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("tvm", reason="the [tvm] extra is not installed")

from conftest import REPO, run_cli  # noqa: E402

import autoprune  # noqa: E402
from autoprune.errors import ConfigError, DeviceError  # noqa: E402
from autoprune.profiles import load_profile  # noqa: E402
from autoprune.testing import arm_device  # noqa: E402
from autoprune.testing.runner_contract import RunnerCase, RunnerContract  # noqa: E402

HOST_KEY = "host-x86"


def host_profile(folder: Path, tracker: str, **measurement) -> Path:
    """This machine's ONNX Runtime, timed through a tracker like a board."""
    quick = {"sessions": 2, "max_seconds": 0.3, "min_repeats": 10, "warmup": 3, **measurement}
    path = folder / "host-rpc.yaml"
    path.write_text(
        "version: 1\ndescription: this machine over TVM RPC (tests)\nbackend: onnxruntime\nrunner: rpc\n"
        f"rpc: {{key: {HOST_KEY}, tracker: '{tracker}', retries: 4, backoff_s: 5}}\n"
        f"measurement: {quick}\n".replace("'", "")
    )
    return path


@pytest.fixture(scope="module")
def host_device(tmp_path_factory):
    device = arm_device.DeviceProcesses(sys.executable, HOST_KEY, tmp_path_factory.mktemp("host-device"))
    with arm_device.running(device):
        yield device


class TestRpcRunner(RunnerContract):
    """The runner contract through a real tracker and this machine's device server."""

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls, host_device, tmp_path_factory):
        folder = tmp_path_factory.mktemp("rpc-runner")
        return RunnerCase.digits(host_profile(folder, host_device.tracker_address), folder)


def test_board_profiles_parse(monkeypatch):
    for board, core in (("rpi4", "a72"), ("rpi5", "a76")):
        for backend in ("ort", "tvm"):
            p = load_profile(f"{board}-{backend}")
            assert p.runner == "rpc" and p.rpc.key == board and p.threads == 4
            if backend == "tvm":
                assert p.tvm.target["mcpu"] == f"cortex-{core}" and p.tvm.cross_compiler
    generic = load_profile("aarch64-tvm")
    assert "mcpu" not in generic.tvm.target and generic.tvm.target["mtriple"] == "aarch64-linux-gnu"
    assert load_profile("aarch64-ort").rpc.resolved() == ("127.0.0.1", 9190, "aarch64")
    # the environment points a profile at another farm without changing its identity
    p = load_profile("rpi4-ort")
    before = p.hash
    monkeypatch.setenv("AUTOPRUNE_TRACKER", "farm.example:9000")
    monkeypatch.setenv("AUTOPRUNE_DEVICE_KEY", "rpi4-lab2")
    assert p.rpc.resolved() == ("farm.example", 9000, "rpi4-lab2")
    assert load_profile("rpi4-ort").hash == before


def test_bad_rpc_sections_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndescription: x\nbackend: onnxruntime\nrunner: rpc\n")
    with pytest.raises(ConfigError, match="runner `rpc` needs an `rpc:` section"):
        load_profile(bad)
    bad.write_text("version: 1\ndescription: x\nbackend: onnxruntime\nrunner: rpc\nrpc: {key: k, tracker: nope}\n")
    with pytest.raises(ConfigError, match="must be HOST:PORT"):
        load_profile(bad)


def test_unreachable_tracker_stops_the_search_at_set_up(tmp_path):
    env_port = arm_device.free_port()  # nothing listens there
    os.environ["AUTOPRUNE_TRACKER"] = f"127.0.0.1:{env_port}"
    try:
        proc = run_cli("search", "--no-finalize", "--task", "digits", "--device", "rpi4-ort", "--latency-budget-ms", "1",
                       "--trials", "2", "--results-dir", str(tmp_path / "results"))
        check = run_cli("devices", "check", "rpi4-ort")
    finally:
        del os.environ["AUTOPRUNE_TRACKER"]
    for p in (proc, check):
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        assert f"127.0.0.1:{env_port} cannot be reached" in p.stderr
        assert "autoprune device-server --tracker" in p.stderr
    assert not (tmp_path / "results").exists()  # nothing written before the inputs are checked


def test_devices_check_needs_a_name():
    proc = run_cli("devices", "check")
    assert proc.returncode == 2 and "needs a profile name" in proc.stderr and "Traceback" not in proc.stderr


def test_search_times_every_candidate_on_the_device_server(host_device, tmp_path):
    profile = host_profile(tmp_path, host_device.tracker_address)
    result = autoprune.search(finalize=False, task="digits", device=str(profile), latency_budget_ms=1.0, n_trials=3,
                              results_dir=tmp_path / "results", progress=False)
    trials = result.trials
    assert (trials["state"] == "COMPLETE").all(), trials[["state", "fail_reason"]]
    assert (trials["latency_ms"] > 0).all() and (trials["latency_sessions"] == 2).all()
    # every timing session went through the server: it logs one "start serving" per session
    sessions = (host_device.log_dir / "server.log").read_text().count("start serving")
    assert sessions >= 2 * trials["latency_ms"].nunique()


def test_no_device_under_the_key_is_reported(host_device, tmp_path):
    text = host_profile(tmp_path, host_device.tracker_address).read_text().replace(HOST_KEY, "no-such-board")
    (tmp_path / "other.yaml").write_text(text)
    with pytest.raises(DeviceError, match=r"no device is registered under key 'no-such-board'.*device-server"):
        autoprune.search(finalize=False, task="digits", device=str(tmp_path / "other.yaml"), latency_budget_ms=1.0, n_trials=2,
                         results_dir=tmp_path / "results", progress=False)


def test_one_search_times_every_candidate_on_two_devices(host_device, tmp_path):
    other = host_profile(tmp_path, host_device.tracker_address)  # profile name: host-rpc
    result = autoprune.search(finalize=False, task="digits", device="x86-ort", latency_budget_ms=1.0, also={str(other): 0.5},
                              n_trials=3, results_dir=tmp_path / "results", progress=False)
    trials = result.trials
    assert result.identity["study"] == "digits-x86-ort+host-rpc"
    assert [d.name.lower() for d in result.study.directions] == ["maximize", "minimize", "minimize", "minimize"]
    assert (trials["state"] == "COMPLETE").all(), trials[["state", "fail_reason"]]
    assert (trials["latency_ms@host-rpc"] > 0).all() and (trials["latency_ms"] > 0).all()
    for t in result.study.trials:  # the objective value is the measured figure on that device
        assert t.values[3] == pytest.approx(result.record(t.number).devices["host-rpc"]["latency_ms"])
    # feasible on both budgets, or not on the front
    assert (result.front["latency_ms@host-rpc"] <= 0.5).all() and (result.front["latency_ms"] <= 1.0).all()
    proc = run_cli("front", str(result.study_dir))
    assert proc.returncode == 0, proc.stderr
    assert "ms on host-rpc" in proc.stdout and "0.5 ms on host-rpc" in proc.stdout


def test_device_and_budget_counts_must_match(tmp_path):
    proc = run_cli("search", "--no-finalize", "--task", "digits", "--device", "x86-ort", "--device", "rpi4-ort", "--device",
                   "rpi5-ort", "--latency-budget-ms", "1", "--latency-budget-ms", "2", "--trials", "2",
                   "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "3 --device but 2 --latency-budget-ms" in proc.stderr
    proc = run_cli("search", "--no-finalize", "--task", "digits", "--device", "x86-ort", "--device", "x86-ort",
                   "--latency-budget-ms", "1", "--trials", "2", "--results-dir", str(tmp_path / "r"))
    assert proc.returncode == 2 and "named twice" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_crash_on_the_device_fails_one_trial_and_the_server_comes_back(tmp_path, monkeypatch):
    """A session that dies of SIGSEGV wedges TVM's server; the supervisor restarts it."""
    # the device server listens for the fault from its start (a client cannot set one)
    monkeypatch.setenv("AUTOPRUNE_FAULT", "segv@device#1")
    device = arm_device.DeviceProcesses(sys.executable, HOST_KEY, tmp_path / "logs")
    with arm_device.running(device):
        profile = host_profile(tmp_path, device.tracker_address)
        result = autoprune.search(finalize=False, task="digits", device=str(profile), latency_budget_ms=1.0, n_trials=3,
                                  results_dir=tmp_path / "results", progress=False, warm_start=False)
        log = (device.log_dir / "server.log").read_text()
    trials = result.trials.set_index("trial")
    assert trials.loc[1, "state"] == "FAIL"
    reason = trials.loc[1, "fail_reason"]
    assert "device" in reason, reason
    if "was lost during the session" in reason:  # the wedged server had left the tracker already
        assert trials.loc[1, "fail_stage"] == "interrupted"  # not counted; its plan ran again
        retries = [r for r in result.records if r.retry_of == 1]
        assert len(retries) == 1 and retries[0].complete
    else:  # the check ran before it left: the candidate is blamed
        assert trials.loc[1, "fail_stage"] == "measure"
    assert trials.loc[2, "state"] == "COMPLETE", trials.loc[2, "fail_reason"]
    # the wedged server was replaced by the supervisor, or its listening loop restarted at once
    assert "dropped off the tracker" in log or "listening again" in log, log[-2000:]


# --- the emulated Cortex-A72 board -------------------------------------------------

def _emulation_missing() -> str | None:
    tools = [t for t in ("qemu-aarch64-static", "debootstrap", "aarch64-linux-gnu-gcc") if shutil.which(t) is None]
    if tools:
        return f"needs {', '.join(tools)} (scripts/bootstrap.sh installs them)"
    ready = (arm_device.cache_root() / "rootfs" / ".autoprune-ready").is_file()
    if not ready and os.geteuid() != 0:
        return "building the emulated device's root file system needs root (debootstrap)"
    return None


emulated = pytest.mark.skipif(_emulation_missing() is not None, reason=str(_emulation_missing()))


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    start = time.monotonic()
    device = arm_device.emulated_device(tmp_path_factory.mktemp("emulated-a72"))
    built = time.monotonic() - start
    with arm_device.running(device):
        # the set-up time is part of what CI reports: printed (-s) and kept beside the cache
        line = (f"{time.strftime('%Y-%m-%d %H:%M:%S')} root file system {built:.0f} s, start to registered "
                f"{time.monotonic() - start - built:.0f} s")
        print(f"\nemulated device: {line}")
        with open(arm_device.cache_root() / "setup-times.log", "a") as log:
            log.write(line + "\n")
        old = os.environ.get("AUTOPRUNE_TRACKER")
        os.environ["AUTOPRUNE_TRACKER"] = device.tracker_address  # the profiles' tracker, moved
        try:
            yield device
        finally:
            if old is None:
                os.environ.pop("AUTOPRUNE_TRACKER", None)
            else:
                os.environ["AUTOPRUNE_TRACKER"] = old


@pytest.mark.slow
@emulated
class TestEmulatedBoardRunner(RunnerContract):
    """The runner contract on the emulated Cortex-A72 board (ONNX Runtime on aarch64)."""

    @pytest.fixture(scope="class")
    @classmethod
    def case(cls, board, tmp_path_factory):
        return RunnerCase.digits("emulated-a72-ort", tmp_path_factory.mktemp("board-runner"))


@pytest.mark.slow
@emulated
def test_devices_check_reports_the_emulated_board(board):
    proc = run_cli("devices", "check", "emulated-a72-ort", timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "aarch64" in out and "Cortex-A72" in out
    isa = next(line for line in out.splitlines() if "│ isa" in line)
    assert "asimd" in isa and "sve" not in isa and "asimddp" not in isa  # QEMU_CPU=cortex-a72: no SVE/dotprod
    import onnxruntime

    # the board runs the host's pinned onnxruntime (arm_device installs the same version)
    assert "onnxruntime" in out and onnxruntime.__version__ in out and "ms median" in out


@pytest.mark.slow
@emulated
@pytest.mark.parametrize("backend", ["ort", "tvm"])
def test_search_on_the_emulated_board(board, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPRUNE_CACHE", str(tmp_path / "cache"))  # a fresh tuning database: tuning happens
    result = autoprune.search(finalize=False, task="digits", device=f"emulated-a72-{backend}", latency_budget_ms=50.0,
                              n_trials=3, results_dir=tmp_path / "results", progress=False)
    trials = result.trials
    assert (trials["state"] == "COMPLETE").all(), trials[["state", "fail_reason"]]
    # sane, not fast: emulation runs this model in ~1-20 ms, and never faster than x86
    base = trials.set_index("trial").loc[0]
    assert 0.3 < base["latency_ms"] < 200, base["latency_ms"]
    assert result.front is not None and len(result.front) >= 1
    if backend == "ort":  # INT8 through ONNX Runtime's aarch64 integer kernels (functional: emulated timings)
        int8 = trials[trials["precision"] == "int8"]
        assert len(int8) >= 1 and (int8["state"] == "COMPLETE").all()
    else:  # TVM profiles offer float32 only (its Relax import runs QDQ as float ops)
        assert (trials["precision"] == "float32").all()
    if backend == "tvm":
        built = trials["build_target"].dropna()  # trials whose latency came from the cache built nothing
        assert len(built) >= 1 and built.str.contains("aarch64").all()
        # MetaSchedule measured schedules on the board (cross-compiled here) and the
        # candidates were built with them
        builds = [result.record(int(n)).build for n in built.index.map(lambda i: trials.loc[i, "trial"])]
        tuned = [b for b in builds if b.get("tasks_tuned")]
        assert tuned, builds
        assert all(b["tuned_on"] == "board (rpc)" for b in tuned)
        assert sum(b["tasks_tuned"] + b["tasks_reused"] for b in builds) > 0


@pytest.mark.slow
@emulated
def test_killing_the_device_server_mid_search_fails_a_trial_and_the_search_goes_on(board, tmp_path):
    """The board loses power while a candidate is being timed, then comes back."""
    # sessions that always time for 3 s (a CI target no run meets), so the plug is pulled
    # in the middle of one; with the profile's own target a steady session ends in ~1 s
    text = (REPO / "device_profiles" / "emulated-a72-ort.yaml").read_text()
    assert ("max_seconds: 1.0" in text and "target_ci: 0.05" in text and "timeout_s: 180" in text
            and "  sessions: 1 " in text)
    profile = tmp_path / "emulated-a72-ort-long.yaml"
    # a session here takes about 7 s; a shorter timeout bounds what a session wedged by
    # the restart costs (one CI run waited out the whole 180 + 60 s on one)
    profile.write_text(text.replace("max_seconds: 1.0", "max_seconds: 3.0").replace("target_ci: 0.05",
                                                                                    "target_ci: 0.00001")
                       .replace("timeout_s: 180", "timeout_s: 45"))
    log = board.log_dir / "server.log"
    before = log.read_text().count("start serving")
    killed: dict[str, float] = {}

    def pull_the_plug():
        # a trial's session starts after the budget check's three models (the unpruned
        # one, the most-pruned at float32 and at INT8; one session each): wait for the 4th
        # session of this search, let it upload and start timing, then kill
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if log.read_text().count("start serving") - before >= 4:
                time.sleep(1.5)
                board.kill_server()
                killed["at"] = time.time()
                board.start_server()
                killed["back"] = time.time()
                return
            time.sleep(0.2)

    thread = threading.Thread(target=pull_the_plug, daemon=True)
    thread.start()
    result = autoprune.search(finalize=False, task="digits", device=str(profile), latency_budget_ms=50.0, n_trials=3,
                              results_dir=tmp_path / "results", progress=False)
    thread.join(timeout=60)
    assert "at" in killed, "the search never reached the 4th timing session"
    trials = result.trials
    assert trials["state"].isin(["COMPLETE", "FAIL"]).all()
    failed = trials[trials["state"] == "FAIL"]
    assert len(failed) >= 1, trials[["trial", "state", "fail_reason"]]
    lost = failed[failed["fail_reason"].str.contains("was lost during the session")]
    assert len(lost) >= 1, failed["fail_reason"].tolist()
    # a lost baseline runs again before the warm start, which is queued again after it
    requeued = failed.drop(index=lost.index)
    assert requeued["fail_reason"].str.contains("queued again after the retry of the baseline").all(), \
        failed["fail_reason"].tolist()
    # the board failed, not the candidate: not counted, and the same plan ran again
    assert (failed["fail_stage"] == "interrupted").all()
    assert (trials["fail_stage"] != "interrupted").sum() == 3
    records = {r.number: r for r in result.records}
    for number in failed["trial"]:
        retries = [r for r in records.values() if r.retry_of == number]
        assert len(retries) == 1 and retries[0].params == records[number].retry_params
    # trials after the failure completed on the restarted server, the baseline among them
    later = trials[trials["trial"] > failed["trial"].max()]
    assert (later["state"] == "COMPLETE").any(), trials[["trial", "state", "fail_reason"]]
    assert result.baseline is not None


def test_a_client_cannot_reach_files_outside_its_session(host_device, tmp_path):
    """A device server serves only its session's own folder (TVM's resolves absolute
    names and `..` anywhere on the board)."""
    from tvm import rpc

    host, port = host_device.tracker_address.rsplit(":", 1)
    remote = rpc.connect_tracker(host, int(port)).request(HOST_KEY, priority=1, session_timeout=60)
    secret = tmp_path / "secret.txt"
    secret.write_text("board secret")
    for name in (str(secret), "../" * 12 + str(secret).lstrip("/")):
        with pytest.raises(Exception, match="outside this session's folder"):  # noqa: PT011 - TVM wraps it
            remote.download(name)
        with pytest.raises(Exception, match="outside this session's folder"):  # noqa: PT011
            remote.upload(bytearray(b"planted"), name)
    assert secret.read_text() == "board secret"
    remote.upload(bytearray(b"inside"), "mine.bin")  # the session's own folder still works
    assert bytes(remote.download("mine.bin")) == b"inside"


def test_a_session_cannot_fill_the_boards_disk(tmp_path, monkeypatch):
    """Uploads are bounded per session (device-server --max-upload-mb); the board goes on."""
    from tvm import rpc

    monkeypatch.setenv("AUTOPRUNE_MAX_UPLOAD_MB", "1")  # what --max-upload-mb 1 sets for the server
    device = arm_device.DeviceProcesses(sys.executable, HOST_KEY, tmp_path / "logs")
    with arm_device.running(device):
        host, port = device.tracker_address.rsplit(":", 1)
        remote = rpc.connect_tracker(host, int(port)).request(HOST_KEY, priority=1, session_timeout=60)
        remote.upload(bytearray(600 << 10), "first.bin")
        remote.upload(bytearray(300 << 10), "first.bin")  # replacing a file counts its new size only
        with pytest.raises(Exception, match="refused: this session's uploads would reach 1 MiB"):  # noqa: PT011
            remote.upload(bytearray(800 << 10), "second.bin")
        assert len(remote.download("first.bin")) == 300 << 10


def test_replies_not_signed_with_the_hosts_token_are_refused(tmp_path, monkeypatch):
    """A board registered under the key by someone without the shared token cannot feed
    latencies into a search (its replies are not signed for the request)."""
    from autoprune.runners import ResultKind

    monkeypatch.delenv("AUTOPRUNE_TRACKER", raising=False)  # the emulated board's fixture may have set it
    monkeypatch.setenv("AUTOPRUNE_DEVICE_TOKEN", "the-boards-token-0123456789")
    device = arm_device.DeviceProcesses(sys.executable, HOST_KEY, tmp_path / "logs")  # starts with the token
    with arm_device.running(device):
        path = host_profile(tmp_path, device.tracker_address)
        # short back-off: the refused case is retried like an unreachable board
        path.write_text(path.read_text().replace("retries: 4, backoff_s: 5", "retries: 1, backoff_s: 1"))
        case = RunnerCase.digits(path, tmp_path)
        good = case.runner.measure(case.artifact, case.profile)
        assert good.ok, good.error
        monkeypatch.setenv("AUTOPRUNE_DEVICE_TOKEN", "this-host-has-another-token")
        refused = case.runner.measure(case.artifact, case.profile)
    assert refused.kind is ResultKind.UNREACHABLE and refused.measurement is None
    assert "not signed with this host's token" in refused.error


def test_a_reply_counts_only_for_the_request_it_answers(tmp_path, monkeypatch):
    """Issue 27.2 and 27.3, as a rogue board registered under the key would try it: relay
    the host's nonce (and its signed request) to the honest board with another model, or
    answer with a bare result. The honest board signs nothing for a request that is not
    the host's, and the host accepts only a reply signed over its own request."""
    import json

    import onnx
    from tvm import rpc

    from autoprune.runners import ResultKind
    from autoprune._config import sha256_file
    from autoprune.runners._protocol import open_signed, request_text, sign_request

    token = "the-shared-token-0123456789abcdef"
    monkeypatch.delenv("AUTOPRUNE_TRACKER", raising=False)
    monkeypatch.setenv("AUTOPRUNE_DEVICE_TOKEN", token)
    device = arm_device.DeviceProcesses(sys.executable, HOST_KEY, tmp_path / "logs")  # the honest board
    with arm_device.running(device):
        case = RunnerCase.digits(host_profile(tmp_path, device.tracker_address), tmp_path / "digits")
        artifact = Path(case.artifact)
        other = tmp_path / "other" / artifact.name  # another model that runs just as well
        other.parent.mkdir()
        model = onnx.load(str(artifact))
        weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        weight.raw_data = bytes(len(weight.raw_data))
        onnx.save(model, str(other))
        profile_json = json.dumps(case.profile.to_dict())
        nonce = "0f" * 16
        sent = request_text(nonce, {artifact.name: sha256_file(artifact)}, profile_json, "trial 1")
        mac = sign_request(token, sent)

        host, port = device.tracker_address.rsplit(":", 1)
        remote = rpc.connect_tracker(host, int(port)).request(HOST_KEY, priority=1, session_timeout=60)
        time_fn = remote.get_function("autoprune.time")
        # the rogue board relays the host's request with its own model
        remote.upload(str(other), artifact.name)
        relayed = time_fn(artifact.name, profile_json, "trial 1", nonce, mac)
        assert json.loads(relayed)["signature"] is None  # the board refused to sign it
        assert not open_signed(token, sent, relayed).ok
        # ... or with no signed request at all: nothing signed
        assert json.loads(time_fn(artifact.name, profile_json, "trial 1", nonce))["signature"] is None
        # the host's own request is timed and its reply accepted
        remote.upload(str(artifact), artifact.name)
        honest = time_fn(artifact.name, profile_json, "trial 1", nonce, mac)
        accepted = open_signed(token, sent, honest)
        assert accepted.ok and accepted.measurement.median_ms > 0, accepted.error
        # that reply counts for no other request: another nonce, another tag
        for other_request in (request_text("1e" * 16, {artifact.name: sha256_file(artifact)}, profile_json,
                                           "trial 1"),
                              request_text(nonce, {artifact.name: sha256_file(artifact)}, profile_json, "trial 2")):
            assert not open_signed(token, other_request, honest).ok
    # a bare result (no signature wrapper) is refused when the host has a token
    bare = open_signed(token, sent, json.loads(honest)["result"])
    assert bare.kind is ResultKind.UNREACHABLE and "not signed at all" in bare.error
    assert open_signed(None, sent, json.loads(honest)["result"]).ok  # without a token there is nothing to check


def test_a_client_cannot_load_code_through_tvms_global_functions(host_device, tmp_path):
    """Issue 27.4: TVM's global functions that load a library from any path (running its
    constructor) answer a client of `autoprune device-server` with a refusal; the
    server's own functions (timing, loading a module from the session's folder) use them."""
    import subprocess

    from tvm import rpc

    marker = tmp_path / "constructor-ran"
    source = tmp_path / "evil.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void run(void) '
                      f'{{ FILE *f = fopen("{marker}", "w"); if (f) fclose(f); }}\n')
    library = tmp_path / "evil.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    host, port = host_device.tracker_address.rsplit(":", 1)
    remote = rpc.connect_tracker(host, int(port)).request(HOST_KEY, priority=1, session_timeout=60)
    for name, args in (("ffi.ModuleLoadFromFile", (str(library), "so")),
                       ("ffi.Module.load_from_file.so", (str(library), "so"))):
        with pytest.raises(Exception, match="refused"):  # noqa: PT011 - TVM wraps the server's error
            remote.get_function(name)(*args)
    with pytest.raises(Exception, match="outside this session's folder"):  # noqa: PT011
        remote.load_module(str(library))  # TVM's own loader, by an absolute name
    assert not marker.exists(), "a library's constructor ran on the board"
    # what MetaSchedule's runner does to tune on the board still works: a module uploaded
    # to the session is loaded from there (a client can run code it uploads: the README says so)
    remote.upload(str(library), "evil.so")
    remote.load_module("evil.so")
    assert marker.exists()


def test_a_board_survives_idle_malformed_and_huge_handshakes(host_device, tmp_path, monkeypatch):
    """Issue 27.5, as an attacker's client: a connection that says nothing (it held the
    board), 8 bytes with a negative key length (they crashed its accept loop) and a 2 GB
    length header (memory grew by what was streamed). The board goes on timing."""
    import socket
    import struct

    from tvm.rpc.base import RPC_MAGIC

    from autoprune.runners.rpc import tracker_servers

    monkeypatch.delenv("AUTOPRUNE_TRACKER", raising=False)  # the emulated board's fixture may have set it
    host, port = host_device.tracker_address.rsplit(":", 1)
    server = next(s for s in tracker_servers(host, int(port)) if s["key"] == f"server:{HOST_KEY}")
    address = ("127.0.0.1", int(server["addr"][1]))
    idle = socket.create_connection(address, timeout=60)
    negative = socket.create_connection(address, timeout=60)
    negative.sendall(struct.pack("<ii", RPC_MAGIC, -8))
    huge = socket.create_connection(address, timeout=60)  # (a send the board never reads ends in 60 s)
    huge.sendall(struct.pack("<ii", RPC_MAGIC, (1 << 31) - 1))
    try:
        huge.sendall(b"k" * (64 << 20))  # the board must not keep what it is sent
    except OSError:
        pass  # refused and closed: what should happen
    path = host_profile(tmp_path, host_device.tracker_address)
    case = RunnerCase.digits(path, tmp_path)
    started = time.monotonic()
    # the refused connections never reach TVM's loop, so the board stays on the tracker
    assert any(s["key"] == f"server:{HOST_KEY}" for s in tracker_servers(host, int(port)))
    result = case.runner.measure(case.artifact, case.profile, tag="after the attack")
    assert result.ok, result.error
    assert time.monotonic() - started < 120
    for conn in (idle, negative, huge):
        conn.close()
