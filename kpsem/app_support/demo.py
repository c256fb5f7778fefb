"""A stand-in for the bundled demo: a tiny synthetic clip set and two tiny, briefly trained models.

The trained demo (``assets/demo/``) is made by the training recipe and shipped with the app; until it
exists, and in tests and CI, this module writes a stand-in with the same files (see
:class:`~kpsem.app_support.config.DemoPaths`) in well under a minute on a CPU, every file a few
hundred kB at most::

    python -m kpsem.app_support.demo [--out DIR] [--force]

Without ``--out`` it writes to ``<cache>/demo-standin`` (:func:`standin_root`), where
:func:`resolve_demo` looks for it. Writing is guarded by a lock file, so two app sessions or test
workers starting at once build it only once.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kpsem.app_support.config import DEMO, DemoPaths, load_settings
from kpsem.io import atomic_write_text

__all__ = ["StandinConfig", "standin_root", "build_standin", "resolve_demo"]

STANDIN_VERSION = 1  # bump when the stand-in's contents change, so old caches are rebuilt


@dataclass(frozen=True)
class StandinConfig:
    """What the stand-in holds; small enough for CI, big enough to show every view."""

    classes: tuple[str, ...] = ("rise", "fall", "hop_cw", "hop_ccw")  # synth classes, label order
    videos_per_class: int = 10  # over all splits
    split: tuple[float, float, float] = (0.4, 0.2, 0.4)  # train, val, test: 4 / 2 / 4 videos per class
    frames: int = 32  # frames per video
    size: int = 64  # video side; the models read 16 x 64 x 64 clips
    clip_frames: int = 16  # frames per clip
    steps: int = 8  # SGD steps of the whole MFNet (MF-KPSEM then reuses its backbone)
    head_steps: int = 300  # Adam steps fitting each classifier on the frozen features
    eval_clips: int = 2  # clips per video in the predictions tables
    seed: int = 0


def standin_root() -> Path:
    """Where the stand-in lives: ``$KPSEM_DEMO_STANDIN`` or ``<cache dir>/demo-standin``."""
    if os.environ.get("KPSEM_DEMO_STANDIN"):
        return Path(os.environ["KPSEM_DEMO_STANDIN"]).expanduser().resolve()
    return load_settings().cache_dir / "demo-standin"


@contextmanager
def _lock(path: Path, timeout: float = 600.0) -> Iterator[None]:
    """An exclusive lock file (created atomically); a stale lock older than ``timeout`` is broken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            break
        except FileExistsError:
            try:
                if time.time() - path.stat().st_mtime > timeout:
                    path.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"waited {timeout:.0f} s for {path}; remove it if no build is running") from None
            time.sleep(0.2)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _train(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor, steps: int, seed: int) -> None:
    """A few SGD steps of the whole model on in-memory clips (N, 3, T, S, S)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(clips), (8,), generator=generator)
        loss = F.cross_entropy(model(clips[batch]), labels[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    model.eval()


def _fit_head(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor, steps: int) -> None:
    """Fit the classifier alone on the frozen features (one forward pass; cheap on a CPU)."""
    model.eval()
    with torch.no_grad():
        features = model.forward_head(model.forward_features(clips), pre_logits=True)  # (N, D)
    optimiser = torch.optim.Adam(model.classifier.parameters(), lr=0.01)
    for _ in range(steps):
        loss = F.cross_entropy(model.classifier(features), labels)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()


def build_standin(out: str | os.PathLike | None = None, config: StandinConfig | None = None, *,
                  force: bool = False, log: bool = False) -> DemoPaths:
    """Write the stand-in demo to ``out`` (default :func:`standin_root`) unless it is already there."""
    from kpsem import create_model
    from kpsem.checkpoint import save_checkpoint
    from kpsem.data import ClipDataset, open_dataset
    from kpsem.data.synth import SynthConfig, generate
    from kpsem.evaluate import evaluate_checkpoint

    config = config or StandinConfig()
    root = Path(out).resolve() if out is not None else standin_root()
    paths = DemoPaths.at(root, standin=True)
    stamp = root / "standin.json"
    wanted = json.loads(json.dumps({"version": STANDIN_VERSION, "config": asdict(config)}))  # tuples as lists

    def ready() -> bool:
        try:
            return json.loads(stamp.read_text()) == wanted and paths.has_models_and_clips() and \
                paths.predictions_baseline.is_file() and paths.predictions_kpsem.is_file()
        except (OSError, ValueError):
            return False

    if ready() and not force:
        return paths
    with _lock(root.parent / f".{root.name}.lock"):
        if ready() and not force:  # another process built it while we waited
            return paths
        started = time.perf_counter()
        stamp.unlink(missing_ok=True)
        synth = SynthConfig(classes=config.classes, videos_per_class=config.videos_per_class, frames=config.frames,
                            size=config.size, difficulty="easy", seed=config.seed, split=config.split, workers=1)
        generate(paths.clips, synth)
        index = open_dataset(paths.clips, split="train", layout="folders")
        data = ClipDataset(index, train=False, frames=config.clip_frames, size=config.size)
        items = [data[i] for i in range(len(data))]
        clips = torch.stack([item["clip"] for item in items])  # (N, 3, T, S, S)
        labels = torch.tensor([item["label"] for item in items])
        tiny = {"widths": (16, 32, 32, 64), "depths": (1, 1, 1, 1)}
        provenance = {"note": "stand-in demo: tiny MFNet after a few SGD steps; MF-KPSEM on its backbone, "
                              "classifiers fitted on frozen features",
                      "generator": "kpsem.app_support.demo", "steps": config.steps}
        torch.manual_seed(config.seed)
        baseline = create_model("mfnet", num_classes=len(config.classes), widths=tiny["widths"], depths=tiny["depths"])
        _train(baseline, clips, labels, config.steps, config.seed)
        _fit_head(baseline, clips, labels, config.head_steps)
        torch.manual_seed(config.seed + 1)
        ours = create_model("mf_kpsem", num_classes=len(config.classes), backbone=dict(tiny),
                            num_frames=config.clip_frames)
        backbone = {k: v for k, v in baseline.state_dict().items() if not k.startswith("classifier.")}
        ours.load_state_dict(backbone, strict=False)  # KPSEM and its wider classifier keep their init
        _fit_head(ours, clips, labels, config.head_steps)
        for model, path in ((baseline, paths.baseline), (ours, paths.kpsem)):
            save_checkpoint(path, model, class_names=list(index.class_names), clip_frames=config.clip_frames,
                            clip_size=config.size, provenance=provenance)
        for checkpoint, table in ((paths.baseline, paths.predictions_baseline), (paths.kpsem, paths.predictions_kpsem)):
            evaluate_checkpoint(checkpoint, data=paths.clips, split=paths.split, clips=config.eval_clips,
                                batch_size=8, workers=0, out=table)
        atomic_write_text(stamp, json.dumps(wanted, indent=2) + "\n")
        if log:
            print(f"stand-in demo written to {root} in {time.perf_counter() - started:.1f} s")
    return paths


def resolve_demo(*, build: bool = True) -> DemoPaths:
    """The trained demo when ``assets/demo/`` holds it, else the stand-in (built when missing)."""
    if DEMO.has_models_and_clips():
        return DEMO
    root = standin_root()
    if not build:
        return DemoPaths.at(root, standin=True)
    return build_standin(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write the app's stand-in demo (tiny models, tiny synthetic clips)")
    parser.add_argument("--out", default=None, help=f"folder (default: {standin_root()})")
    parser.add_argument("--force", action="store_true", help="rebuild even when it is up to date")
    args = parser.parse_args(argv)
    paths = build_standin(args.out, force=args.force, log=True)
    for name in ("baseline", "kpsem", "predictions_baseline", "predictions_kpsem"):
        path = getattr(paths, name)
        print(f"{name:22s} {path} ({path.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
