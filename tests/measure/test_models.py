"""Pretrained weights: a missing checkpoint skips only its candidate; pickle and remote code are opt-in."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from ohlora_fixtures.errors import BenchmarkError, UsageError
from ohlora_fixtures.inputs.dataset import load_experiment
from ohlora_fixtures.inputs.options import DEFAULT_DATASET
from ohlora_fixtures.inputs.registry import load_registry
from ohlora_fixtures.inputs.tokenizer import dataset_tokenizer
from ohlora_fixtures.measure import models, provenance
from ohlora_fixtures.measure.models import WeightsUnavailable, build_random, load_pretrained
from ohlora_fixtures.records import results
from tests.conftest import TINY_ENTRY, TINY_RUN, write_registry

CPU = torch.device("cpu")
LOAD = {"device": CPU, "dtype": torch.float32, "allow_download": False}


@pytest.fixture(scope="module")
def tiny_candidate(tmp_path_factory: pytest.TempPathFactory):
    return load_registry(write_registry(tmp_path_factory.mktemp("registry") / "candidates.toml", TINY_ENTRY))[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_candidate) -> Path:
    """A tiny random Llama saved as a safetensors checkpoint, with a tokenizer built from the dataset."""
    experiment = load_experiment(DEFAULT_DATASET)
    pairs = (*experiment.train, *experiment.valid, *experiment.prompts)
    texts = [tiny_candidate.prompt("")] + [p.question for p in pairs] + [p.answer or "" for p in pairs]
    tokenizer = dataset_tokenizer(texts, tmp_path_factory.mktemp("tokenizer"))
    base = build_random(tiny_candidate, tokenizer, scale="tiny", seed=0, device=CPU, dtype=torch.float32)
    directory = tmp_path_factory.mktemp("checkpoint")
    base.model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def pickled(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Path:
    """The same checkpoint with its weights only in pytorch_model.bin (a pickle)."""
    directory = tmp_path_factory.mktemp("pickled")
    for file in checkpoint.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, directory)
    torch.save(load_file(checkpoint / "model.safetensors"), directory / "pytorch_model.bin")
    return directory


def test_missing_weights_skip_only_that_candidate(
    run_benchmarks, tmp_path: Path, checkpoint: Path, pickled: Path
) -> None:
    """Offline with an empty HF cache: the local checkpoint runs; the uncached hub id and a
    pickle-only cached snapshot are skipped with what to do."""
    hf_home = tmp_path / "hf-home"
    snapshot = hf_home / "hub" / "models--ohlora-test--pickled" / "snapshots" / "0123abc"
    shutil.copytree(pickled, snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abc")
    registry = write_registry(
        tmp_path / "candidates.toml",
        {**TINY_ENTRY, "name": "local", "path": str(checkpoint)},
        {**TINY_ENTRY, "name": "llama1B", "hub_id": "Yebin46/llama1B"},
        {**TINY_ENTRY, "name": "pickled", "hub_id": "ohlora-test/pickled"},
    )
    result = run_benchmarks(
        "--ohlora-candidates",
        str(registry),
        "--ohlora-weights",
        "pretrained",
        *TINY_RUN,
        "-rs",
        "-p",
        "no:randomly",
        env={"HF_HOME": str(hf_home), "OMP_NUM_THREADS": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "2 passed, 4 skipped" in output
    logged = list(results.read(tmp_path / "ohlora" / "results.jsonl"))
    records = {(r.candidate, r.kind.value): r for r in logged}
    assert len(logged) == len(records)
    assert {key: record.status for key, record in records.items()} == {
        ("local", "finetune"): "ok",
        ("local", "inference"): "ok",
        ("llama1B", "finetune"): "skipped",
        ("llama1B", "inference"): "skipped",
        ("pickled", "finetune"): "skipped",
        ("pickled", "inference"): "skipped",
    }
    absent = records[("llama1B", "finetune")].error
    assert absent.startswith(
        "llama1B: pretrained weights for Yebin46/llama1B are not on this machine and downloads are off. "
        "Fetch them with `hf download Yebin46/llama1B` (or pass --ohlora-allow-download)"
    )
    assert f"pickled: {snapshot} holds only pickle (.bin) weights" in records[("pickled", "finetune")].error
    assert "hf download Yebin46/llama1B" in output  # the skip reason, as pytest shows it


def test_pickle_checkpoint_is_refused_unless_allowed(tiny_candidate, pickled: Path) -> None:
    candidate = replace(tiny_candidate, path=pickled)
    with pytest.raises(WeightsUnavailable) as refused:
        load_pretrained(candidate, trust_remote_code=False, allow_pickle=False, **LOAD)
    assert str(refused.value) == (
        f"tiny-llama: {pickled} holds only pickle (.bin) weights; they can run code when loaded, so they are "
        "refused. Convert them to safetensors, or pass --ohlora-allow-pickle if you trust them"
    )
    assert load_pretrained(candidate, trust_remote_code=False, allow_pickle=True, **LOAD).total_params > 0


def test_safetensors_checkpoint_loads_by_default(tiny_candidate, checkpoint: Path) -> None:
    base = load_pretrained(
        replace(tiny_candidate, path=checkpoint), trust_remote_code=False, allow_pickle=False, **LOAD
    )
    assert base.weights == "pretrained" and base.total_params > 0


@pytest.mark.parametrize("entry_asks, user_allows", [(False, False), (False, True), (True, True)])
def test_remote_code_runs_only_when_entry_and_user_both_ask(
    tiny_candidate, monkeypatch: pytest.MonkeyPatch, entry_asks: bool, user_allows: bool
) -> None:
    asked = []

    def from_pretrained(source: str, **options: object) -> None:
        asked.append(options["trust_remote_code"])
        raise OSError("stop here")

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", from_pretrained)  # loaded first
    with pytest.raises(WeightsUnavailable):
        load_pretrained(
            replace(tiny_candidate, trust_remote_code=entry_asks),
            trust_remote_code=user_allows,
            allow_pickle=False,
            **LOAD,
        )
    assert asked == [entry_asks and user_allows]


def test_remote_code_entry_is_refused_without_the_flag(tiny_candidate) -> None:
    with pytest.raises(UsageError) as refused:
        load_pretrained(
            replace(tiny_candidate, trust_remote_code=True), trust_remote_code=False, allow_pickle=False, **LOAD
        )
    assert str(refused.value) == (
        "candidate 'tiny-llama' needs remote code (trust_remote_code in its registry entry); it is refused "
        "unless you pass --ohlora-trust-remote-code after reviewing that code"
    )


@pytest.mark.parametrize(
    "args, refused",
    [
        (["--ohlora-weights", "pretrained"], True),
        (["--ohlora-weights", "pretrained", "--ohlora-trust-remote-code"], False),
        ([], False),
    ],
    ids=["pretrained", "pretrained-trusted", "random-weights"],
)
def test_remote_code_refusal_comes_at_start_up(
    bench_pytester: pytest.Pytester, tmp_path: Path, args: list[str], refused: bool
) -> None:
    registry = write_registry(tmp_path / "candidates.toml", {**TINY_ENTRY, "trust_remote_code": True})
    result = bench_pytester.runpytest_inprocess("--ohlora-candidates", str(registry), "--collect-only", "-q", *args)
    if refused:
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["ERROR: candidate 'tiny-llama' needs remote code*--ohlora-trust-remote-code*"])
        assert "Traceback" not in result.stdout.str() + result.stderr.str()
    else:
        assert result.ret == pytest.ExitCode.OK


def test_undeclared_custom_code_is_refused_and_never_runs(tiny_candidate, checkpoint: Path, tmp_path: Path) -> None:
    directory = tmp_path / "custom"
    shutil.copytree(checkpoint, directory)
    ran = tmp_path / "code-ran"
    config = json.loads((directory / "config.json").read_text())
    config.update(
        model_type="ohlora-custom", auto_map={"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    )
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "custom.py").write_text(f"open({str(ran)!r}, 'w').close()\n")

    with pytest.raises(WeightsUnavailable) as refused:
        load_pretrained(replace(tiny_candidate, path=directory), trust_remote_code=False, allow_pickle=False, **LOAD)
    assert str(refused.value) == (
        f"tiny-llama: {directory} ships its own model code, which is refused. If you have reviewed it, "
        "set trust_remote_code = true in its registry entry and pass --ohlora-trust-remote-code"
    )
    assert not ran.exists()


# --- provenance: which weights, which code ----------------------------------------------------------


def test_a_local_checkpoint_is_named_by_the_hash_of_its_contents(
    tiny_candidate, checkpoint: Path, tmp_path: Path
) -> None:
    local = replace(tiny_candidate, path=checkpoint)
    first = load_pretrained(local, trust_remote_code=False, allow_pickle=False, **LOAD).revision
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", first)
    assert load_pretrained(local, trust_remote_code=False, allow_pickle=False, **LOAD).revision == first
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint, copy)
    assert provenance.pretrained_revision(tiny_candidate.hub_id, copy) == first  # where it lies does not matter
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(
        json.dumps({**config, "rms_norm_eps": 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6})
    )
    assert provenance.pretrained_revision(tiny_candidate.hub_id, copy) != first
    (copy / "README.md").write_text("notes do not change the weights")
    assert provenance.folder_hash(copy) == provenance.folder_hash(copy)


def test_a_checkpoint_digest_is_kept_for_later_sessions_until_a_file_changes(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume names a checkpoint of many GB without reading it: the digest is kept in the user's cache
    by each file's name, size and modification time; a listing written just now is not trusted there."""
    folder = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, folder)
    hashed: list[Path] = []
    real_hash = provenance._hash_files
    monkeypatch.setattr(provenance, "_hash_files", lambda where, files: hashed.append(where) or real_hash(where, files))

    def later_session() -> str:
        provenance._digest.cache_clear()  # what a new process starts with
        return provenance.folder_hash(folder)

    def touch(seconds: float) -> None:
        for file in folder.iterdir():
            os.utime(file, (seconds, seconds))

    touch(time.time() + 60)  # as if just written, however slow this machine is: within RACY_SECONDS of now
    fresh = later_session()
    assert later_session() == fresh and len(hashed) == 2  # not kept: read each time
    settled = time.time() - 60
    touch(settled)
    assert later_session() == fresh and later_session() == fresh and len(hashed) == 3
    config = folder / "config.json"
    config.write_text(config.read_text() + " ")  # new contents
    os.utime(config, (settled + 1, settled + 1))
    assert later_session() != fresh and len(hashed) == 4


def test_resume_measures_again_when_the_local_checkpoint_changed(
    bench_pytester: pytest.Pytester, checkpoint: Path, tmp_path: Path
) -> None:
    """Standard: a stored measurement is reused only when it is of the same weights. Unchanged, the
    checkpoint's benchmarks resume; after its weights file changed they are measured again, saying why."""
    local = tmp_path / "local"
    shutil.copytree(checkpoint, local)
    registry = write_registry(tmp_path / "candidates.toml", {**TINY_ENTRY, "path": str(local)})

    def run(outcome: str) -> pytest.RunResult:
        result = bench_pytester.runpytest_inprocess(
            "--ohlora-candidates",
            str(registry),
            "--ohlora-weights",
            "pretrained",
            *TINY_RUN,
            "--ohlora-report-dir",
            "report",
            "--ohlora-resume",
            "-p",
            "no:randomly",
        )
        result.assert_outcomes(**{outcome: 2})
        return result

    run("passed")
    run("skipped")
    weights = load_file(local / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1
    save_file(weights, local / "model.safetensors", metadata={"format": "pt"})
    changed = run("passed")
    changed.stdout.fnmatch_lines(
        [
            "*tiny-llama r16: measured again, not resumed: *results.jsonl has it for weights sha256:*, "
            "the weights now are sha256:*",
            "*tiny-llama inference: measured again, not resumed: *",
        ]
    )
    logged = list(results.read(bench_pytester.path / "report" / "results.jsonl"))
    assert len(logged) == 4 and len({record.weights_revision for record in logged}) == 2
    assert logged[-1].weights_revision == provenance.pretrained_revision(TINY_ENTRY["hub_id"], local)


def test_a_cached_hub_model_is_named_by_its_snapshot_commit(
    tiny_candidate, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = "3f2a" * 10
    repo = tmp_path / "hub" / "models--ohlora-test--tiny"
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(provenance.huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # Not offline, yet nothing may ask the hub (transformers' look for an adapter once waited 23 s on retries).
    monkeypatch.setattr(provenance.huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    asked = []
    monkeypatch.setattr(provenance.huggingface_hub.file_download, "get_hf_file_metadata",
                        lambda *args, **kwargs: asked.append(args) or pytest.fail(f"asked the hub: {args}"))
    hub = replace(tiny_candidate, hub_id="ohlora-test/tiny", path=None)
    assert (
        load_pretrained(hub, trust_remote_code=False, allow_pickle=False, **LOAD).revision
        == f"hub:ohlora-test/tiny@{commit}"
    )
    assert provenance.pretrained_revision("ohlora-test/absent", None) == "hub:ohlora-test/absent@unknown"


def test_random_weights_are_named_by_their_config(tiny_candidate, checkpoint: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    build = lambda candidate: build_random(candidate, tokenizer, scale="tiny", seed=0, device=CPU, dtype=torch.float32)  # noqa: E731
    first = build(tiny_candidate).revision
    assert re.fullmatch(r"config-sha256:[0-9a-f]{16}", first)
    assert build(tiny_candidate).revision == first
    assert build(replace(tiny_candidate, config={**tiny_candidate.config, "intermediate_size": 1024})).revision != first


def test_the_code_is_named_by_its_git_commit_in_a_checkout() -> None:
    if not (Path(__file__).resolve().parents[2] / ".git").exists():
        pytest.skip("not run from a git checkout")
    assert re.fullmatch(r"git [0-9a-f]{12}(\+modified)?", provenance.code_revision())


def test_a_cpu_run_names_no_gpu_software() -> None:
    assert provenance.gpu_software(CPU) == {"gpu_driver": "", "cuda_version": ""}


def test_a_checkpoint_without_its_tokenizer_is_one_line_naming_the_folder(tiny_candidate, checkpoint: Path,
                                                                           tmp_path: Path) -> None:
    bare = tmp_path / "weights-only"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(checkpoint / name, bare / name)
    with pytest.raises(BenchmarkError) as refused:
        load_pretrained(replace(tiny_candidate, path=bare), trust_remote_code=False, allow_pickle=False, **LOAD)
    message = str(refused.value)
    assert message.startswith(f"tiny-llama: could not load the tokenizer of {bare}")
    assert message.endswith("(the folder needs its tokenizer files beside the weights)") and "\n" not in message
