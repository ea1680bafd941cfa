"""A branch waiting for its trunk's checkpoint: it starts from the branch point once that is
complete, and fails at once, never waits, when the trunk has failed or has gone past the
branch point without keeping it."""

from __future__ import annotations

from pathlib import Path

import pytest

from astropt.sweep.branching import TrunkFailed, mark_failed, wait_for_branch_point
from astropt.train.checkpoint import COMPLETE, path_of


def _checkpoint(trunk_dir: Path, step: int) -> None:
    folder = Path(path_of(str(trunk_dir), step))
    folder.mkdir(parents=True)
    (folder / COMPLETE).touch()


def test_a_complete_branch_point_is_returned(tmp_path):
    _checkpoint(tmp_path, 8)
    _checkpoint(tmp_path, 16)
    assert wait_for_branch_point("t", str(tmp_path), 8, limit_s=1) == path_of(str(tmp_path), 8)


def test_a_failed_trunk_fails_its_branch_at_once(tmp_path):
    mark_failed(str(tmp_path))
    with pytest.raises(TrunkFailed, match="trunk t failed"):
        wait_for_branch_point("t", str(tmp_path), 8, limit_s=60)


def test_a_trunk_past_the_branch_point_without_it_fails_the_branch_naming_the_folder(tmp_path):
    """What a finished trunk whose branch points were released looks like."""
    _checkpoint(tmp_path, 16)
    with pytest.raises(TrunkFailed, match=f"at step 16 in {tmp_path} and kept no checkpoint"):
        wait_for_branch_point("t", str(tmp_path), 8, limit_s=60)


def test_a_trunk_not_there_yet_is_waited_for_until_the_limit(tmp_path):
    _checkpoint(tmp_path, 4)
    with pytest.raises(TimeoutError, match="no checkpoint at step 8 of trunk t"):
        wait_for_branch_point("t", str(tmp_path), 8, limit_s=0.1)
