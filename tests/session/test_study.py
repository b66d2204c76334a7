"""The Study's code version: which source makes a stored figure stale."""

from __future__ import annotations

import shutil
from pathlib import Path

from ohlora_fixtures.session import study


def test_every_module_under_measure_and_session_is_a_measuring_module() -> None:
    package = Path(study.__file__).resolve().parent.parent
    names = set(study.measuring_modules())
    for folder in study.MEASURING_PACKAGES:
        for source in (package / folder).glob("*.py"):
            if source.stem != "__init__":
                assert f"{folder}.{source.stem}" in names
    assert {"measure.torch_compat", "measure.machine_load", "inputs.tokenizer", "judge.quality"} <= names


def test_a_change_to_any_measuring_module_changes_the_code_version(tmp_path: Path) -> None:
    """A copy of the package, each measuring module edited in turn (a new one added too): each edit gives a
    new digest, and an edit elsewhere (the report) does not."""
    root = tmp_path / "ohlora_fixtures"
    shutil.copytree(Path(study.__file__).resolve().parent.parent, root,
                    ignore=shutil.ignore_patterns("__pycache__"))
    seen = {study.source_digest(root)}
    assert seen == {study.code_version().partition("+")[2]}
    for name in study.measuring_modules(root):
        source = root / (name.replace(".", "/") + ".py")
        source.write_bytes(source.read_bytes() + b"\n# edited\n")
        seen.add(study.source_digest(root))
    assert len(seen) == len(study.measuring_modules(root)) + 1
    (root / "measure" / "new_meter.py").write_text("PEAK = 1\n", encoding="utf-8")
    assert study.source_digest(root) not in seen
    seen.add(study.source_digest(root))
    report = root / "report" / "markdown.py"
    report.write_text(report.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    assert study.source_digest(root) in seen
