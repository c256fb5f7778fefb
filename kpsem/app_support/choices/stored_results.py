"""Where the tables of the sidebar's selection live: each model's predictions table and the pair's probe table,
either the bundled demo's own file or a file in the disk cache named after what made it (checkpoint files,
data split, settings), so a second visit reads it back instead of computing it again."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from kpsem.app_support.choices.selection import Selection
from kpsem.app_support.choices.sources import FileKey
from kpsem.probes import PROBES

__all__ = ["BUNDLED_PROBE_CLIPS", "StoredTable", "TableSource", "predictions_path", "table_source", "probe_source"]

BUNDLED_PROBE_CLIPS = 2  # clips per video of the demo's bundled probes table (assets/demo/make_demo.sh)


@dataclass
class StoredTable:
    """Where a stored table is (or would be written): the bundled demo's own file or one in the disk cache.

    The probe table of the sidebar's two models is one of these; each model's predictions table adds its role.
    """

    path: Path  # the Parquet file
    bundled: bool  # the demo's own table
    clips: int  # clips per video it was (or will be) computed with

    @property
    def exists(self) -> bool:
        return self.path.is_file()


@dataclass
class TableSource(StoredTable):
    """Where one model's predictions table is (or would be written), and whether it exists."""

    role: str = field(kw_only=True)  # "baseline" or "kpsem"


def predictions_path(cache_dir: Path, checkpoint: FileKey, data_key: tuple, clips: int) -> Path:
    """Where the table of one checkpoint on one data split lives in the disk cache."""
    text = json.dumps([list(checkpoint), [str(v) for v in data_key], clips])
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return cache_dir / "predictions" / f"{Path(checkpoint[0]).stem}-{digest}.parquet"


def table_source(chosen: Selection, role: str, clips: int) -> TableSource:
    """The table of the ``role`` checkpoint on the sidebar's data split."""
    slot = chosen.baseline if role == "baseline" else chosen.kpsem
    demo = chosen.demo
    bundled = demo.predictions_baseline if role == "baseline" else demo.predictions_kpsem
    demo_model = demo.baseline if role == "baseline" else demo.kpsem
    if (slot.source == "bundled demo" and chosen.data.source == "bundled demo" and chosen.data.split == demo.split
            and Path(slot.key[0]) == demo_model and bundled.is_file()):
        return TableSource(bundled, True, 0, role=role)
    path = predictions_path(chosen.settings.cache_dir, slot.key, chosen.data.key, clips)
    return TableSource(path, False, clips, role=role)


def probe_source(chosen: Selection, clips: int) -> StoredTable:
    """The demo's bundled table when the sidebar shows the demo, else a file in the disk cache named after the
    checkpoints, the data split and the settings (so a second visit reads it back)."""
    demo = chosen.demo
    bundled = demo.root / "probes.parquet"
    if (chosen.using_demo and chosen.data.split == demo.split and bundled.is_file()
            and Path(chosen.baseline.key[0]) == demo.baseline and Path(chosen.kpsem.key[0]) == demo.kpsem):
        return StoredTable(bundled, True, BUNDLED_PROBE_CLIPS)
    text = json.dumps([list(chosen.baseline.key), list(chosen.kpsem.key), [str(v) for v in chosen.data.key], clips,
                       list(PROBES), chosen.precision])
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    return StoredTable(chosen.settings.cache_dir / "probes" / f"probes-{digest}.parquet", False, clips)
