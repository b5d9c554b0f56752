"""Loading YAML files into frozen dataclasses, with errors that name file and key.

Written by hand rather than with pydantic to keep the dependency list short; it
only needs three things: reject unknown keys, check simple types, say where.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from autoprune.errors import ConfigError

T = TypeVar("T")


# Limits on every YAML file autoprune reads (profiles, spaces): a configuration file is
# small. Counted with repeats, so aliases that multiply a structure ("billion laughs")
# are refused before anything walks, hashes or serialises it.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_VALUES = 100_000
MAX_YAML_DEPTH = 64


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every problem with the file into one ConfigError."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}.") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{path} is {len(raw):,} bytes; a profile or space file is at most "
                          f"{MAX_YAML_BYTES:,}. Is it the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: malformed YAML: {problem}.") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a configuration file.") from None
    _check_bounded(data, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level.")
    return data


def _check_bounded(data: Any, path: Path) -> None:
    """Refuse a structure deeper than MAX_YAML_DEPTH or with more than MAX_YAML_VALUES values
    counted as they would be expanded (an alias counts again each time it is used)."""
    stack, seen = [(data, 0)], 0
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_YAML_VALUES:
            raise ConfigError(f"{path} expands to more than {MAX_YAML_VALUES:,} values (YAML aliases that "
                              "repeat a structure?); a profile or space file is much smaller.")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{path}: nested more than {MAX_YAML_DEPTH} levels deep.")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; ``where`` names the file and key path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {_kind(data)}.")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}. Allowed: {', '.join(fields)}."
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, f"{where}.{name}")
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING  # type: ignore[misc]
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing)}.")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(args[0], value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {_kind(value)}.")
        (item,) = typing.get_args(tp)[:1]
        return tuple(_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(
                f"{where}: expected one of {', '.join(map(str, allowed))}, got {value!r}."
            )
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {_kind(value)}.")
        if not math.isfinite(value):  # .nan and .inf would pass every `x > 0` check
            raise ConfigError(f"{where}: expected a finite number, got {value}.")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {_kind(value)}.")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {_kind(value)}.")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected text, got {_kind(value)}.")
        return value
    return value


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def stable_hash(data: Any) -> str:
    """sha256 of canonical JSON: the same content always gives the same hash."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so readers never see it half-written (temporary file, then replace)."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers never see it half-written; a temporary file of its own
    per writer, so that workers sharing a results folder never take each other's."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    chmod_shared(Path(tmp), 0o666)  # mkstemp makes 0600; results are meant to be shared
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def chmod_shared(path: Path, mode: int) -> None:
    """Give ``path`` ``mode`` less the umask, as a plain open()/mkdir() would have."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    path.chmod(mode & ~umask)


def cache_dir() -> Path:
    """Where autoprune keeps what it can rebuild: checkpoints it trained, TVM tuning records."""
    import os

    return Path(os.environ.get("AUTOPRUNE_CACHE", Path.home() / ".cache" / "autoprune"))


def scratch_dir(parent: Path, prefix: str) -> Path:
    """A new folder ``<prefix><pid>-XXXX`` in ``parent``, after removing the ones of
    processes that died (a ``kill -9`` leaves its scratch folder behind)."""
    import os
    import shutil
    import tempfile

    parent = Path(parent)
    for old in parent.glob(f"{prefix}*-*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def data_dir(name: str, env: str) -> Path:
    """A folder of named YAML files (``device_profiles``, ``search_spaces``): ``$env``, else the shipped one.

    ``autoprune/_data/<name>`` is a symlink to the top-level folder in a checkout
    (developers edit that one; ``resolve()`` makes messages name it) and a copy of it in
    an installed wheel (see pyproject.toml). autoprune is installed as plain files,
    never zipped, so the resource is a real folder.
    """
    import os
    from importlib.resources import files

    override = os.environ.get(env)
    if override:
        return Path(override)
    return Path(str(files("autoprune") / "_data" / name)).resolve()


def load_named(cls: type[T], name_or_path: str | Path, known: dict[str, Path], kind: str, hint: str = "") -> T:
    """Load a ``kind`` (profile, space) given by name (from ``known``) or by YAML path.

    The file's stem is its name unless the file says otherwise.
    """
    from autoprune.errors import did_you_mean

    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        name = str(name_or_path)
        if name not in known:
            raise ConfigError(f"unknown {kind} {name!r}." + did_you_mean(name, list(known)) + hint)
        path = known[name]
    elif not path.is_file():
        raise ConfigError(f"{kind} file {path} does not exist.")
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    return from_dict(cls, data, str(path))
