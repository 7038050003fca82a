"""A run's checkpoint folder made resumable after a kill at any moment.

NeMo marks a checkpoint being written with a `<checkpoint>-unfinished` file beside it and removes
the marker when the save completes. A job killed mid-save leaves the marker; on the next start NeMo's
AutoResume skips that checkpoint, and when it was the only `*-last` one it refuses to start at all
("Last checkpoint is unfinished … Please remove the checkpoint manually"). A preempted job started
again by a scheduler has nobody to do that. So before NeMo looks, every unfinished checkpoint is set
aside (moved under `.unfinished/`, never deleted: it is evidence), and when no complete `*-last` is
left the newest complete periodic checkpoint is renamed to a `*-last` one, which is what NeMo
resumes from. With no complete checkpoint left the run starts from the beginning (or from its
`restore_from`), which is what it would have done had the kill come before the first save.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

UNFINISHED = "-unfinished"  # NeMo's ModelCheckpoint.UNFINISHED_CHECKPOINT_SUFFIX
ASIDE = ".unfinished"
_STEP = re.compile(r"step=(\d+)")


@dataclass
class Repair:
    set_aside: list[str] = field(default_factory=list)
    """Unfinished checkpoints moved under `.unfinished/`."""
    promoted: str | None = None
    """The complete checkpoint renamed to `*-last` so that NeMo resumes from it."""


def _step(path: Path) -> int:
    match = _STEP.search(path.name)
    return int(match.group(1)) if match else -1


def repair(checkpoints: Path) -> Repair:
    """Set aside unfinished checkpoints in `checkpoints`; make the newest complete one resumable."""
    done = Repair()
    if not checkpoints.is_dir():
        return done
    for marker in sorted(checkpoints.glob(f"*{UNFINISHED}")):
        ckpt = marker.with_name(marker.name[: -len(UNFINISHED)])
        aside = checkpoints / ASIDE / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        aside.mkdir(parents=True, exist_ok=True)
        if ckpt.exists():
            os.replace(ckpt, aside / ckpt.name)
            done.set_aside.append(ckpt.name)
        os.replace(marker, aside / marker.name)
    complete = [d for d in checkpoints.iterdir() if d.is_dir() and not d.name.startswith(".")]
    if complete and not any(d.name.endswith("-last") for d in complete):
        newest = max(complete, key=_step)
        target = newest.with_name(newest.name + "-last")
        os.replace(newest, target)
        done.promoted = target.name
    return done
