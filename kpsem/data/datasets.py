"""Indexes of the data set layouts users already have (SPEC section 4), without decoding a video.

``open_dataset(root, split=...)`` returns a :class:`DatasetIndex`: one :class:`VideoRecord` per usable
entry of the split, the class names (label i is ``class_names[i]``), and every entry it skipped with
the reason (listed in the annotations but missing on disk, or unreadable when ``verify=True``).
A malformed annotation file is not skipped: it raises :class:`AnnotationError` naming file and line,
because a silently shorter split would give wrong accuracies.

HMDB51 and UCF101 have no validation split and Something-Something v1 publishes no test labels;
there ``val`` uses the test list (HMDB, UCF) and ``test`` the validation list (SSv1), and the index
says so in ``notes``.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from kpsem.data.video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, VideoError, probe_video

__all__ = [
    "AnnotationError",
    "VideoRecord",
    "DatasetIndex",
    "LAYOUTS",
    "SPLITS",
    "detect_layout",
    "open_dataset",
    "confined_to",
    "OUTSIDE_ROOTS",
]

log = logging.getLogger(__name__)

LAYOUTS = ("hmdb51", "ucf101", "kinetics", "ssv1", "folders")
SPLITS = ("train", "val", "test")
_SPLIT_DIRS = {"train": ("train", "training"), "val": ("val", "validate", "validation", "valid"),
               "test": ("test", "testing")}
_SSV1_PREFIX = "something-something-v1"


class AnnotationError(ValueError):
    """An annotation file that is missing or malformed; the message names the file (and line)."""


@dataclass
class VideoRecord:
    """One entry of a split."""

    path: Path  # a video file or a folder of JPEG frames
    label: int  # index into DatasetIndex.class_names
    video_id: str  # unique within the data set: the path relative to the video root, without extension


@dataclass
class DatasetIndex:
    """A split of a data set, ready for :class:`kpsem.data.ClipDataset`."""

    videos: list[VideoRecord]  # usable entries, in annotation order
    class_names: list[str]  # label i is class_names[i]
    layout: str  # one of LAYOUTS
    split: str  # the split asked for: "train", "val" or "test"
    root: Path  # the data set root given to open_dataset
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of entries left out
    notes: list[str] = field(default_factory=list)  # substitutions made (e.g. val -> test list), for logs

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.videos)

    def summary(self) -> str:
        """One line for logs and the app: layout, split, sizes, skips, notes."""
        text = (f"{self.layout} {self.split}: {len(self.videos)} videos in {len(self.class_names)} classes "
                f"from {self.root}, {len(self.skipped)} skipped")
        if self.skipped:
            path, reason = self.skipped[0]
            text += f" (first: {path}: {reason})"
        return text + "".join(f"; {note}" for note in self.notes)

# ---------------------------------------------------------------------------------------------- confinement

OUTSIDE_ROOTS = "outside the folders this server lets you open"  # one reason, whether the target exists or not
_ROOTS: ContextVar[tuple[tuple[Path, ...], tuple[Path, ...]] | None] = ContextVar("kpsem_data_roots", default=None)


@contextmanager
def confined_to(roots: Iterable[str | os.PathLike] | None) -> Iterator[None]:
    """Inside this block the readers below list no folder and read no file outside ``roots`` (None: no limit).

    Entries that lead outside (absolute paths or ``..`` in annotation files, symlinked class folders or
    files) are skipped with :data:`OUTSIDE_ROOTS` whether or not what they name exists, so an index tells
    nothing about the disk outside. A context rather than a parameter: every layout reads through the
    same few helpers, so the check sits there once instead of in each reader.
    """
    if roots is None:
        yield
        return
    given = tuple(Path(os.path.normpath(os.path.abspath(r))) for r in roots)
    token = _ROOTS.set((given, tuple(r.resolve() for r in given)))
    try:
        yield
    finally:
        _ROOTS.reset(token)


def _outside(path: str | os.PathLike) -> bool:
    """Under :func:`confined_to`: whether ``path`` leaves the roots as written (``..``) or through symlinks."""
    limits = _ROOTS.get()
    if limits is None:
        return False
    given, resolved = limits
    written = Path(os.path.normpath(os.path.abspath(path)))
    try:
        real = Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return True
    return not (any(written.is_relative_to(r) for r in given + resolved)
                and any(real.is_relative_to(r) for r in resolved))


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False outside the roots (never asked of the disk there)."""
    return not _outside(path) and path.is_dir()


def _drop_outside(index: DatasetIndex) -> None:
    """Under :func:`confined_to`: entries found or listed outside the roots move to ``skipped``.

    Found and missing ones get the same reason and go, sorted, after the other skips: neither the reason
    nor the order says which of them exist.
    """
    if _ROOTS.get() is None:
        return
    videos, skipped, outside = [], [], []
    for record in index.videos:
        if _outside(record.path):
            outside.append(str(record.path))
        else:
            videos.append(record)
    for path, reason in index.skipped:
        if _outside(path):
            outside.append(path)
        else:
            skipped.append((path, reason))
    index.videos, index.skipped = videos, skipped + [(path, OUTSIDE_ROOTS) for path in sorted(outside)]


# ---------------------------------------------------------------------------------------------- helpers


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank lines of an annotation file."""
    if _outside(path):
        raise AnnotationError(f"annotation file {path} is {OUTSIDE_ROOTS}")
    if not path.is_file():
        raise AnnotationError(f"annotation file {path} not found; pass annotations=<folder or file> "
                              "pointing at the data set's split files")
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        return [(n, line.strip()) for n, line in enumerate(handle, 1) if line.strip()]


def _bad_line(path: Path, number: int, line: str, expected: str) -> AnnotationError:
    return AnnotationError(f"{path}, line {number}: expected {expected}; got {line!r}")


def _scan(folder: Path) -> dict[str, bool]:
    """Names in ``folder`` -> whether each is a folder (one scandir; {} when it does not exist or lies
    outside the roots). A symlink leading outside counts as a folder whatever it points at, so a listing
    never tells an outside file from an outside folder or from nothing."""
    if _outside(folder):
        return {}
    try:
        with os.scandir(folder) as entries:
            return {e.name: (e.is_symlink() and _outside(e.path)) or e.is_dir()
                    for e in entries if not e.name.startswith(".")}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def _is_clip_name(name: str, is_dir: bool) -> bool:
    return is_dir or os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


class _Resolver:
    """Finds listed videos on disk (a file, or a frame folder named after its stem), one scandir per folder."""

    def __init__(self, video_root: Path) -> None:
        self.video_root = video_root
        self._cache: dict[Path, dict[str, bool]] = {}

    def find(self, relative: str) -> Path | None:
        path = self.video_root / relative
        listing = self._cache.setdefault(path.parent, _scan(path.parent))
        if path.name in listing:
            return path
        stem = os.path.splitext(path.name)[0]
        if listing.get(stem):  # frames extracted to <class>/<video stem>/
            return path.with_name(stem)
        return None


def _video_id(path: Path, video_root: Path) -> str:
    relative = path.relative_to(video_root) if path.is_relative_to(video_root) else Path(path.name)
    text = relative.as_posix()
    stem, ext = os.path.splitext(text)
    return stem if ext.lower() in VIDEO_EXTENSIONS else text


def _search_dirs(root: Path, annotations: Path | None, extra: tuple[str, ...] = ()) -> list[Path]:
    """Where annotation files may live: ``annotations``, else root, its named helpers, its sub-folders."""
    if annotations is not None:
        annotations = Path(annotations)
        if _outside(annotations) or not annotations.exists():
            raise AnnotationError(f"annotations path {annotations} does not exist")
        return [annotations if annotations.is_dir() else annotations.parent]
    dirs = [root, *(root / name for name in extra if _is_dir(root / name))]
    return dirs + [root / name for name, is_dir in sorted(_scan(root).items()) if is_dir and not name.isdigit()]


def _find_file(dirs: list[Path], pattern: str) -> Path | None:
    regex = re.compile(pattern, re.IGNORECASE)
    for folder in dirs:
        names = sorted(name for name, is_dir in _scan(folder).items() if not is_dir and regex.fullmatch(name))
        if names:
            return folder / names[0]
    return None


def _video_root(root: Path, first_class: str, candidates: tuple[str, ...] = ()) -> Path:
    """``root``, or the sub-folder of root that holds the class folders (e.g. UCF-101/)."""
    if _is_dir(root / first_class):
        return root
    for name in candidates + tuple(sorted(n for n, d in _scan(root).items() if d)):
        if _is_dir(root / name / first_class):
            return root / name
    return root


def _eval_split(split: str, layout: str, notes: list[str], *, val_as: str = "test") -> str:
    if split == "val" and val_as == "test":
        notes.append(f"{layout} has no validation split; val uses the test list")
        return "test"
    return split


# ---------------------------------------------------------------------------------------------- HMDB51

_HMDB_SUFFIX = "_test_split{}.txt"


def _hmdb_split_dir(root: Path, annotations: Path | None, split_id: int) -> Path | None:
    pattern = r".+" + re.escape(_HMDB_SUFFIX.format(split_id))
    dirs = _search_dirs(root, annotations)
    found = _find_file(dirs, pattern)
    if found is None and annotations is None:  # e.g. root/testTrainMulti_7030_splits/ inside a helper folder
        for folder in dirs[1:]:
            found = _find_file(_search_dirs(folder, None)[1:], pattern)
            if found:
                break
    return found.parent if found else None


def _open_hmdb51(root: Path, split: str, split_id: int, annotations: Path | None) -> DatasetIndex:
    notes: list[str] = []
    wanted = {"train": "1", "test": "2"}[_eval_split(split, "hmdb51", notes)]
    folder = _hmdb_split_dir(root, annotations, split_id)
    if folder is None:
        raise AnnotationError(f"no HMDB51 split files (<class>{_HMDB_SUFFIX.format(split_id)}) under {root}; "
                              "pass annotations=<folder with the split files>")
    suffix = _HMDB_SUFFIX.format(split_id)
    files = sorted(p for p in folder.iterdir() if p.name.endswith(suffix))
    class_names = [p.name[: -len(suffix)] for p in files]
    video_root = _video_root(root, class_names[0])
    resolver = _Resolver(video_root)
    videos, skipped = [], []
    for label, (name, path) in enumerate(zip(class_names, files)):
        for number, line in _lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise _bad_line(path, number, line, "'<video> <id>' with id 0 (unused), 1 (train) or 2 (test)")
            if parts[1] != wanted:
                continue
            found = resolver.find(f"{name}/{parts[0]}")
            if found is None:
                skipped.append((str(video_root / name / parts[0]), f"listed in {path.name} line {number}, not on disk"))
                continue
            videos.append(VideoRecord(found, label, _video_id(found, video_root)))
    return DatasetIndex(videos, class_names, "hmdb51", split, root, skipped, notes)


# ---------------------------------------------------------------------------------------------- UCF101


def _open_ucf101(root: Path, split: str, split_id: int, annotations: Path | None) -> DatasetIndex:
    notes: list[str] = []
    list_kind = _eval_split(split, "ucf101", notes)
    class_file = _find_file(_search_dirs(root, annotations, ("ucfTrainTestlist",)), r"classInd\.txt")
    if class_file is None:
        raise AnnotationError(f"UCF101 classInd.txt not found under {root} (expected ucfTrainTestlist/classInd.txt); "
                              "pass annotations=<the ucfTrainTestlist folder>")
    class_names: list[str] = []
    for number, line in _lines(class_file):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(class_names) + 1:
            raise _bad_line(class_file, number, line, f"'<index> <class>' with index {len(class_names) + 1}")
        class_names.append(parts[1])
    if not class_names:  # every later step needs a class; say so here rather than fail on the first lookup
        raise AnnotationError(f"{class_file} lists no classes (it is empty or blank); expected lines "
                              "'<index> <class>' from 1 to 101: restore it from UCF101's ucfTrainTestlist")
    labels = {name.lower(): i for i, name in enumerate(class_names)}
    list_file = class_file.parent / f"{list_kind}list{split_id:02d}.txt"
    video_root = _video_root(root, class_names[0], ("UCF-101", "UCF101"))
    resolver = _Resolver(video_root)
    videos, skipped = [], []
    for number, line in _lines(list_file):
        parts = line.split()
        relative = parts[0] if parts else ""
        class_part = relative.split("/")[0].lower() if "/" in relative else ""
        if not 1 <= len(parts) <= 2 or class_part not in labels or (len(parts) == 2 and not parts[1].isdigit()):
            raise _bad_line(list_file, number, line, "'<Class>/<video>.avi [label]' with a class from classInd.txt")
        label = labels[class_part]
        if len(parts) == 2 and int(parts[1]) - 1 != label:
            raise _bad_line(list_file, number, line, f"label {label + 1} for class {class_names[label]}")
        found = resolver.find(relative)
        if found is None:
            skipped.append((str(video_root / relative), f"listed in {list_file.name} line {number}, not on disk"))
            continue
        videos.append(VideoRecord(found, label, _video_id(found, video_root)))
    return DatasetIndex(videos, class_names, "ucf101", split, root, skipped, notes)


# ---------------------------------------------------------------------------------------------- Kinetics

_KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


def _split_dir(root: Path, split: str) -> Path | None:
    for name in _SPLIT_DIRS[split]:
        if _is_dir(root / name):
            return root / name
    return None


def _kinetics_csvs(root: Path, annotations: Path | None) -> list[Path]:
    if annotations is not None and not _outside(annotations) and Path(annotations).is_file():
        return [Path(annotations)]
    found = []
    for folder in _search_dirs(root, annotations, ("annotations",))[:2 if annotations is None else 1]:
        for name, is_dir in sorted(_scan(folder).items()):
            if is_dir or not name.lower().endswith(".csv"):
                continue
            if _csv_header(folder / name)[:2] == ["label", "youtube_id"]:
                found.append(folder / name)
    return found


def _csv_header(path: Path) -> list[str]:
    if _outside(path):
        raise AnnotationError(f"annotation file {path} is {OUTSIDE_ROOTS}")
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        return [cell.strip().lower() for cell in handle.readline().split(",")]


def _csv_for_split(csvs: list[Path], split: str) -> Path | None:
    keys = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}[split]
    named = [p for p in csvs if any(k in p.stem.lower() for k in keys)]
    if named:
        return named[0]
    return csvs[0] if len(csvs) == 1 else None  # one file with a split column


def _kinetics_rows(path: Path, split: str | None) -> list[tuple[int, str, str]]:
    """(line, label, file stem) of the rows of a Kinetics CSV (of ``split`` when it has a split column)."""
    header = _csv_header(path)
    missing = [c for c in _KINETICS_COLUMNS if c not in header]
    if missing:
        raise AnnotationError(f"{path}, line 1: Kinetics CSV header needs {','.join(_KINETICS_COLUMNS)}[,split]; "
                              f"missing {', '.join(missing)}")
    col = {name: header.index(name) for name in header}
    rows = []
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        for number, cells in enumerate(csv.reader(handle), 1):
            if number == 1 or not any(c.strip() for c in cells):
                continue
            try:
                label, ytid = cells[col["label"]].strip(), cells[col["youtube_id"]].strip()
                start, end = int(float(cells[col["time_start"]])), int(float(cells[col["time_end"]]))
                row_split = cells[col["split"]].strip().lower() if "split" in col else None
            except (IndexError, ValueError):
                raise _bad_line(path, number, ",".join(cells), "label,youtube_id,time_start,time_end[,split]") from None
            if not label or not ytid:
                raise _bad_line(path, number, ",".join(cells), "a non-empty label and youtube_id")
            if split is not None and row_split is not None and row_split not in _SPLIT_DIRS[split]:
                continue
            rows.append((number, label, f"{ytid}_{start:06d}_{end:06d}"))
    return rows


def _walk_clips(folder: Path) -> dict[str, Path]:
    """file stem -> path of every video file below ``folder``."""
    found: dict[str, Path] = {}
    if _outside(folder):
        return found
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        # a symlinked folder leading outside is listed like a file (then refused), as _scan does
        for name in filenames + [d for d in dirnames if _outside(os.path.join(dirpath, d))]:
            stem, ext = os.path.splitext(name)
            if ext.lower() in VIDEO_EXTENSIONS:
                found.setdefault(stem, Path(dirpath) / name)
    return found


def _open_kinetics(root: Path, split: str, annotations: Path | None) -> DatasetIndex:
    csvs = _kinetics_csvs(root, annotations)
    if csvs:
        return _open_kinetics_csv(root, split, csvs)
    split_dir = _split_dir(root, split)
    if split_dir is None:
        raise AnnotationError(f"Kinetics root {root} has neither a {'/'.join(_SPLIT_DIRS[split])} folder nor CSV "
                              "annotations (label,youtube_id,time_start,time_end,split); pass annotations=<csv>")
    split_dirs = [d for s in SPLITS if (d := _split_dir(root, s)) is not None]
    class_names = sorted({name for d in split_dirs for name, is_dir in _scan(d).items() if is_dir})
    return _index_class_folders(root, split_dir, class_names, "kinetics", split)


def _open_kinetics_csv(root: Path, split: str, csvs: list[Path]) -> DatasetIndex:
    path = _csv_for_split(csvs, split)
    if path is None:
        raise AnnotationError(f"no Kinetics CSV for split {split!r} among {[p.name for p in csvs]}; "
                              "name it e.g. kinetics400_val.csv or pass annotations=<csv>")
    train_csv = _csv_for_split(csvs, "train")
    rows = _kinetics_rows(path, split)
    class_rows = _kinetics_rows(train_csv, "train") if train_csv not in (None, path) else rows
    class_names = sorted({label for _, label, _ in class_rows} | {label for _, label, _ in rows})
    labels = {name: i for i, name in enumerate(class_names)}
    video_root = _split_dir(root, split) or root
    on_disk = _walk_clips(video_root)
    videos, skipped = [], []
    for number, label, stem in rows:
        found = on_disk.get(stem) or on_disk.get(stem[:-14])  # <ytid>_<start>_<end>, else <ytid>
        if found is None:
            skipped.append((str(video_root / f"{stem}.mp4"), f"listed in {path.name} line {number}, not on disk"))
            continue
        videos.append(VideoRecord(found, labels[label], _video_id(found, video_root)))
    return DatasetIndex(videos, class_names, "kinetics", split, root, skipped, [f"annotations: {path}"])


# ---------------------------------------------------------------------------------------------- SSv1


def _open_ssv1(root: Path, split: str, annotations: Path | None) -> DatasetIndex:
    notes: list[str] = []
    dirs = _search_dirs(root, annotations, ("annotations", "labels"))
    labels_file = _find_file(dirs, re.escape(_SSV1_PREFIX) + r"-labels\.csv")
    if labels_file is None:
        raise AnnotationError(f"{_SSV1_PREFIX}-labels.csv not found under {root}; pass annotations=<its folder>")
    class_names = [line for _, line in _lines(labels_file)]
    if len(set(class_names)) != len(class_names):
        raise AnnotationError(f"{labels_file}: a label appears twice; one label per line expected")
    if split == "test":
        notes.append("something-something-v1 publishes no test labels; test uses the validation list")
    list_file = labels_file.parent / f"{_SSV1_PREFIX}-{'train' if split == 'train' else 'validation'}.csv"
    labels = {name: i for i, name in enumerate(class_names)}
    frames_root = root
    for name in ("20bn-something-something-v1", "frames", "rawframes"):
        if _is_dir(root / name):
            frames_root = root / name
    listing = _scan(frames_root)
    videos, skipped = [], []
    for number, line in _lines(list_file):
        video, sep, label = line.partition(";")
        if not sep or not video.strip() or label.strip() not in labels:
            raise _bad_line(list_file, number, line, f"'<id>;<label>' with a label from {labels_file.name}")
        video = video.strip()
        if not listing.get(video):
            skipped.append((str(frames_root / video), f"listed in {list_file.name} line {number}, no frame folder"))
            continue
        videos.append(VideoRecord(frames_root / video, labels[label.strip()], video))
    return DatasetIndex(videos, class_names, "ssv1", split, root, skipped, notes)


# ---------------------------------------------------------------------------------------------- folders


def _index_class_folders(root: Path, video_root: Path, class_names: list[str], layout: str, split: str,
                         notes: list[str] | None = None) -> DatasetIndex:
    videos, skipped = [], []
    for label, name in enumerate(class_names):
        if _outside(video_root / name):  # a symlinked class folder (or a class named ../x): not listed
            skipped.append((str(video_root / name), OUTSIDE_ROOTS))
            continue
        for entry, is_dir in sorted(_scan(video_root / name).items()):
            if _is_clip_name(entry, is_dir):
                path = video_root / name / entry
                videos.append(VideoRecord(path, label, _video_id(path, video_root)))
            elif os.path.splitext(entry)[1].lower() not in (*IMAGE_EXTENSIONS, ".txt", ".json", ".csv"):
                skipped.append((str(video_root / name / entry), "not a video file or frame folder"))
    return DatasetIndex(videos, class_names, layout, split, root, skipped, notes or [])


def _open_folders(root: Path, split: str, annotations: Path | None) -> DatasetIndex:
    dirs = _search_dirs(root, annotations)[:1]
    classes_file = _find_file(dirs, r"classes\.txt") or _find_file([root], r"classes\.txt")
    if classes_file is not None:
        class_names = [line for _, line in _lines(classes_file)]
    else:
        class_names = sorted(name for name, is_dir in _scan(root).items() if is_dir)
    if not class_names:
        raise AnnotationError(f"{root} has no class sub-folders; expected <root>/<class>/<video>")
    list_file = _find_file(dirs, re.escape(split) + r"\.txt") or _find_file([root], re.escape(split) + r"\.txt")
    if list_file is None:
        note = f"no {split}.txt list in {root}; the split holds every video of every class folder"
        return _index_class_folders(root, root, class_names, "folders", split, [note])
    labels = {name: i for i, name in enumerate(class_names)}
    resolver = _Resolver(root)
    videos, skipped = [], []
    for number, line in _lines(list_file):
        relative, _, label_text = line.rpartition(" ") if " " in line else (line, "", "")
        relative = relative.strip()
        folder_label = labels.get(relative.split("/")[0]) if "/" in relative else None
        if label_text:
            if not label_text.isdigit() or int(label_text) >= len(class_names):
                expected = f"'<class>/<video> <label>' with label in 0..{len(class_names) - 1}"
                raise _bad_line(list_file, number, line, expected)
            label = int(label_text)
            if folder_label is not None and folder_label != label:
                raise _bad_line(list_file, number, line, f"label {folder_label} for folder {class_names[folder_label]}")
        elif folder_label is not None:
            label = folder_label
        else:
            raise _bad_line(list_file, number, line, "'<class>/<video> [label]' with a known class folder")
        found = resolver.find(relative)
        if found is None:
            skipped.append((str(root / relative), f"listed in {list_file.name} line {number}, not on disk"))
            continue
        videos.append(VideoRecord(found, label, _video_id(found, root)))
    return DatasetIndex(videos, class_names, "folders", split, root, skipped, [])


# ---------------------------------------------------------------------------------------------- entry points


def _has_hmdb_splits(root: Path) -> bool:
    return _hmdb_split_dir(root, None, 1) is not None


def detect_layout(root: str | os.PathLike) -> str:
    """Which of LAYOUTS ``root`` looks like, from its annotation files and folder names."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set root {root} does not exist or is not a folder")
    listing = _scan(root)
    ucf_classes = root / "ucfTrainTestlist" / "classInd.txt"
    if (not _outside(ucf_classes) and ucf_classes.is_file()) or "classInd.txt" in listing:
        return "ucf101"
    helpers = [root] + [root / n for n in ("annotations", "labels") if listing.get(n)]
    if any(_find_file([d], re.escape(_SSV1_PREFIX) + r"-labels\.csv") for d in helpers):
        return "ssv1"
    if _split_dir(root, "train") or _split_dir(root, "val") or _kinetics_csvs(root, None):
        return "kinetics"
    if _has_hmdb_splits(root):
        return "hmdb51"
    if any(is_dir for is_dir in listing.values()):
        return "folders"
    raise AnnotationError(
        f"cannot tell the layout of {root}: no class sub-folders and no known annotation files; "
        f"pass layout= one of {', '.join(LAYOUTS)}"
    )


def open_dataset(
    root: str | os.PathLike,
    *,
    split: str = "test",
    layout: str | None = None,
    split_id: int = 1,
    annotations: str | os.PathLike | None = None,
    verify: bool = False,
) -> DatasetIndex:
    """Index ``split`` of the data set at ``root``.

    layout: one of LAYOUTS, or None to detect it. split_id: 1..3 for HMDB51 and UCF101's three splits.
    annotations: the folder (or CSV file) with the split files when they are not under ``root``.
    verify: probe every video (container header only) and move unusable ones to ``skipped``.
    """
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if layout is None:
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)} (or None to detect); got {layout!r}")
    elif not root.is_dir():
        raise FileNotFoundError(f"data set root {root} does not exist or is not a folder")
    if layout in ("hmdb51", "ucf101") and split_id not in (1, 2, 3):
        raise ValueError(f"{layout} has splits 1, 2 and 3; got split_id={split_id}")
    ann = Path(annotations) if annotations is not None else None
    if layout == "hmdb51":
        index = _open_hmdb51(root, split, split_id, ann)
    elif layout == "ucf101":
        index = _open_ucf101(root, split, split_id, ann)
    elif layout == "kinetics":
        index = _open_kinetics(root, split, ann)
    elif layout == "ssv1":
        index = _open_ssv1(root, split, ann)
    else:
        index = _open_folders(root, split, ann)
    index.split = split
    _drop_outside(index)  # before verify: nothing outside the roots is ever opened
    if verify:
        usable = []
        for record in index.videos:
            try:
                probe_video(record.path)
                usable.append(record)
            except VideoError as error:
                index.skipped.append((str(record.path), str(error)))
        index.videos = usable
    for path, reason in index.skipped:
        log.info("skipped %s: %s", path, reason)
    if not index.videos:
        log.warning("%s", index.summary())
    return index
