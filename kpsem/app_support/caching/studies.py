"""Study folders for the Design studies page, read once per change of their report files."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from kpsem.study import StudyFolder, read_study

__all__ = ["REPORT_FILES", "read_study_folder"]

REPORT_FILES = ("plan.json", "results.csv", "table2.csv", "fig5_design.png")  # what a study writes as it goes


def read_study_folder(folder: Path) -> StudyFolder:
    """The study folder's contents, read again when one of its report files changed (size or time)."""
    return _read(str(folder), _stamp(folder))


@st.cache_data(max_entries=8, show_spinner="reading the study ...")
def _read(folder: str, stamp: tuple[tuple, ...]) -> StudyFolder:
    """``stamp`` only renews the cache."""
    return read_study(folder)


def _stamp(folder: Path) -> tuple[tuple, ...]:
    return tuple((n, p.stat().st_size, p.stat().st_mtime_ns) if (p := folder / n).is_file() else (n,)
                 for n in REPORT_FILES)
