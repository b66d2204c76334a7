"""Several GPUs in one machine: pytest-xdist hands each worker whole candidates.

pytest-xdist's own grouping (`--dist loadgroup` with `xdist_group` marks) rides
on rewriting test ids, which pytest 9.2 no longer lets it do
(pytest-dev/pytest-xdist#1386): the marks are silently ignored. A scheduler
that reads the candidate from the id instead works with any pytest.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

from xdist.scheduler import LoadScopeScheduling


def candidate_units(candidates: Sequence[str]) -> Callable[[str], str]:
    """Maps a test id to its unit of work: the candidate named among the ids in its brackets, else the id itself."""
    # Longest first, so a name that contains another (gemma-ko inside gemma-ko-v01) is matched whole.
    patterns = [
        (name, re.compile(rf"(?:^|-){re.escape(name)}(?:-|$)")) for name in sorted(candidates, key=len, reverse=True)
    ]

    def unit(nodeid: str) -> str:
        params = nodeid.partition("[")[2].removesuffix("]")
        return next((name for name, pattern in patterns if pattern.search(params)), nodeid)

    return unit


class CandidateScheduling(LoadScopeScheduling):
    """Sends all of a candidate's benchmarks to one worker as one unit; any other test goes alone.

    `candidates` gives the names when first needed: a run without parametrized
    tests never reads the registry.
    """

    def __init__(self, config: Any, log: Any, candidates: Callable[[], Sequence[str]]) -> None:
        super().__init__(config, log)
        self._candidates = candidates
        self._unit: Callable[[str], str] | None = None

    def _split_scope(self, nodeid: str) -> str:
        if "[" not in nodeid:  # not parametrized, so no candidate in its id
            return nodeid
        if self._unit is None:
            self._unit = candidate_units(self._candidates())
        return self._unit(nodeid)
