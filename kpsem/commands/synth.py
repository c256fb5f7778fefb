"""``python -m kpsem synth``: write the synthetic demo data set (class folders with train/val/test lists)."""

from __future__ import annotations

import argparse

HELP = "generate the synthetic motion data set (real video files, deterministic by seed)"


def _split(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(
            f"split must be three fractions like 0.6,0.2,0.2 (train,val,test); got {text!r}"
        )
    return values  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.data.synth import DIFFICULTIES, SYNTH_CLASSES, SynthConfig

    default = SynthConfig()
    parser.add_argument("--out", required=True,
                        help="folder to write (created; must be empty or an earlier synth output)")
    parser.add_argument("--classes", nargs="+", default=list(default.classes), metavar="NAME",
                        help=f"classes in label order (default: all): {', '.join(SYNTH_CLASSES)}")
    parser.add_argument("--videos-per-class", type=int, default=default.videos_per_class,
                        help=f"videos per class over all splits (default {default.videos_per_class})")
    parser.add_argument("--split", type=_split, default=default.split,
                        help="train,val,test fractions (default 0.6,0.2,0.2)")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help="at most this many training videos per class (fewer training clips)")
    parser.add_argument("--frames", type=int, default=default.frames,
                        help=f"frames per video (default {default.frames})")
    parser.add_argument("--size", type=int, default=default.size, help=f"frame side in pixels (default {default.size})")
    parser.add_argument("--difficulty", choices=list(DIFFICULTIES), default=default.difficulty)
    parser.add_argument("--seed", type=int, default=default.seed, help="same seed, same pixels (default 0)")
    parser.add_argument("--format", choices=["auto", "mp4", "avi", "jpg"], default="auto",
                        help="mp4 (H.264), avi (MJPEG), jpg (frame folders); auto = mp4 when PyAV has H.264")
    parser.add_argument("--fps", type=int, default=default.fps, help=f"frame rate of the files (default {default.fps})")
    parser.add_argument("--workers", type=int, default=0, help="processes (default: up to 2)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Generate, then print where it went and what it holds."""
    from kpsem.data.synth import SynthConfig, generate

    config = SynthConfig(
        classes=tuple(args.classes), videos_per_class=args.videos_per_class, frames=args.frames, size=args.size,
        difficulty=args.difficulty, seed=args.seed, split=args.split, train_per_class=args.train_per_class,
        fps=args.fps, format=args.format, workers=args.workers,
    )
    summary = generate(args.out, config, progress=not args.no_progress)
    counts = ", ".join(f"{n} {split}" for split, n in summary.counts.items())
    print(f"wrote {sum(summary.counts.values())} {summary.format} videos ({counts}) in "
          f"{len(summary.class_names)} classes to {summary.out_dir} in {summary.seconds:.1f} s")
    return 0
