"""The shared-server settings hold on the server: browse roots that name no folder, data sets that point
outside the roots, uploads checked by Streamlit's endpoint and again before they are written, upload
folders that go with their session or server, and a launcher that listens on loopback."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kpsem.app_support.choices.config import NO_ROOTS, PathNotAllowed, check_path, load_settings
from kpsem.app_support.choices.sources import UploadError, check_upload

ROOT = Path(__file__).resolve().parents[1]


def _plain(text: str) -> str:
    """An element's text without Markdown escapes (what the reader sees)."""
    return text.replace("\\", "")


def _errors(at) -> list[str]:
    assert not at.exception, [e.value for e in at.exception]  # never a traceback
    return [_plain(e.value) for e in at.error]


# --- browse roots that name no folder ----------------------------------------------------------------


@pytest.mark.parametrize("value", ["", ":", "   ", " : "])
def test_browse_roots_that_name_no_folder_open_no_typed_path(value: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = load_settings({"KPSEM_BROWSE_ROOTS": value})
    assert settings.browse_roots == () and settings.restricted
    with pytest.raises(PathNotAllowed) as refused:
        check_path(tmp_path, settings, what="data set folder")
    assert str(refused.value) == NO_ROOTS == (
        "this server opens no typed paths: its browse roots (KPSEM_BROWSE_ROOTS, or browse_roots in "
        ".streamlit/secrets.toml) name no folder; use the bundled demo or upload the file")
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[kpsem]\nbrowse_roots = ""\n')
    assert load_settings({}).browse_roots == ()  # the same from secrets.toml
    (tmp_path / ".streamlit" / "secrets.toml").write_text("[kpsem]\nmax_upload_mb = 5\n")
    assert load_settings({}).browse_roots is None  # not set anywhere: local use, no restriction
    assert check_path(tmp_path, load_settings({})) == tmp_path.resolve()


def test_the_app_with_empty_browse_roots_offers_the_demo_and_uploads_only(app, app_demo, monkeypatch) -> None:
    monkeypatch.setenv("KPSEM_BROWSE_ROOTS", "")
    at = app.run()
    assert not _errors(at)  # the bundled demo still works
    assert "Typed paths are off on this server: the bundled demo and uploads only" in [c.value for c in at.caption]
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").input(str(app_demo.clips)).run()
    assert _errors(at) == [NO_ROOTS]
    at.radio(key="baseline_source").set_value("path").run()
    at.text_input(key="baseline_path").input(str(app_demo.baseline)).run()
    assert _errors(at) == [NO_ROOTS, NO_ROOTS]


def test_a_refused_path_is_named_as_typed_not_where_its_links_lead(tmp_path: Path) -> None:
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    allowed.mkdir()
    secret.mkdir()
    (allowed / "link").symlink_to(secret)
    settings = load_settings({"KPSEM_BROWSE_ROOTS": str(allowed)})
    with pytest.raises(PathNotAllowed, match=f"^{allowed / 'link' / 'x.pt'} is outside the folders"):
        check_path(allowed / "link" / "x.pt", settings)


# --- a data set that points outside the roots --------------------------------------------------------


def _hostile_data_set(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A "folders" data set inside ``allowed`` whose list and folders lead outside it, to files that exist
    and to files that do not. Returns (allowed, data set root, the outside folder)."""
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    root = allowed / "ds"
    for folder in (root / "a", root / "b", secret / "stuff"):
        folder.mkdir(parents=True)
    for path in (root / "a" / "v1.mp4", secret / "s.mp4", secret / "stuff" / "t.mp4"):
        path.write_bytes(b"not decoded")
    (root / "a" / "link.mp4").symlink_to(secret / "s.mp4")  # a symlinked file, to one that exists
    (root / "b" / "dangling.mp4").symlink_to(secret / "nothere.mp4")  # ... and to one that does not
    (root / "c").symlink_to(secret / "stuff")  # a symlinked class folder
    (root / "classes.txt").write_text("a\nb\nc\n")
    (root / "test.txt").write_text(
        "a/v1.mp4\na/link.mp4\nb/dangling.mp4\n"
        "../../secret/s.mp4 0\n../../secret/missing.mp4 0\n"  # ../ to a file that exists, and to none
        f"{secret / 's.mp4'} 1\n{secret / 'zzz.mp4'} 1\n"  # absolute, both ways
        "b/none.mp4\n")
    return allowed, root, secret


def test_data_set_entries_leading_outside_the_roots_are_skipped_alike_whether_they_exist_or_not(
        tmp_path: Path, monkeypatch) -> None:
    from kpsem.data import datasets
    from kpsem.data.datasets import OUTSIDE_ROOTS, confined_to, open_dataset

    allowed, root, secret = _hostile_data_set(tmp_path)
    free = open_dataset(root, layout="folders")  # no roots: a local user may list what they like
    assert {str(v.path) for v in free.videos} >= {str(secret / "s.mp4"), str(root / "a" / "link.mp4")}

    probed = []
    monkeypatch.setattr(datasets, "probe_video", probed.append)
    with confined_to([allowed]):
        index = open_dataset(root, layout="folders", verify=True)
    assert [str(v.path) for v in index.videos] == [str(root / "a" / "v1.mp4")]
    assert probed == [root / "a" / "v1.mp4"]  # nothing outside was opened to be checked
    assert OUTSIDE_ROOTS == "outside the folders this server lets you open"
    assert index.skipped == [
        (str(root / "b" / "none.mp4"), "listed in test.txt line 8, not on disk"),  # inside, really missing
        *sorted((path, OUTSIDE_ROOTS) for path in (
            str(root / "../../secret/missing.mp4"), str(root / "../../secret/s.mp4"),  # missing / exists
            str(root / "a" / "link.mp4"), str(root / "b" / "dangling.mp4"),  # link to a file / to nothing
            str(secret / "s.mp4"), str(secret / "zzz.mp4"))),  # absolute: exists / missing
    ]

    (root / "test.txt").unlink()  # no list: every class folder; the symlinked one is refused, not listed
    with confined_to([allowed]):
        index = open_dataset(root, layout="folders")
    assert [str(v.path) for v in index.videos] == [str(root / "a" / "v1.mp4")]
    assert index.skipped == sorted((str(p), OUTSIDE_ROOTS) for p in (
        root / "a" / "link.mp4", root / "b" / "dangling.mp4", root / "c"))
    assert not any("t.mp4" in path for path, _ in index.skipped)  # what the outside folder holds stays unsaid


def test_an_annotation_file_leading_outside_is_refused_alike_whether_it_exists_or_not(tmp_path: Path) -> None:
    from kpsem.data import AnnotationError
    from kpsem.data.datasets import confined_to, open_dataset

    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    lists = allowed / "ucf" / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    secret.mkdir()
    (secret / "testlist01.txt").write_text("Jump/v_Jump_g01_c01.avi\n")
    (lists / "classInd.txt").write_text("1 Jump\n")
    for target in (secret / "testlist01.txt", secret / "absent.txt"):
        (lists / "testlist01.txt").unlink(missing_ok=True)
        (lists / "testlist01.txt").symlink_to(target)
        with confined_to([allowed]), pytest.raises(AnnotationError) as refused:
            open_dataset(allowed / "ucf", layout="ucf101")
        assert str(refused.value) == (f"annotation file {lists / 'testlist01.txt'} is outside the folders this "
                                      "server lets you open")


def test_the_sidebar_skips_what_a_data_set_points_at_outside_the_roots(app, tmp_path, monkeypatch) -> None:
    allowed, root, _ = _hostile_data_set(tmp_path)
    monkeypatch.setenv("KPSEM_BROWSE_ROOTS", str(allowed))
    at = app.run()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").input(str(root)).run()
    assert not at.exception
    captions = [_plain(c.value) for c in at.caption]
    assert any("**1** clips found, 7 skipped" in c for c in captions), captions
    assert sum(c.endswith(": outside the folders this server lets you open") for c in captions) == 6


# --- uploads ---------------------------------------------------------------------------------------------


def test_an_upload_is_checked_for_type_and_size_before_it_is_read() -> None:
    with pytest.raises(UploadError) as refused:
        check_upload("big.pt", 2 * 2**20 + 1, max_mb=2)
    assert str(refused.value) == "the uploaded file 'big.pt' is 2.0 MB; this server accepts at most 2 MB"
    with pytest.raises(UploadError) as refused:
        check_upload("tool.exe", 10, max_mb=2, types=("pt", "pth", "bin"))
    assert str(refused.value) == ("the uploaded file 'tool.exe' is not a .pt, .pth or .bin file; "
                                  "remove it and upload one of those")
    check_upload("Model.PT", 2 * 2**20, max_mb=2, types=("pt",))  # at the cap, any case: fine


def test_an_upload_of_a_type_the_box_does_not_take_gets_a_message_not_a_crash(app) -> None:
    # AppTest hands the file to the server as a client that skips the browser's type check would
    at = app.run()
    at.radio(key="baseline_source").set_value("upload").run()
    at.file_uploader(key="baseline_upload").upload("weights.exe", b"0" * 100).run()
    assert _errors(at) == ["the uploaded file 'weights.exe' is not a .pt, .pth, .tar, .ckpt or .bin file; "
                           "remove it and upload one of those"]
    assert at.radio(key="kpsem_source").value == "bundled demo"  # the rest of the page drew


def test_upload_folders_of_ended_sessions_and_killed_servers_are_swept(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from kpsem.app_support.choices import sources

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = sources.uploads_parent()
    assert parent == tmp_path / f"kpsem-uploads-{os.getuid()}" and (parent.stat().st_mode & 0o777) == 0o700
    live = sources.session_uploads("live-session")
    ended = sources.session_uploads("ended-session")
    (ended / "videos").mkdir()
    (ended / "videos" / "clip.mp4").write_bytes(b"x")
    gone = subprocess.Popen(["true"])  # a server that has exited
    gone.wait()
    other = subprocess.Popen(["sleep", "60"])  # another server that still runs
    try:
        other_stamp = sources._process_stamp(other.pid)
        for name in (f"{gone.pid}-{other_stamp}", f"{other.pid}-{other_stamp}",
                     f"{other.pid}-1",  # the PID of a server that died, now someone else's
                     "notes"):  # not a server's folder: left alone
            (parent / name / "session" / "checkpoints").mkdir(parents=True)
        removed = sources.sweep_uploads(lambda session: session == "live-session")
        assert sorted(p.name for p in removed) == sorted([ended.name, f"{gone.pid}-{other_stamp}", f"{other.pid}-1"])
        kept = sorted([live.parent.name, f"{other.pid}-{other_stamp}", "notes"])
        assert sorted(p.name for p in parent.iterdir()) == kept
        assert live.is_dir() and not ended.exists()
    finally:
        other.kill()
        other.wait()


# --- the real server ---------------------------------------------------------------------------------------


def _listening(port: int) -> set[str]:
    """The local addresses with a socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # host-order words
                found.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, words))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from /proc/net")
def test_the_app_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    from browser_harness import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    with open(tmp_path / "streamlit.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                                   "--server.port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not _listening(port) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _listening(port) == {"127.0.0.1"}, (tmp_path / "streamlit.log").read_text()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _fake_venv(tmp_path: Path) -> Path:
    """A venv for ./studio whose python runs kpsem for real but only prints how streamlit was started."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    stamp = hashlib.sha256(b"".join((ROOT / name).read_bytes()
                                    for name in ("requirements.txt", "constraints.txt", "pyproject.toml")))
    (venv / ".kpsem-installed").write_text(stamp.hexdigest() + "\n")  # "installed": no pip
    python = venv / "bin" / "python"
    python.write_text(f"""#!/usr/bin/env bash
if [ "$1 $2" = "-m streamlit" ]; then
  echo "ARGS: $*"; echo "UPLOAD CAP: ${{STREAMLIT_SERVER_MAX_UPLOAD_SIZE:-unset}}"; exit 0
fi
exec {sys.executable} "$@"
""")
    python.chmod(0o755)
    return venv


def test_studio_app_hands_the_upload_cap_to_streamlit_and_stops_on_a_bad_setting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "KPSEM_"))}
    env |= {"KPSEM_VENV": str(_fake_venv(tmp_path)), "KPSEM_MAX_UPLOAD_MB": "7", "HOME": str(tmp_path)}
    started = subprocess.run([str(ROOT / "studio"), "app", "--server.port", "8600"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines() == ["ARGS: -m streamlit run app.py --server.headless true --server.port 8600",
                                           "UPLOAD CAP: 7"]
    assert "kpsem studio: typed paths: any path this account can read" in started.stderr
    env |= {"KPSEM_MAX_UPLOAD_MB": "lots", "KPSEM_BROWSE_ROOTS": ""}
    refused = subprocess.run([str(ROOT / "studio"), "app"], env=env, cwd=tmp_path, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode == 2 and refused.stdout == ""  # streamlit never started
    assert refused.stderr.strip() == "kpsem studio: KPSEM_MAX_UPLOAD_MB must be a whole number of megabytes; got 'lots'"


@pytest.mark.browser
def test_the_server_refuses_uploads_the_browser_would_have_stopped_and_drops_them_with_the_session(
        app_demo, tmp_path: Path) -> None:
    """A real `streamlit run`: a client posting straight to Streamlit's upload endpoint with a valid session
    meets KPSEM_MAX_UPLOAD_MB; a file renamed on its way past the browser's type check gets a message;
    the session's upload folder goes when its tab closes, and a killed server's folder at the next start."""
    from browser_harness import chromium_page, served_app

    temp = tmp_path / "temp"
    uploads = temp / f"kpsem-uploads-{os.getuid()}"
    left_by_killed = uploads / "999999999-1" / "a-session"  # no such PID: that server is gone
    left_by_killed.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "KPSEM_"))}
    env |= {"KPSEM_MAX_UPLOAD_MB": "1", "TMPDIR": str(temp), "KPSEM_CACHE_DIR": str(tmp_path / "cache")}
    with served_app(tmp_path / "streamlit.log", env=env) as url, chromium_page() as page:
        puts = []
        page.on("request", lambda r: puts.append(r) if r.method == "PUT" and "/upload_file/" in r.url else None)
        page.goto(url, wait_until="domcontentloaded")
        sidebar = page.locator('[data-testid="stSidebar"]')
        baseline = sidebar.locator('[data-testid="stRadio"]', has_text="Baseline checkpoint")
        baseline.get_by_text("upload", exact=True).click()
        sidebar.locator('input[type="file"]').first.set_input_files(
            {"name": "small.pt", "mimeType": "application/octet-stream", "buffer": b"not a checkpoint" * 64})
        sidebar.get_by_text("truncated or not a PyTorch file").wait_for(timeout=60_000)
        assert not left_by_killed.parent.exists()  # swept at this server's first run
        stored = list(uploads.glob("*/*/checkpoints/*-small.pt"))
        assert len(stored) == 1, list(uploads.rglob("*"))
        session_folder = stored[0].parents[1]

        # straight to the endpoint, with the browser's session, cookie and XSRF token
        assert len(puts) == 1
        session_id = puts[0].url.split("/upload_file/")[1].split("/")[0]
        headers = {k: v for k, v in puts[0].all_headers().items() if k.lower() == "x-xsrftoken"}

        def put(size: int) -> int:
            response = page.request.put(f"{url}/_stcore/upload_file/{session_id}/hostile-{size}", headers=headers,
                                        multipart={"file": {"name": "big.pt", "mimeType": "application/octet-stream",
                                                            "buffer": b"0" * size}})
            return response.status

        assert put(100_000) == 204  # the session and token are good ...
        assert put(2 * 2**20) == 413  # ... and 2 MB is refused by Streamlit itself, as KPSEM_MAX_UPLOAD_MB says

        # a file renamed after the browser's type check: a message where the file was asked for
        def rename(route) -> None:
            body = route.request.post_data_buffer.replace(b'filename="evil1.pt"', b'filename="evil.exe"')
            route.continue_(post_data=body)

        page.route("**/_stcore/upload_file/**", rename)
        kpsem = sidebar.locator('[data-testid="stRadio"]', has_text="KPSEM checkpoint")
        kpsem.get_by_text("upload", exact=True).click()
        sidebar.locator('input[type="file"]').nth(1).set_input_files(
            {"name": "evil1.pt", "mimeType": "application/octet-stream", "buffer": b"x" * 100})
        sidebar.get_by_text("is not a .pt, .pth, .tar, .ckpt or .bin file").wait_for(timeout=60_000)
        assert "'evil.exe' is not a .pt" in sidebar.inner_text()
        assert page.locator('[data-testid="stException"]').count() == 0
        assert not list(session_folder.rglob("evil*"))  # never written

        page.close()  # the tab closes: the session ends and its uploads go
        deadline = time.monotonic() + 30
        while session_folder.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not session_folder.exists()
