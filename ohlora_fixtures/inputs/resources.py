"""The data files that ship with the plugin: registry, dataset, licence policy, the study's table, GPUs.

The repository keeps them in its top-level `data/`; setup.cfg maps that folder
into the package as `ohlora_fixtures/data`, so a wheel, an sdist install and an
editable install all find them, from any directory.
Every option that names one of these files defaults to `bundled(name)`.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

CANDIDATES = "candidates.toml"
DATASET = "persona_qa.csv"
LICENCES = "licenses.toml"
STUDY_RESULTS = "study_results.toml"
GPUS = "gpus.toml"
BUNDLED = (CANDIDATES, DATASET, LICENCES, STUDY_RESULTS, GPUS)
_PACKAGE = "ohlora_fixtures"  # data/ maps to ohlora_fixtures.data, beside this sub-package


def data_files() -> Traversable:
    """The folder of bundled data files."""
    package = resources.files(_PACKAGE)
    packaged = package / "data"
    if packaged.is_dir():  # a wheel or sdist install: the build put data/ here
        return packaged
    # A source tree (an editable install, or PYTHONPATH=.): the repository's data/ that setup.cfg maps.
    # Looked up beside this package rather than imported as ohlora_fixtures.data, which another
    # checkout's editable install could answer with its own data/.
    return Path(str(package)).parent / "data"


def bundled(name: str) -> Path:
    """The path of one bundled data file (pip installs packages unzipped, so it is a real file)."""
    return Path(str(data_files().joinpath(name)))
