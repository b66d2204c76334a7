"""Provenance: which weights, which code and which GPU software a measurement came from.

Every record names its weights (`weights_revision`): a pretrained hub model
by the commit of its cached snapshot, a local checkpoint folder by a hash of
its weight and config files' contents, random weights by a hash of the
config they were built from (with the run's seed, that config fixes them).
The run names this project's code (`code_revision`) and, on a GPU, the
driver and CUDA version beside the GPU's name.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from transformers import PretrainedConfig

from ohlora_fixtures.inputs.usercache import cache_file, read_json, write_json

# What shapes a checkpoint's weights and behaviour; README, licences and the like do not.
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".tiktoken", ".txt")
_CHUNK = 1 << 20
# The checkpoint digests later sessions reuse, in the user's cache folder (usercache).
DIGEST_CACHE = "checkpoint-digests.json"
RACY_SECONDS = 2
_PACKAGE = Path(__file__).resolve().parents[1]  # ohlora_fixtures/, above this sub-package


def hub_snapshot(hub_id: str) -> Path | None:
    """The cached snapshot folder of a hub model (its name is the commit), or None when not cached."""
    try:
        return Path(huggingface_hub.snapshot_download(hub_id, local_files_only=True))
    except (OSError, ValueError):
        return None


def pretrained_revision(hub_id: str, path: Path | None) -> str:
    """`hub:<id>@<commit>` for a cached hub snapshot, `sha256:<hash>` of a local checkpoint folder."""
    if path is None:
        snapshot = hub_snapshot(hub_id)
        if snapshot is not None and snapshot.parent.name == "snapshots":
            return f"hub:{hub_id}@{snapshot.name}"
        if snapshot is None:
            return f"hub:{hub_id}@unknown"
        path = snapshot
    return f"sha256:{folder_hash(path)}"


def folder_hash(folder: Path) -> str:
    """A hash of the names and contents of a checkpoint's weight and config files, read in 1 MiB chunks.

    Kept by each file's name, size and modification time: for the session in
    memory, and for later sessions in the user's cache folder (DIGEST_CACHE),
    so that `--ohlora-resume` names a checkpoint of many GB without reading it
    again. A listing whose newest file is under RACY_SECONDS old is not kept on
    disk: a file rewritten within the file system's clock tick keeps its
    modification time, so only a settled listing identifies its contents.
    """
    files = sorted(
        (file.relative_to(folder).as_posix(), file.stat().st_size, file.stat().st_mtime_ns)
        for file in folder.rglob("*") if file.is_file() and file.suffix in CHECKPOINT_SUFFIXES
    )
    return _digest(folder.resolve(), tuple(files))


@lru_cache(maxsize=64)
def _digest(folder: Path, files: tuple[tuple[str, int, int], ...]) -> str:
    path = cache_file(DIGEST_CACHE)
    known = read_json(path, "checkpoint digest cache", "hashing the checkpoint again")
    listing = [list(file) for file in files]
    entry = known.get(str(folder))
    if isinstance(entry, dict) and entry.get("files") == listing and isinstance(entry.get("digest"), str):
        return entry["digest"]
    digest = _hash_files(folder, files)
    if files and time.time_ns() - max(mtime for _, _, mtime in files) > RACY_SECONDS * 1e9:
        known[str(folder)] = {"files": listing, "digest": digest}
        write_json(path, known, "checkpoint digest cache", "the next session hashes the checkpoint again")
    return digest


def _hash_files(folder: Path, files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, size, _ in files:
        digest.update(f"{name}\0{size}\0".encode("utf-8"))
        with open(folder / name, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def config_revision(config: PretrainedConfig) -> str:
    """`config-sha256:<hash>` of the config random weights are built from, as sorted JSON.

    transformers' own version and private keys are left out: they do not
    change the model that is built.
    """
    values = {k: v for k, v in config.to_dict().items() if k != "transformers_version" and not k.startswith("_")}
    payload = json.dumps(values, sort_keys=True, default=str)
    return f"config-sha256:{hashlib.sha256(payload.encode('utf-8')).hexdigest()[:16]}"


@cache
def code_revision() -> str:
    """This project's git commit (`git <hash>`, `+modified` if tracked files differ) when it runs from its
    own checkout; else its package version (an installed copy has no commit to name)."""
    from ohlora_fixtures import __version__

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(_PACKAGE), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        # A venv inside some other repository puts an installed copy in that repository's tree: not ours.
        if Path(git("rev-parse", "--show-toplevel")).resolve() / _PACKAGE.name != _PACKAGE:
            raise ValueError("not this project's checkout")
        commit = git("rev-parse", "HEAD")
        modified = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return f"ohlora-bench {__version__} (package)"
    return f"git {commit[:12]}" + ("+modified" if modified else "")


@cache
def gpu_software(device: torch.device) -> dict[str, Any]:
    """`gpu_driver` and `cuda_version` of a CUDA device (from NVML and torch), empty strings elsewhere."""
    if device.type != "cuda":
        return {"gpu_driver": "", "cuda_version": ""}
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else str(driver)
    except Exception:  # noqa: BLE001 - without NVML the driver is simply not known
        driver = "unknown (no NVML)"
    return {"gpu_driver": driver, "cuda_version": torch.version.cuda or "unknown"}
