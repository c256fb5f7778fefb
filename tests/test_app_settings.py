"""Server settings (environment, then .streamlit/secrets.toml) and stopping a predictions computation."""

from __future__ import annotations

from pathlib import Path

import pytest

from kpsem.app_support.caching.predictions import CancelledError, compute_predictions
from kpsem.app_support.choices.config import load_settings


def test_settings_come_from_the_environment_then_secrets_then_defaults(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings({}).max_upload_mb == 200 and not load_settings({}).restricted  # no secrets: defaults
    (tmp_path / ".streamlit").mkdir()
    data = tmp_path / "data"
    (tmp_path / ".streamlit" / "secrets.toml").write_text(
        f'[kpsem]\nbrowse_roots = "{data}"\nmax_upload_mb = 50\ncache_dir = "{tmp_path / "cache"}"\n')
    from_secrets = load_settings({})
    assert from_secrets.browse_roots == (data.resolve(),) and from_secrets.max_upload_mb == 50
    assert from_secrets.cache_dir == (tmp_path / "cache").resolve()
    env = {"KPSEM_BROWSE_ROOTS": f"{tmp_path / 'a'}:{tmp_path / 'b'}", "KPSEM_MAX_UPLOAD_MB": "7"}
    from_env = load_settings(env)
    assert from_env.browse_roots == ((tmp_path / "a").resolve(), (tmp_path / "b").resolve())
    assert from_env.max_upload_mb == 7 and from_env.cache_dir == (tmp_path / "cache").resolve()  # secrets still fill in
    with pytest.raises(ValueError, match="KPSEM_MAX_UPLOAD_MB must be a whole number of megabytes; got 'lots'"):
        load_settings({"KPSEM_MAX_UPLOAD_MB": "lots"})
    (tmp_path / ".streamlit" / "secrets.toml").write_text("[kpsem\nbroken")  # unreadable: ignored, defaults
    assert load_settings({}).max_upload_mb == 200


def test_a_stopped_computation_raises_cancelled_and_saves_nothing(app_demo, tmp_path: Path) -> None:
    from kpsem.checkpoint import load_checkpoint
    from kpsem.data import open_dataset

    loaded = load_checkpoint(app_demo.baseline)
    index = open_dataset(app_demo.clips, split=app_demo.split)
    seen: list[tuple[int, int]] = []
    out = tmp_path / "predictions.parquet"
    with pytest.raises(CancelledError, match=f"stopped after 3 of {len(index.videos)} clips; nothing was saved"):
        compute_predictions(loaded.model, loaded.info, index, model_id="mfnet", out=out,
                            progress=lambda done, total: seen.append((done, total)),
                            should_stop=lambda: len(seen) >= 3)
    assert seen == [(1, len(index.videos)), (2, len(index.videos)), (3, len(index.videos))]
    assert not out.exists()


def test_the_compare_page_says_when_a_computation_was_stopped(page, app_demo, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy_mfnet.pt"  # a checkpoint without bundled predictions: the page offers to compute
    shutil.copy(app_demo.baseline, copy)
    at = page("compare").run()
    at.radio(key="baseline_source").set_value("path").run()
    at.text_input(key="baseline_path").input(str(copy)).run()
    at.session_state["_cmp_running"] = True  # what a Cancel click leaves behind: the run was interrupted
    at.run()
    assert not at.exception
    assert [w.value for w in at.warning] == ["The computation was stopped; nothing was saved."]
    assert not list((tmp_path / "cache" / "predictions").glob("*.parquet"))
    at.run()  # the note is shown once
    assert not at.warning
