"""``python -m kpsem explain``: every per-clip figure (Fig. 8, 9, 10, Table 1) for a pair of checkpoints."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "Grad-CAM, key points and top-k of a baseline and an MF-KPSEM checkpoint on one clip: Fig. 8, 9, 10, Table 1"
_started = [time.perf_counter()]  # when the command started: reset by starting(), which kpsem.cli calls first
EXIT_AT_ONCE = True  # kpsem.cli: end the process without the interpreter's teardown (see kpsem.cli._exit_at_once)


def _given(words: Sequence[str], option: str) -> str:
    """The value of ``option`` in raw command-line words ("--out x" or "--out=x"), or "?"."""
    for i, word in enumerate(words):
        if word == option and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return "?"


def starting(words: Sequence[str]) -> str:
    """The first line, printed before anything heavy is imported (see :func:`kpsem.cli.main`)."""
    _started[0] = time.perf_counter()
    baseline, kpsem, clip, out = (_given(words, o) for o in ("--baseline", "--kpsem", "--clip", "--out"))
    return (f"kpsem explain: {baseline} and {kpsem} on {clip}, figures to {out}; importing PyTorch, Grad-CAM "
            "and matplotlib ...")


def _step(text: str) -> None:
    """One progress line, flushed at once, with the seconds since the command started."""
    print(f"[{time.perf_counter() - _started[0]:5.1f} s] {text}", flush=True)


def _frames(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"frames must be comma-separated clip frame numbers, e.g. "
                                         f"0,5,10,15; got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kpsem.commands._precision import add_precision_argument
    from kpsem.explain.cli_options import add_style_arguments
    from kpsem.names import CAM_LAYERS

    parser.add_argument("--baseline", required=True, help="baseline checkpoint (MFNet)")
    parser.add_argument("--kpsem", required=True, help="MF-KPSEM checkpoint (an MFNet one works: no key points then)")
    parser.add_argument("--clip", required=True,
                        help="a video file or frame folder, or a .npy of uint8 frames (T, S, S, 3) already cropped")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--clip-index", type=int, default=0, help="which of --num-clips evenly "
                        "spaced clips (default 0)")
    parser.add_argument("--num-clips", type=int, default=1, help="clips spread over the video (default 1: the middle)")
    parser.add_argument("--start", type=float, default=None, help="seconds into the video where the clip starts: "
                        "a window of a long video (instead of --clip-index and --num-clips)")
    parser.add_argument("--video", action="store_true", help="also write explained.mp4: the clip frame by frame, "
                        "both models' Grad-CAM on one scale, their difference and the key points (H.264)")
    parser.add_argument("--cam-layer", default="tail", choices=CAM_LAYERS, help="Grad-CAM layer (default tail)")
    parser.add_argument("--weighting", choices=("clip", "slice"), default="clip",
                        help="one weight per channel (clip) or per channel and time slice (slice)")
    parser.add_argument("--target", default=None, help="class index or name to explain (default: "
                        "each model's prediction)")
    parser.add_argument("--true-class", default=None, help="the clip's true class (index or name), if known: the "
                        "difference figure explains it; without it, --target; without both, the class the two "
                        "models together find most probable")
    parser.add_argument("--frames", type=_frames, default=None, help="clip frames to show, e.g. "
                        "0,5,10,15 (default: 4 evenly)")
    parser.add_argument("--sets", type=_frames, default=[0], help="KPSEM sets to draw in Fig. 10 (default 0)")
    parser.add_argument("--top-channels", type=int, default=5, help="channels drawn per set (default 5)")
    parser.add_argument("--arrow-scale", type=float, default=1.0, help="multiply shift arrows by this (default 1)")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, cuda or cuda:N "
                        "(default auto)")
    parser.add_argument("--jobs", type=int, default=None, help="processes drawing the figures (default: 2 where "
                        "the machine has two cores or more and can fork, else 1)")
    add_precision_argument(parser, extra_help="; every figure's JSON sidecar records it")
    add_style_arguments(parser)


def _target(text: str | None, class_names: list[str], option: str = "--target") -> int | None:
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    if text not in class_names:
        raise ValueError(f"{option} {text!r} is neither a class index nor one of the model's classes "
                         f"({', '.join(class_names[:8])}{' ...' if len(class_names) > 8 else ''})")
    return class_names.index(text)


def _load_clip(path: str, frames: int, size: int, mean: tuple[float, ...], std: tuple[float, ...],
               num_clips: int, clip_index: int, start: float | None = None) -> tuple[object, object, dict]:
    """(clip (1, 3, T, S, S), display uint8 (T, S, S, 3), facts for the sidecar)."""
    import numpy as np
    import torch

    if not 0 <= clip_index < num_clips:
        raise ValueError(f"--clip-index {clip_index} is outside 0..{num_clips - 1} (--num-clips {num_clips})")
    if path.endswith(".npy"):
        display = np.load(path)
        if display.dtype != np.uint8 or display.ndim != 4 or display.shape[1:] != (size, size, 3):
            raise ValueError(f"{path} holds {display.dtype} {display.shape}; expected uint8 frames "
                             f"(T, {size}, {size}, 3)")
        if display.shape[0] != frames:
            raise ValueError(f"{path} holds {display.shape[0]} frames; the checkpoints take {frames}-frame clips")
        rgb = torch.from_numpy(display).permute(3, 0, 1, 2).float() / 255  # (3, T, S, S)
        mean_t, std_t = torch.tensor(mean).view(3, 1, 1, 1), torch.tensor(std).view(3, 1, 1, 1)
        return ((rgb - mean_t) / std_t)[None], display, {"source": "npy"}
    from kpsem.data import load_clip

    first = None
    if start is not None:  # seconds -> the window's first frame, refused past the last window that fits
        if num_clips != 1 or clip_index != 0:
            raise ValueError("--start chooses one clip's window; leave out --num-clips and --clip-index")
        from kpsem.data import probe_video
        from kpsem.data.sampling import clip_span

        info = probe_video(path)
        last = max(0, info.num_frames - clip_span(frames))
        first = int(start * info.fps + 0.5) if start >= 0 else -1
        if not 0 <= first <= last:
            raise ValueError(f"--start {start:g} s is outside this {info.num_frames / info.fps:.2f} s video's clip "
                             f"windows: a {frames}-frame clip can start at 0 … {last / info.fps:.2f} s")
    sample = load_clip(path, frames=frames, size=size, num_clips=num_clips, mean=mean, std=std, start=first)
    facts = {"source": "video", "frame_indices": [int(i) for i in sample.indices[clip_index]], "fps": sample.fps,
             "frame_times": [float(t) for t in sample.times[clip_index]] if sample.times else None,
             "num_frames": sample.num_frames, "original_size": list(sample.original_size),
             "crop_box": list(sample.crop_box), "resize_scale": sample.resize_scale}
    return sample.clips[clip_index:clip_index + 1], sample.display[clip_index], facts


def _check_out(out: Path) -> None:
    """--out is a folder: refuse a path that is, or lies inside, an existing file."""
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                what = "is an existing file" if path == out else f"lies inside {path}, an existing file"
                raise ValueError(f"--out {out} {what}; --out names a folder for the figures: choose a new or "
                                 "existing folder")
            return


def _jobs(jobs: int | None) -> int:
    """--jobs, or the default: two drawing processes where the machine has two cores or more."""
    if jobs is None:
        return 2 if (os.cpu_count() or 1) >= 2 else 1
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1; got {jobs}")
    return jobs


@dataclass
class _Inputs:
    """What every step after the checkpoints shares: the models, the clip and the options that style it."""

    args: argparse.Namespace
    base: Any  # LoadedCheckpoint of the baseline
    ours: Any  # LoadedCheckpoint of the MF-KPSEM model
    device: Any  # torch.device
    precision: Any  # kpsem.precision.Precision
    style: Any  # FigureStyle
    clip: Any = None  # (1, 3, T, S, S) normalised
    display: Any = None  # (T, S, S, 3) uint8
    facts: dict = field(default_factory=dict)  # the clip's frames and times, for the sidecars

    @property
    def class_names(self) -> list[str]:
        return self.ours.info.class_names

    def analyse(self, model: Any, target: int | None) -> Any:
        """One model's ClipAnalysis of the clip (for the difference's class); float32 CAMs, as in _analyse."""
        from kpsem.explain.analysis import analyse_clip

        args = self.args
        with self.precision.autocast():
            return analyse_clip(model, self.clip.to(self.device), target=target, cam_layer=args.cam_layer,
                                weighting=args.weighting, class_names=self.class_names)


def _load(args: argparse.Namespace) -> _Inputs:
    """Check the options, load both checkpoints and decode the clip (progress: loading, decoding)."""
    from kpsem.checkpoint import load_checkpoint
    from kpsem.commands._precision import announce, precision_from_args
    from kpsem.distributed import pick_device
    from kpsem.explain.cli_options import style_from_args
    from kpsem.pairing import require_pair

    _check_out(Path(args.out))  # before minutes of analysis, not when the first figure is written
    style = style_from_args(args)
    device = pick_device(0, args.device)
    _jobs(args.jobs)  # refused before the work, not after it
    precision = announce(device, precision_from_args(args), what="explaining in ")
    _step(f"loading the checkpoints on {device}")
    base, ours = load_checkpoint(args.baseline, map_location=device), load_checkpoint(args.kpsem, map_location=device)
    for note in require_pair(base.info, ours.info, task="explain").warnings:
        print(f"note: {note}", file=sys.stderr)
    inputs = _Inputs(args, base, ours, device, precision, style)
    ki = ours.info
    _step(f"decoding a {ki.clip_frames}x{ki.clip_size}x{ki.clip_size} clip of {args.clip}")
    inputs.clip, inputs.display, inputs.facts = _load_clip(args.clip, ki.clip_frames, ki.clip_size, tuple(ki.mean),
                                                           tuple(ki.std), args.num_clips, args.clip_index, args.start)
    return inputs


def _analyse(inputs: _Inputs, target: int | None) -> Any:
    """Both models on the clip, each explaining ``target`` (default: its own prediction): a PairAnalysis."""
    from kpsem.explain.analysis import analyse_pair

    args = inputs.args
    _step(f"analysing the clip with both models (forward, Grad-CAM at {args.cam_layer}, key points)")
    with inputs.precision.autocast():  # Grad-CAM and KPSEM's internals come out float32
        return analyse_pair(inputs.base.model, inputs.ours.model, inputs.clip.to(inputs.device), target=target,
                            cam_layer=args.cam_layer, weighting=args.weighting, class_names=inputs.class_names)


def _retarget(inputs: _Inputs, pair: Any, common: Any) -> Any:
    """The pair with both CAMs explaining ``common``'s class, for the difference figure: a difference of two
    CAMs only means something for one class. Only a model whose CAM explains another class runs again."""
    from kpsem.explain.analysis import combine_pair

    if common.explains(pair):
        return pair
    analyses = []
    for model, analysis in ((inputs.base.model, pair.baseline), (inputs.ours.model, pair.kpsem)):
        if analysis.target != common.index:
            _step(f"analysing {analysis.model_name} again for the difference's class {common.name!r}")
            fresh = inputs.analyse(model, common.index)
            fresh.model_name = analysis.model_name  # as analyse_pair named it
            analysis = fresh
        analyses.append(analysis)
    return combine_pair(*analyses)


def _first_figures(forks: Any, inputs: _Inputs, pair: Any, names: tuple[str, str]) -> Any:
    """Queue Fig. 8, Fig. 9 and (MF-KPSEM) Fig. 10, which the first analysis is enough for; returns the
    key point options (None without KPSEM) for the video."""
    from kpsem.explain.draw import KeyPointOptions
    from kpsem.explain.figures import figure_gradcam, figure_keypoints, figure_top_predictions

    args, style, display = inputs.args, inputs.style, inputs.display
    forks.add(lambda: figure_top_predictions([pair], [display[len(display) // 2]], names=names, style=style))
    forks.add(lambda: figure_gradcam(pair, display, frames=args.frames, names=names, style=style), weight=2)
    if not pair.kpsem.has_kpsem:
        print(f"note: {args.kpsem} is an MFNet checkpoint without KPSEM; Fig. 10 (key points) is not drawn")
        return None
    points = KeyPointOptions(sets=tuple(args.sets), top_channels=args.top_channels, arrow_scale=args.arrow_scale)
    forks.add(lambda: figure_keypoints(pair.kpsem, display, frames=args.frames, options=points, name=names[1],
                                       style=style))
    return points


def _difference_figure(inputs: _Inputs, diff_pair: Any, common: Any, names: tuple[str, str]) -> Callable[[], Any]:
    """Fig. 9 with the difference row, for ``common``'s class."""
    def build() -> Any:  # PaperFigure
        from kpsem.explain.figures import figure_gradcam

        figure = figure_gradcam(diff_pair, inputs.display, frames=inputs.args.frames, difference_row=True,
                                common=common, names=names, style=inputs.style)
        figure.name = "fig9_gradcam_difference"
        return figure

    return build


def _cost_figure(inputs: _Inputs, names: tuple[str, str]) -> Callable[[], Any]:
    """Table 1's builder: it counts both models' parameters and multiply-adds (a forward pass each) and draws
    the table. Why counting in the builder: queued before the analysis, the figure's process counts and draws
    while this one imports grad-cam, which keeps one core busy."""
    def build() -> Any:  # PaperFigure
        import torch

        from kpsem.explain.figures import figure_cost_table
        from kpsem.profile import model_cost

        if multiprocessing.parent_process() is not None:
            # A forked child: one thread (OpenMP's threads in the parent were not forked with it), and the
            # multiply-adds are counted, not timed.
            torch.set_num_threads(1)
        info = inputs.ours.info
        clip_shape = (info.clip_frames, info.clip_size, info.clip_size)
        costs = [model_cost(inputs.base.model, name=names[0], clip=clip_shape),
                 model_cost(inputs.ours.model, name=names[1], clip=clip_shape)]
        return figure_cost_table(costs, style=inputs.style)

    return build


def _video(inputs: _Inputs, pair: Any, diff_pair: Any, names: tuple[str, str], points: Any) -> Path:
    """--video: explained.mp4, the clip frame by frame with both CAMs, their difference and the key points."""
    from kpsem.explain.video import explanation_video_bytes, frame_captions
    from kpsem.io import atomic_write_bytes

    _step("drawing and encoding the clip as a video (explained.mp4, H.264)")
    display, facts, style = inputs.display, inputs.facts, inputs.style
    captions = frame_captions(len(display), facts.get("frame_indices"), facts.get("frame_times"))
    data = explanation_video_bytes(pair, display, difference=diff_pair, names=names, captions=captions,
                                   keypoints=points, cmap=style.cmap, difference_cmap=style.difference_cmap)
    path = Path(inputs.args.out) / "explained.mp4"
    atomic_write_bytes(path, data)
    return path


def _sidecar_extra(inputs: _Inputs) -> dict:
    """What every figure's JSON sidecar and analysis.json record about the run."""
    args = inputs.args
    facts = {"baseline": str(args.baseline), "kpsem": str(args.kpsem), "clip": str(args.clip),
             "clip_index": args.clip_index, "num_clips": args.num_clips, "start": args.start,
             "clip_facts": inputs.facts, "argv": sys.argv[1:]}
    return {"inputs": facts, "precision": inputs.precision.as_dict()}


def _summary(out: Path, pair: Any, common: Any, extra: dict) -> Path:
    """analysis.json, and each model's prediction and the difference's class on the terminal."""
    from kpsem.io import atomic_write_text

    summary = {"baseline": pair.baseline.summary(), "kpsem": pair.kpsem.summary(), "shared_cam_max": pair.shared_scale,
               "difference_target": common.as_dict(), **extra}
    atomic_write_text(out / "analysis.json", json.dumps(summary, indent=2, default=str) + "\n")
    for name, analysis in (("baseline", pair.baseline), ("kpsem", pair.kpsem)):
        top = analysis.topk[0]
        print(f"{name}: {analysis.model_name} predicts {top.name} ({top.probability:.1%})")
    print(f"Fig. 9 with a difference row: {common.message()}")
    return out / "analysis.json"


def _passive_openmp() -> None:
    """OpenMP threads that sleep, not spin, while they wait, unless the user chose (OMP_WAIT_POLICY).

    Why: explain's drawing processes run beside its PyTorch work (Table 1 from the start, Fig. 8-10 during
    the difference's analysis), and libgomp's threads spin between parallel regions, taking the cores those
    processes need; on a loaded 2-core machine the spinning also burned about 5 s of CPU per run
    (benchmarks/bench_explain.py). Only before PyTorch is loaded: OpenMP reads the variable once."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(args: argparse.Namespace) -> int:
    """Analyse the clip with both models and write every per-clip figure to --out.

    Each figure is drawn, in a forked process, as soon as what it shows exists: Table 1 (counted in its own
    process) while grad-cam is imported and the clip analysed, Fig. 8, 9 and 10 while the difference's class
    is analysed (see kpsem.explain.forks)."""
    _passive_openmp()
    from kpsem.explain.analysis import common_target
    from kpsem.explain.cli_options import formats_from_args, names_from_args
    from kpsem.explain.forks import FigureForks, save_figure

    inputs = _load(args)
    target = _target(args.target, inputs.class_names)
    true_label = _target(args.true_class, inputs.class_names, "--true-class")
    names = names_from_args(args, infos=(inputs.base.info, inputs.ours.info))  # every figure's model names
    out, formats, extra = Path(args.out), formats_from_args(args), _sidecar_extra(inputs)
    with FigureForks(save_figure(out, formats, extra), _jobs(args.jobs)) as forks:
        forks.add(_cost_figure(inputs, names))  # needs only the models: forked now, where forking is on
        pair = _analyse(inputs, target)
        common = common_target(pair.baseline.probs, pair.kpsem.probs, inputs.class_names, true_label=true_label,
                               chosen=target, model_names=names)
        points = _first_figures(forks, inputs, pair, names)
        diff_pair = _retarget(inputs, pair, common)
        forks.add(_difference_figure(inputs, diff_pair, common, names), weight=3)
        _step("counting parameters and multiply-adds (Table 1) " + (
            "in the process drawing it, since the checkpoints loaded" if forks.forking else "as it is drawn"))
        _step(f"drawing {forks.count} figures as {', '.join(formats)}")
        written = forks.finish()
    if args.video:
        written.append(_video(inputs, pair, diff_pair, names, points))
    written.append(_summary(out, pair, common, extra))
    _step(f"wrote {len(written)} files to {out}")
    return 0
