"""Bad input never shows a traceback: a clear st.error, and the rest of the app keeps working."""

from __future__ import annotations

import re

from conftest import TINY_BACKBONE
from streamlit.testing.v1 import AppTest

from kpsem.app_support.drawing.text import escape_markdown


def _errors(at: AppTest) -> str:
    """The error messages as the user reads them (the app escapes Markdown in text from files)."""
    assert not at.exception, [e.value for e in at.exception]  # never a traceback
    return re.sub(r"\\(.)", r"\1", " | ".join(e.value for e in at.error))


def _explorer_still_works(at: AppTest) -> None:
    """Back to the demo checkpoints: the explorer draws both models again."""
    for role in ("baseline", "kpsem"):
        at.radio(key=f"{role}_source").set_value("bundled demo")
    at.radio(key="data_source").set_value("bundled demo").run()
    if at.radio(key="ex_source").value != "data set":
        at.radio(key="ex_source").set_value("data set").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]


def test_checkpoint_path_that_does_not_exist(app, tmp_path):
    at = app.run()
    at.radio(key="baseline_source").set_value("path").run()
    at.text_input(key="baseline_path").input(str(tmp_path / "missing.pt")).run()
    assert "missing.pt does not exist" in _errors(at)
    assert any("Baseline checkpoint" in w.value for w in at.warning)  # the explorer says what is missing
    for page in ("pages/compare.py", "pages/models.py"):
        at.switch_page(page).run()
        _errors(at)
    at.switch_page("pages/explorer.py").run()
    _explorer_still_works(at)


def test_corrupt_checkpoint_upload(page):
    at = page("explorer").run()
    at.radio(key="kpsem_source").set_value("upload").run()
    at.file_uploader(key="kpsem_upload").upload("weights.pt", b"this is not a checkpoint" * 50).run()
    assert "truncated or not a PyTorch file" in _errors(at)
    assert "weights.pt" in _errors(at) and "kpsem-uploads" not in _errors(at)  # the user's name, not the copy's
    _explorer_still_works(at)


def test_checkpoint_of_another_clip_size_is_refused_plainly(page, app_demo, tmp_path):
    import kpsem
    from kpsem.checkpoint import describe_checkpoint, save_checkpoint

    info = describe_checkpoint(app_demo.kpsem)
    other = kpsem.create_model("mfnet", num_classes=info.num_classes, **TINY_BACKBONE)
    path = save_checkpoint(tmp_path / "other.pt", other, class_names=info.class_names, clip_frames=8, clip_size=32)
    at = page("explorer").run()
    at.radio(key="baseline_source").set_value("path").run()
    at.text_input(key="baseline_path").input(str(path)).run()
    assert "read different clips" in _errors(at)
    _explorer_still_works(at)


def test_corrupt_video_upload(page):
    at = page("explorer").run()
    at.radio(key="ex_source").set_value("upload").run()
    at.file_uploader(key="ex_upload").upload("clip.mp4", b"\x00\x00\x00\x18ftypmp42 garbage" * 100).run()
    assert "Could not read the clip" in _errors(at) and "clip.mp4" in _errors(at)
    assert "kpsem-uploads" not in _errors(at)
    _explorer_still_works(at)


def test_video_upload_plays(page, app_demo, monkeypatch):
    from kpsem.app_support.caching import uploads

    written = []
    real_save = uploads.save_upload
    monkeypatch.setattr(uploads, "save_upload",
                        lambda *args, **kwargs: written.append(args[1]) or real_save(*args, **kwargs))
    truth = (app_demo.clips / "classes.txt").read_text().split()[-1]
    video = next((app_demo.clips / truth).iterdir())
    at = page("explorer").run()
    at.radio(key="ex_source").set_value("upload").run()
    at.file_uploader(key="ex_upload").upload(video.name, video.read_bytes()).run()
    assert not _errors(at)
    assert [s.value for s in at.subheader][:2] == ["MFNet", "MF-KPSEM"]
    at.selectbox(key="ex_upload_truth").set_value(truth).run()
    assert f"**true label**: {escape_markdown(truth)}" in " ".join(m.value for m in at.markdown)
    at.slider(key="frame").set_value(5).run()
    assert not _errors(at) and "(cached)" in next(c.value for c in at.caption if c.value.startswith("Device "))
    assert written == [video.name]  # written once, not again on every rerun


def test_paths_outside_the_allowed_roots(page, app_demo, tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    monkeypatch.setenv("KPSEM_BROWSE_ROOTS", str(allowed))
    at = page("explorer").run()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").input(str(app_demo.clips)).run()
    assert "outside the folders this server lets you open" in _errors(at)
    at.text_input(key="data_path").input(str(allowed / ".." / "..")).run()  # no escape through ..
    assert "outside the folders" in _errors(at)
    at.radio(key="baseline_source").set_value("path").run()
    at.text_input(key="baseline_path").input(str(app_demo.baseline)).run()
    assert "outside the folders" in _errors(at)
    assert any("Paths are limited to" in c.value for c in at.caption)
    (allowed / "link").symlink_to(app_demo.root)  # nor through a symlink inside a root
    at.text_input(key="baseline_path").input(str(allowed / "link" / "mfnet.pt")).run()
    assert "outside the folders" in _errors(at)
    _explorer_still_works(at)


def test_upload_over_the_size_cap(page, monkeypatch):
    monkeypatch.setenv("KPSEM_MAX_UPLOAD_MB", "1")
    at = page("explorer").run()
    at.radio(key="baseline_source").set_value("upload").run()
    at.file_uploader(key="baseline_upload").upload("big.pt", b"0" * (2 * 2**20)).run()
    assert "accepts at most 1 MB" in _errors(at)
    _explorer_still_works(at)


def test_bad_predictions_table(page, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    at = page("compare").run()
    at.radio(key="cmp_source").set_value("Parquet files").run()
    at.text_input(key="cmp_path_baseline").input(str(bad)).run()
    at.text_input(key="cmp_path_kpsem").input(str(tmp_path / "absent.parquet")).run()
    errors = _errors(at)
    assert "not a Parquet predictions table" in errors or "does not exist" in errors
    at.radio(key="cmp_source").set_value("the sidebar's checkpoints and data set").run()
    assert not _errors(at) and len(at.metric) == 6


def test_data_set_folder_that_is_not_a_data_set(page, tmp_path):
    (tmp_path / "empty").mkdir()
    at = page("explorer").run()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").input(str(tmp_path / "empty")).run()
    assert "cannot tell the layout" in _errors(at)
    assert any("Choose a data set in the sidebar" in i.value for i in at.info)
    _explorer_still_works(at)


def test_concurrent_analyses_share_models_safely(app_demo):
    """Two threads analysing with the same cached models get the results of serial runs."""
    import threading

    import numpy as np

    from kpsem.app_support.caching import services
    from kpsem.app_support.choices.sources import file_key
    from kpsem.checkpoint import describe_checkpoint

    info = describe_checkpoint(app_demo.kpsem)
    clips = [file_key(next((app_demo.clips / c).iterdir())) for c in ("rise", "hop_cw")]
    keys = (file_key(app_demo.baseline), file_key(app_demo.kpsem))
    settings = dict(frames=info.clip_frames, size=info.clip_size, mean=tuple(info.mean), std=tuple(info.std),
                    target=None, weighting="slice")
    results: dict[int, object] = {}

    def work(i: int) -> None:
        run, _ = services.analyse(*keys, "cpu", clips[i], cam_layer="conv4", **settings)
        results[i] = run.pair

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    model = services.load_model(keys[1], "cpu").model
    assert not any(m._forward_hooks for m in model.modules())  # every Grad-CAM hook was removed
    assert all(p.grad is None for p in model.parameters())  # and no gradient was left on shared weights
    from kpsem.explain.analysis import analyse_pair

    for i, clip in enumerate(clips):
        sample = services.clip_sample(clip, info.clip_frames, info.clip_size, tuple(info.mean), tuple(info.std))
        base = services.load_model(keys[0], "cpu").model
        serial = analyse_pair(base, model, sample.clips[:1], cam_layer="conv4", weighting="slice")
        np.testing.assert_allclose(results[i].kpsem.cam_raw, serial.kpsem.cam_raw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(results[i].baseline.probs, serial.baseline.probs, rtol=1e-5, atol=1e-7)


def test_missing_bundled_demo_says_how_to_restore_it(page, tmp_path, monkeypatch):
    from kpsem.app_support.caching import services
    from kpsem.app_support.choices.config import DemoPaths

    monkeypatch.setattr(services, "DEMO", DemoPaths.at(tmp_path / "demo"))  # a trimmed checkout
    at = page("explorer").run()
    message = f"the bundled demo is missing from {tmp_path / 'demo'} (its checkpoints or clips): restore it with"
    assert _errors(at).count(message) == 3  # both checkpoints and the data set, each in its own box
    assert "git checkout -- assets/demo" in _errors(at)
