"""An emulated aarch64 board on this x86 machine, for testing the rpc runner end to end.

The board is an arm64 Debian (bookworm) root file system whose Python runs under
qemu-user (``qemu-aarch64-static -L ROOTFS``, no chroot, no binfmt_misc). Inside it run
the real TVM runtime, onnxruntime and autoprune's device server; a real TVM RPC tracker
runs on the host. Everything binds 127.0.0.1.

Building the root file system (once; cached in ``$AUTOPRUNE_DEVICE_CACHE``, default
``~/.cache/autoprune/arm64-device``, outside the repository):

1. ``debootstrap --foreign`` downloads and unpacks Debian's minimal arm64 base with
   python3. The second stage (5 min of dpkg under emulation) is skipped: the packages
   are unpacked with ``dpkg-deb -x`` instead, which is all a Python interpreter needs.
2. The host's pip installs the aarch64 wheels (TVM, its pinned tvm-ffi, onnxruntime,
   numpy, ...) into ``/opt/site`` with ``--platform``: no pip runs under emulation.
3. A fake ``/proc/cpuinfo`` (a Cortex-A72's) sits in the tree: qemu-user shows the
   guest the host's x86 file, and onnxruntime's cpuinfo library crashes on it.
   ``-L`` makes the guest read the tree's copy. The real ISA comes from qemu
   (``QEMU_CPU=cortex-a72``: no SVE, no dot product, like the board).

Needs root (debootstrap) and Debian's ``qemu-user-static`` and ``debootstrap``;
``scripts/bootstrap.sh`` installs both. Emulated latencies say nothing about a real
board: emulation is 20-200x slower than the host and jitters by about 30%.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

SUITE = "bookworm"
QEMU = "qemu-aarch64-static"
QEMU_CPU = "cortex-a72"
KEY = "emulated-a72"
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64",
                   "manylinux_2_28_aarch64")
# What the board needs (README, "Remote devices"); the versions follow the host's, so
# the two ends of the RPC session speak the same protocol.
PACKAGES = ("apache-tvm", "apache-tvm-ffi", "onnxruntime", "numpy", "ml_dtypes", "tornado", "psutil",
            "cloudpickle", "typing_extensions", "pyyaml", "rich")
# A Cortex-A72's /proc/cpuinfo, one block per emulated core
CPUINFO = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
           "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
           "CPU revision\t: 3\n\n")


class EmulationUnavailable(RuntimeError):
    """This machine cannot build or run the emulated device; the message says why."""


def cache_root() -> Path:
    default = Path.home() / ".cache" / "autoprune" / "arm64-device"
    return Path(os.environ.get("AUTOPRUNE_DEVICE_CACHE", default))


def _pins() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in PACKAGES:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _mirror() -> str:
    """The Debian mirror this machine's apt uses (arm64 packages live on the same one)."""
    for source in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")):
        for line in source.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    lists = Path("/etc/apt/sources.list")
    if lists.is_file():
        for line in lists.read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1]
    return "http://deb.debian.org/debian"


def ensure_rootfs(log=print) -> Path:
    """The cached root file system, built when missing (about 2 min here)."""
    root = cache_root()
    rootfs = root / "rootfs"
    stamp = rootfs / ".autoprune-ready"
    pins = _pins()
    if stamp.is_file() and json.loads(stamp.read_text()).get("packages") == pins:
        return rootfs
    missing = [tool for tool in ("debootstrap", QEMU, "dpkg-deb") if shutil.which(tool) is None]
    if missing:
        raise EmulationUnavailable(f"{', '.join(missing)} not found; install them with "
                                   "`apt-get install qemu-user-static debootstrap` (scripts/bootstrap.sh does)")
    if os.geteuid() != 0:
        raise EmulationUnavailable("building the emulated device's root file system needs root (debootstrap); "
                                   f"build it once as root, or restore a copy into {rootfs}")
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; the others wait and reuse it
        if stamp.is_file() and json.loads(stamp.read_text()).get("packages") == pins:
            return rootfs
        start = time.monotonic()
        partial = root / "rootfs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        log(f"emulated device: downloading Debian {SUITE} arm64 into {partial}")
        _run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3",
              SUITE, str(partial), _mirror()])
        debs = sorted((partial / "var/cache/apt/archives").glob("*.deb"))
        log(f"emulated device: unpacking {len(debs)} packages")
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(partial)])
            deb.unlink()
        proc = partial / "proc"
        if proc.is_symlink():
            proc.unlink()
        proc.mkdir(exist_ok=True)
        (proc / "cpuinfo").write_text("".join(CPUINFO.format(i=i) for i in range(os.cpu_count() or 1)))
        log(f"emulated device: installing aarch64 wheels ({', '.join(pins)})")
        platforms = [arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)]
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--target", str(partial / "opt/site"), "--only-binary=:all:", *platforms,
              "--python-version", "3.11", "--implementation", "cp", *pins])
        partial.rename(rootfs)
        stamp.write_text(json.dumps({"packages": pins, "built_s": round(time.monotonic() - start, 1)}))
        log(f"emulated device: root file system ready in {time.monotonic() - start:.0f} s")
    return rootfs


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise EmulationUnavailable(f"`{' '.join(cmd[:4])} ...` failed (exit {proc.returncode}):\n{tail}")


def python_wrapper(rootfs: Path) -> Path:
    """A script that runs the rootfs's Python under qemu with autoprune's current source.

    It is also the guest's ``sys.executable`` (qemu's ``-0``), so the processes TVM's
    server starts with ``sys.executable`` are emulated too.
    """
    import autoprune

    source = rootfs / "opt/autoprune"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(Path(autoprune.__file__).parent, source / "autoprune",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wrapper = rootfs.parent / "python-aarch64"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# Python of the emulated aarch64 device (autoprune/testing/arm_device.py)\n"
        "export PYTHONPATH=/opt/site:/opt/autoprune PYTHONDONTWRITEBYTECODE=1\n"
        f'exec {QEMU} -L "{rootfs}" -0 "{wrapper}" "{rootfs}/usr/bin/python3.11" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DeviceProcesses:
    """A TVM RPC tracker on the host plus one device server registered under ``key``.

    ``python`` runs the device server: the emulated board's (``python_wrapper``), or
    this machine's own interpreter for a quick test of the protocol without emulation.
    """

    def __init__(self, python: str | Path, key: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.python = str(python)
        self.key = key
        self.env = env or {}
        self.log_dir = log_dir
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.tracker_port = free_port()
        self.tracker: subprocess.Popen | None = None
        self.server: subprocess.Popen | None = None

    @property
    def tracker_address(self) -> str:
        return f"127.0.0.1:{self.tracker_port}"

    def start(self, timeout_s: float = 300.0) -> float:
        """Start the tracker and the device server; seconds until the device was registered."""
        start = time.monotonic()
        self.tracker = self._spawn([sys.executable, "-m", "autoprune", "tracker", "--port",
                                    str(self.tracker_port)], "tracker")
        self.start_server(timeout_s)
        return time.monotonic() - start

    def start_server(self, timeout_s: float = 300.0) -> float:
        start = time.monotonic()
        self.server = self._spawn([self.python, "-m", "autoprune", "device-server", "--tracker",
                                   self.tracker_address, "--key", self.key, "--port", str(free_port())], "server",
                                  env=self.env)
        self.wait_registered(timeout_s)
        return time.monotonic() - start

    def wait_registered(self, timeout_s: float) -> None:
        from autoprune.runners.rpc import tracker_status

        deadline = time.monotonic() + timeout_s
        while True:
            why = tracker_status("127.0.0.1", self.tracker_port, self.key)
            if why is None:
                return
            for name, proc in (("tracker", self.tracker), ("device server", self.server)):
                if proc is not None and proc.poll() is not None:
                    raise EmulationUnavailable(f"the {name} exited with code {proc.returncode}; "
                                               f"see {self.log_dir}:\n{self.log_tail(name.split()[-1])}")
            if time.monotonic() > deadline:
                raise EmulationUnavailable(f"the device server did not register within {timeout_s:g} s: {why}\n"
                                           + self.log_tail("server"))
            time.sleep(2)

    def kill_server(self) -> None:
        """SIGKILL the device server and everything it started (a board losing power)."""
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGKILL)
            self.server.wait()

    def stop(self) -> None:
        self.kill_server()
        if self.tracker is not None and self.tracker.poll() is None:
            os.killpg(self.tracker.pid, signal.SIGKILL)
            self.tracker.wait()

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.log_dir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""

    def _spawn(self, cmd: list[str], name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "a")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(os.environ, **(env or {})), start_new_session=True)


def emulated_device(log_dir: Path, log=print) -> DeviceProcesses:
    """The emulated Cortex-A72 board (built if needed), not yet started."""
    rootfs = ensure_rootfs(log)
    return DeviceProcesses(python_wrapper(rootfs), KEY, log_dir, env={"QEMU_CPU": QEMU_CPU})


@contextmanager
def running(device: DeviceProcesses):
    """Start the tracker and device server; stop both (SIGKILL) on exit."""
    try:
        device.start()
        yield device
    finally:
        device.stop()
