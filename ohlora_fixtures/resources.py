"""The data files that ship with the plugin: registry, dataset, licence policy and the study's table.

The repository keeps them in its top-level `data/`; setup.cfg maps that folder
into the package as `ohlora_fixtures.data`, so a wheel, an sdist install and an
editable install all find them with importlib.resources, from any directory.
Every option that names one of these files defaults to `bundled(name)`.
"""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

DATA_PACKAGE = "ohlora_fixtures.data"
CANDIDATES = "candidates.toml"
DATASET = "persona_qa.csv"
LICENCES = "licenses.toml"
STUDY_RESULTS = "study_results.toml"
BUNDLED = (CANDIDATES, DATASET, LICENCES, STUDY_RESULTS)


def data_files() -> Traversable:
    """The folder of bundled data files."""
    try:
        return resources.files(DATA_PACKAGE)
    except ModuleNotFoundError:
        # A source checkout on sys.path without being installed (PYTHONPATH=.): no build has mapped
        # data/ yet, so follow setup.cfg's package_dir by hand: data/ beside the package folder.
        return Path(str(resources.files(__package__))).parent / "data"


def bundled(name: str) -> Path:
    """The path of one bundled data file (always a real file: packages install unzipped)."""
    return Path(str(data_files().joinpath(name)))
