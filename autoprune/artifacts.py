"""Files through an artifact store: a trial's files and a finalized member's, kept where
any machine that reaches the study's storage can fetch them.

With ``--artifacts URL`` (the search records it for its workers and later commands),
each process uploads the files of the trials it ran and of the members it finalized
through Optuna's artifact API, and ``finalize`` and ``export`` fetch what their results
folder lacks. URL: a folder (or ``file://``), Optuna's ``FileSystemArtifactStore``;
``s3://BUCKET``, ``Boto3ArtifactStore`` (needs boto3); ``gs://BUCKET``,
``GCSArtifactStore`` (needs google-cloud-storage). Without it, the results folder is
where the files live, as before: nothing is copied twice on one machine.

Optuna records an artifact on a trial only while the trial runs, so the index is a
study attribute per trial, ``autoprune_files:<n>`` (its final files:
``autoprune_files:<n>/final``): file name -> artifact id.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from autoprune.errors import ConfigError, ExportError, first_line

FILES_ATTR = "autoprune_files:"
TRIAL_FILES = ("plan.json", "state.pt", "model.onnx", "model.float.onnx")
# result.json last: it is the sign that a member's final files are whole (results.final_result)
FINAL_FILES = ("state.pt", "model.onnx", "model.float.onnx", "result.json")


def open_store(url: str, create: bool = False):
    """The artifact store ``url`` names (``create``: make its folder, to write into it).

    Raises:
        ConfigError: an unknown scheme, a missing client library, or a folder that
            cannot be made.
    """
    import optuna

    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme in ("s3", "gs"):
        bucket, _, rest = url.split("://", 1)[1].partition("/")
        if not bucket or rest:
            raise ConfigError(f"--artifacts {url}: give a bucket only ({scheme}://BUCKET); Optuna's store keeps "
                              "its own keys in it.")
        try:
            if scheme == "s3":
                return optuna.artifacts.Boto3ArtifactStore(bucket)
            return optuna.artifacts.GCSArtifactStore(bucket)
        except ImportError:
            package = "boto3" if scheme == "s3" else "google-cloud-storage"
            raise ConfigError(f"--artifacts {url} needs {package}: pip install {package}") from None
    if scheme != "file":
        raise ConfigError(f"--artifacts {url}: unknown kind of store; give a folder, file://PATH, s3://BUCKET or "
                          "gs://BUCKET.")
    path = Path(url[len("file://"):] if url.startswith("file://") else url).expanduser()
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--artifacts {url}: cannot make the folder ({exc.strerror}).") from None
    return optuna.artifacts.FileSystemArtifactStore(str(path))


def _index(study, key: str) -> dict[str, str]:
    ids = study.user_attrs.get(f"{FILES_ATTR}{key}")
    return ids if isinstance(ids, dict) else {}


def publish(study, store, key: str, folder: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Upload the files ``names`` of ``folder`` that exist and index them under ``key``
    (once they are all uploaded: a half-published set is not seen)."""
    import optuna

    ids = {}
    for name in names:
        path = Path(folder) / name
        if path.is_file():
            ids[name] = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                                         study_or_trial=study)
    if ids:
        study.set_user_attr(f"{FILES_ATTR}{key}", ids)
    return ids


def publish_or_say(study, store, key: str, folder: Path, names: tuple[str, ...], log) -> None:
    """:func:`publish`, with a failed upload said through ``log`` rather than raised:
    the files stay in ``folder``, and a later run can upload them."""
    try:
        publish(study, store, key, folder, names)
    except Exception as exc:  # noqa: BLE001 - each store raises its own
        log(f"trial {key}: its files could not be uploaded to the artifact store ({type(exc).__name__}: "
            f"{first_line(exc)}); they stay in {folder}")


def fetch(study, store, key: str, folder: Path) -> bool:
    """Download the files indexed under ``key`` into ``folder``; False when none are.
    They are downloaded beside it first and moved in (``result.json`` last), so an
    interrupted fetch never leaves a set that looks whole.

    Raises:
        ExportError: a file is indexed but the store does not hold it.
    """
    import optuna

    ids = _index(study, key)
    if not ids:
        return False
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.fetch-", dir=folder.parent))
    try:
        for name, artifact_id in ids.items():
            if name not in TRIAL_FILES + FINAL_FILES:  # the index is data from the storage: names it never writes
                continue
            try:
                optuna.artifacts.download_artifact(artifact_store=store, file_path=str(staging / name),
                                                   artifact_id=str(artifact_id))
            except Exception as exc:  # noqa: BLE001 - each store raises its own
                raise ExportError(f"{name} of {key} is indexed in the study but its artifact store does not give it "
                                  f"({type(exc).__name__}: {first_line(exc)}); check --artifacts.") from None
        folder.mkdir(parents=True, exist_ok=True)
        for name in sorted(os.listdir(staging), key=lambda n: n == "result.json"):
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def study_url(study, given: str | None) -> str | None:
    """The store to use: ``given``, else the one the search recorded."""
    from autoprune.storage import run_info

    return given or run_info(study).get("artifacts")

