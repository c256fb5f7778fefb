"""Design studies: a plan's variants x seeds through :func:`kpsem.train.train` and
:func:`kpsem.evaluate.evaluate_checkpoint`, then Table 2 and Fig. 5 of the paper from what they measured.

A plan (TOML or JSON; shipped ones in ``kpsem/plans/``) names a baseline, default seeds, the evaluation
protocol, a ``base`` of settings every variant starts from and a list of variants, each a set of
overrides: :class:`~kpsem.train.TrainConfig` fields (``arch``, ``lr``, ...) or MF-KPSEM options
(``num_regions``, ``num_sets``, ...) written flat, e.g. ``{arch = "mf_kpsem", num_regions = 1}``.

A study folder holds ``plan.json`` (the plan as resolved), ``runs/<variant>/seed_<n>/`` (a training run
folder plus ``predictions.parquet``/``.json`` and ``done.json``), ``results.csv``/``.parquet`` (one row per
finished run: :data:`RESULT_COLUMNS`), ``table2.csv``/``.md``/``.json`` and ``fig5_design.*``.

Resuming: a run is finished when its ``final.pt``, its predictions table and its ``done.json`` (written
atomically, last) all exist, and is then never redone. A run with ``final.pt`` but no marker is evaluated
again, not trained; any other run goes back to ``train`` with ``resume="auto"`` (train's own resume, bit
for bit). Under ``torchrun`` every rank walks the same list of runs (rank 0 decides what each needs and
tells the others), trains and evaluates it together, and only rank 0 writes.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
import re
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kpsem.distributed import DistInfo, barrier, current, pick_device
from kpsem.evaluate import EvalResult, evaluate_checkpoint, read_predictions
from kpsem.explain.compare import compare_predictions, paired_significance
from kpsem.explain.significance import (
    ALPHA,
    PairedSignificance,
    bootstrap_difference,
    format_p,
    summarise_runs,
)
from kpsem.io import atomic_path, atomic_write_text
from kpsem.train import TrainConfig, build_model, train

if TYPE_CHECKING:
    from kpsem.explain.figures import FigureStyle

__all__ = [
    "PlanError",
    "Variant",
    "Plan",
    "StudyConfig",
    "StudyResult",
    "StudyFolder",
    "DesignTable",
    "Panel",
    "RESULT_COLUMNS",
    "MODEL_OPTIONS",
    "PANELS",
    "shipped_plans",
    "load_plan",
    "parse_plan",
    "select_variants",
    "skipped_variants",
    "run_config",
    "run_state",
    "run_study",
    "collect_results",
    "design_table",
    "design_panels",
    "write_reports",
    "read_study",
]

PLAN_FORMAT = "kpsem-study-plan/1"  # stored in plan.json
DONE_FORMAT = "kpsem-study-run/1"  # stored in each run's done.json
# MF-KPSEM options a plan may set flat beside TrainConfig fields (MFKPSEMConfig less what train sets itself).
MODEL_OPTIONS = ("insert_after", "num_regions", "num_sets", "embed_dim", "centre_hidden", "fixed_regions",
                 "fixed_seed", "gradient", "soft_temperature", "mask_sharpness")
# TrainConfig fields the study command sets for every run; a plan that set them would be overruled.
RESERVED_KEYS = ("data", "out", "seed", "resume", "split_id", "layout", "annotations", "model_options", "progress")
# TrainConfig fields that change how a run is carried out but not what it computes: a finished run made with
# other values still counts (workers, device, logging, checkpoint keeping, memory layout, evaluation batch).
_VOLATILE_FIELDS = frozenset({"resume", "progress", "workers", "device", "log_every", "save_every",
                              "keep_checkpoints", "eval_batch_size", "memory_format", "out"})
_PLAN_KEYS = ("name", "description", "baseline", "seeds", "eval_split", "eval_clips", "base", "variants")
_VARIANT_KEYS = ("name", "label", "overrides", "baseline", "requires")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # variant names are folder names

RESULT_COLUMNS: dict[str, str] = {
    "variant": "the plan's variant name",
    "label": "the variant's name in Table 2 and Fig. 5",
    "arch": "registered model",
    "seed": "training seed",
    "split": "official split number of the data set (HMDB51 / UCF101: 1-3)",
    "eval_split": "split evaluated ('test')",
    "videos": "videos evaluated",
    "clips_per_video": "clips per video; a video's score is the mean softmax over them",
    "top1": "video-level top-1 accuracy (a fraction)",
    "top5": "video-level top-5 accuracy",
    "mean_class_accuracy": "mean over the classes present of each class's video-level top-1",
    "clip_top1": "clip-level top-1 accuracy",
    "parameters": "learnable parameters of the trained model",
    "macs": "multiply-adds for one clip (frames x size x size), PyTorch's FlopCounterMode / 2",
    "epochs": "epochs trained",
    "train_seconds": "wall time of the training steps, summed over epochs (and over resumed sessions)",
    "eval_seconds": "wall time of the final evaluation",
    "wall_seconds": "train_seconds + eval_seconds",
    "run": "the run's folder, relative to the study folder",
}

# Fig. 5's panels: (MF-KPSEM option on the x axis, panel title, axis label).
PANELS: tuple[tuple[str, str, str], ...] = (
    ("insert_after", "(a) position of KPSEM", "KPSEM after"),
    ("num_regions", "(b) regions per frame", "K"),
    ("num_sets", "(c) sets of AReSE", "G"),
    ("embed_dim", "(d) embedding width", "d_e"),
)


class PlanError(ValueError):
    """A plan, or a choice of its variants, that cannot run; the message names the plan and the fault."""


@dataclass(frozen=True)
class Variant:
    """One row of Table 2 / one point of Fig. 5: settings over the plan's base."""

    name: str  # unique in the plan; the run folder's name
    label: str  # shown in Table 2 and Fig. 5
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields and MF-KPSEM options
    baseline: str | None = None  # variant it is compared with (None: the plan's baseline)
    requires: str | None = None  # what it needs that a build may lack; such a variant is skipped, not refused


@dataclass(frozen=True)
class Plan:
    """A design study: which variants, on which seeds, evaluated how."""

    name: str  # the plan's name (a shipped plan's file stem)
    description: str  # one line for listings
    baseline: str  # the variant every other is compared with unless it names its own
    seeds: tuple[int, ...]  # seeds run unless the command names others
    eval_split: str  # split the final evaluation reads ("test")
    eval_clips: int  # clips per video of the final evaluation
    base: dict[str, Any]  # settings every variant starts from (model options apply to MF-KPSEM variants)
    variants: tuple[Variant, ...]  # in the order of Table 2
    source: str = ""  # file it was read from

    def variant(self, name: str) -> Variant:
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise PlanError(f"plan {self.name!r} has no variant {name!r}; its variants: {self.variant_names()}")

    def variant_names(self) -> str:
        return ", ".join(v.name for v in self.variants)

    def arch_of(self, variant: Variant) -> str:
        """The registered model a variant trains."""
        return str({**self.base, **variant.overrides}.get("arch", TrainConfig.arch))

    def baseline_of(self, variant: Variant) -> str | None:
        """The variant ``variant`` is compared with; None for the plan's baseline itself."""
        if variant.baseline is not None:
            return variant.baseline
        return None if variant.name == self.baseline else self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "name": self.name, "description": self.description,
                "baseline": self.baseline, "seeds": list(self.seeds), "eval_split": self.eval_split,
                "eval_clips": self.eval_clips, "base": _plain(self.base), "source": self.source,
                "variants": [{"name": v.name, "label": v.label, "overrides": _plain(v.overrides),
                              "baseline": v.baseline, "requires": v.requires} for v in self.variants]}


@dataclass
class StudyConfig:
    """What ``kpsem study`` was asked to do; the plan says the rest."""

    plan: str  # a shipped plan's name or the path of a plan file
    data: str  # data set root
    out: str  # study folder
    split_id: int = 1  # official split (HMDB51 / UCF101)
    seeds: tuple[int, ...] | None = None  # None: the plan's seeds
    only: tuple[str, ...] | None = None  # variants to run (None: all); the reports cover every finished run
    init: str | None = None  # checkpoint every variant starts from (overrides the plan's)
    layout: str | None = None  # data set layout (None: detect)
    annotations: str | None = None  # annotation file or folder when not in the standard place
    device: str | None = None  # None: the plan's, else "auto"
    workers: int | None = None  # data loader processes (None: the plan's)
    eval_clips: int | None = None  # clips per test video (None: the plan's)
    resamples: int = 10_000  # bootstrap resamples behind Table 2's intervals
    progress: bool = True  # train's and evaluate's progress bars and a line per run (rank 0)


@dataclass
class StudyResult:
    out: Path  # study folder
    ran: list[tuple[str, int]]  # (variant, seed) trained or evaluated in this call
    reused: list[tuple[str, int]]  # runs found finished and left alone
    skipped: dict[str, str]  # variant -> why it cannot run in this build
    results: pd.DataFrame  # every finished run of the plan (RESULT_COLUMNS)
    written: list[Path]  # report files


# --- plans ----------------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """JSON-safe copy (tuples to lists)."""
    return json.loads(json.dumps(value))


def shipped_plans() -> dict[str, Path]:
    """Name -> file of the plans shipped in ``kpsem/plans``."""
    folder = resources.files("kpsem") / "plans"
    found = {}
    for entry in folder.iterdir():
        name = str(entry.name)
        if name.endswith((".toml", ".json")) and not name.startswith("."):
            found[name.rsplit(".", 1)[0]] = Path(str(entry))
    return dict(sorted(found.items()))


def load_plan(spec: str | Path) -> Plan:
    """A shipped plan by name, or a plan file by path (``.toml`` or ``.json``), checked (:func:`parse_plan`)."""
    shipped = shipped_plans()
    text_spec = str(spec)
    if text_spec in shipped:
        path = shipped[text_spec]
    else:
        path = Path(spec)
        if not path.is_file():
            raise PlanError(f"no plan {text_spec!r}: give a shipped plan ({', '.join(shipped)}) or the path of a "
                            ".toml or .json plan file")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise PlanError(f"plan file {path} is not valid {path.suffix.lstrip('.').upper() or 'TOML'}: {error}") from None
    return parse_plan(data, default_name=path.stem, source=str(path))


def parse_plan(data: dict[str, Any], *, default_name: str = "plan", source: str = "") -> Plan:
    """Check a plan's structure and every variant's settings (each must make a valid TrainConfig) and return
    it; every fault is a :class:`PlanError` naming the plan, the variant and the key."""
    if not isinstance(data, dict):
        raise PlanError(f"a plan is a table of settings; got {type(data).__name__}")
    name = str(data.get("name", default_name))
    where = f"plan {name!r}"
    _known_keys(data, _PLAN_KEYS, where, "a plan")
    base = _settings(data, "base", where, f"{where}, base")
    raw_variants = data.get("variants")
    if not isinstance(raw_variants, list) or not raw_variants:
        raise PlanError(f"{where}: 'variants' must be a non-empty list of variants")
    variants: list[Variant] = []
    for index, raw in enumerate(raw_variants):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise PlanError(f"{where}: variant {index + 1} needs a 'name' (text)")
        vname = raw["name"]
        here = f"{where}, variant {vname!r}"
        if not _NAME.match(vname):
            raise PlanError(f"{here}: a variant name is a folder name: letters, digits, '_', '-' and '.'")
        _known_keys(raw, _VARIANT_KEYS, here, "a variant")
        overrides = _settings(raw, "overrides", here, here)
        if any(v.name == vname for v in variants):
            raise PlanError(f"{here}: two variants have this name")
        variants.append(Variant(name=vname, label=str(raw.get("label", vname)), overrides=dict(overrides),
                                baseline=raw.get("baseline"), requires=raw.get("requires")))
    names = [v.name for v in variants]
    baseline = data.get("baseline", names[0])
    if baseline not in names:
        raise PlanError(f"{where}: baseline {baseline!r} is not one of its variants ({', '.join(names)})")
    for variant in variants:
        if variant.baseline is not None and (variant.baseline not in names or variant.baseline == variant.name):
            raise PlanError(f"{where}, variant {variant.name!r}: baseline {variant.baseline!r} must be another of "
                            f"its variants ({', '.join(names)})")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise PlanError(f"{where}: 'seeds' must be a list of integers >= 0; got {seeds!r}")
    eval_clips = data.get("eval_clips", 10)
    if not isinstance(eval_clips, int) or eval_clips < 1:
        raise PlanError(f"{where}: 'eval_clips' must be an integer >= 1; got {eval_clips!r}")
    plan = Plan(name=name, description=str(data.get("description", "")), baseline=baseline,
                seeds=tuple(_unique_seeds(seeds, where)), eval_split=str(data.get("eval_split", "test")),
                eval_clips=eval_clips, base=dict(base), variants=tuple(variants), source=source)
    for variant in plan.variants:  # every variant must make a TrainConfig before anything runs
        try:
            run_config(plan, variant, seed=0, data="", out="")
        except PlanError:
            raise
        except (ValueError, TypeError) as error:
            raise PlanError(f"{where}, variant {variant.name!r}: {error}") from None
    return plan


def _unique_seeds(seeds: Sequence[int], where: str) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise PlanError(f"{where}: seeds repeat: {list(seeds)}")
    return [int(s) for s in seeds]


def _known_keys(table: dict[str, Any], allowed: Sequence[str], where: str, what: str) -> None:
    """Refuse a plan's or variant's key that is not one of ``allowed``, listing them."""
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise PlanError(f"{where}: unknown key {unknown[0]!r}; {what} has {', '.join(allowed)}")


def _settings(table: dict[str, Any], key: str, where: str, context: str) -> dict[str, Any]:
    """``table[key]`` (default empty) once it is a table of settings whose every key is known (``context``
    names it in the errors about its keys)."""
    settings = table.get(key, {})
    if not isinstance(settings, dict):
        raise PlanError(f"{where}: '{key}' must be a table of settings; got {type(settings).__name__}")
    _check_keys(settings, context)
    return settings


def _check_keys(overrides: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(TrainConfig)} | set(MODEL_OPTIONS)
    for key in overrides:
        if key in RESERVED_KEYS:
            raise PlanError(f"{where}: {key!r} is set by the study command (--data, --out, --seeds, --split-id, "
                            "--layout, --annotations), not by a plan")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known - set(RESERVED_KEYS)), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PlanError(f"{where}: unknown override key {key!r}{hint}; an override sets a TrainConfig field "
                            f"(kpsem.train.TrainConfig) or an MF-KPSEM option ({', '.join(MODEL_OPTIONS)})")


def select_variants(plan: Plan, only: Sequence[str] | None) -> list[Variant]:
    """The plan's variants named by ``--only`` (all when None), in the plan's order."""
    if not only:
        return list(plan.variants)
    names = {v.name for v in plan.variants}
    missing = [n for n in only if n not in names]
    if missing:
        raise PlanError(f"--only: plan {plan.name!r} has no variant {', '.join(map(repr, missing))}; "
                        f"its variants: {plan.variant_names()}")
    return [v for v in plan.variants if v.name in set(only)]


def run_config(plan: Plan, variant: Variant, *, seed: int, data: str, out: str | Path, split_id: int = 1,
               init: str | None = None, layout: str | None = None, annotations: str | None = None,
               device: str | None = None, workers: int | None = None, progress: bool = False) -> TrainConfig:
    """The TrainConfig of one run: TrainConfig's defaults, then the plan's base, the variant's overrides and
    the command's choices. Model options of the base apply to MF-KPSEM variants only (an MFNet takes none).
    Per-epoch validation is off unless the plan asks for it: the study measures the final model once."""
    merged = {**plan.base, **variant.overrides}
    arch = str(merged.get("arch", TrainConfig.arch))
    from kpsem.models import has_kpsem

    options = {k: v for k, v in plan.base.items() if k in MODEL_OPTIONS} if has_kpsem(arch) else {}
    options.update({k: v for k, v in variant.overrides.items() if k in MODEL_OPTIONS})
    values: dict[str, Any] = {"val_split": None}
    values.update({k: v for k, v in merged.items() if k not in MODEL_OPTIONS})
    values.update(data=data, out=str(out), seed=int(seed), split_id=int(split_id), layout=layout,
                  annotations=annotations, model_options=options, resume="auto", progress=progress)
    values.update({k: v for k, v in (("init", init), ("device", device), ("workers", workers)) if v is not None})
    return TrainConfig(**values)


def skipped_variants(plan: Plan, variants: Sequence[Variant] | None = None) -> dict[str, str]:
    """Variants this build cannot run, with why: an architecture that is not registered, or settings the model
    refuses (built on the meta device: no memory, no weights). Only variants that say what they ``require``
    are skipped; any other refusal is a :class:`PlanError`, since it is a mistake in the plan."""
    import torch

    from kpsem.models import list_models

    notes: dict[str, str] = {}
    for variant in variants if variants is not None else plan.variants:
        config = run_config(plan, variant, seed=0, data="", out="")
        if config.arch not in list_models():
            why = f"arch {config.arch!r} is not registered in this build (registered: {', '.join(list_models())})"
        else:
            try:
                with torch.device("meta"):
                    build_model(replace(config, init=None), num_classes=2)
                continue
            except (ValueError, TypeError) as error:
                why = f"the model refuses its settings: {error}"
        if variant.requires is None:
            raise PlanError(f"plan {plan.name!r}, variant {variant.name!r}: {why}")
        notes[variant.name] = f"skipped: needs {variant.requires} ({why})"
    return notes


# --- running --------------------------------------------------------------------------------------------------


def _run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / "runs" / variant / f"seed_{seed}"


def run_state(run_dir: str | Path) -> str:
    """"done" (final.pt, predictions and done.json: never redone), "trained" (final.pt only: evaluate again),
    "partial" (a checkpoint to resume from) or "new"."""
    run_dir = Path(run_dir)
    final = (run_dir / "final.pt").is_file()
    if final and (run_dir / "predictions.parquet").is_file() and (run_dir / "done.json").is_file():
        return "done"
    if final:
        return "trained"
    return "partial" if (run_dir / "checkpoints" / "latest.json").is_file() else "new"


def _differences(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """Settings that differ between a finished run's config and the one the plan asks for now."""
    before = TrainConfig.from_dict(saved).to_dict()
    now = config.to_dict()
    return [f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in sorted(now)
            if k not in _VOLATILE_FIELDS and before.get(k) != now[k]]


def _refuse_changed(run_dir: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    changed = _differences(saved, config)
    if changed:
        raise PlanError(f"{run_dir} was trained with other settings than the plan now asks for ("
                        + "; ".join(changed[:6]) + "); delete that run folder to redo it, or use another --out")


def _agree(dist_info: DistInfo, value: Any) -> Any:
    """Rank 0's ``value`` on every rank: what a run needs is decided once, from one look at the files."""
    if not dist_info.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _train_seconds(run_dir: Path) -> tuple[float, int]:
    """Training time summed over the epochs of metrics.jsonl, and the epochs it lists."""
    path = run_dir / "metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    epochs = [r for r in records if r.get("event") == "epoch"]
    return float(sum(r.get("train_seconds", 0.0) for r in epochs)), len(epochs)


def _cost(final: Path, config: TrainConfig) -> tuple[int, int]:
    """(parameters, multiply-adds for one clip) of a trained model, counted on the CPU."""
    from kpsem.checkpoint import load_checkpoint
    from kpsem.profile import model_cost

    loaded = load_checkpoint(final, map_location="cpu")
    cost = model_cost(loaded.model, name=config.arch, clip=(config.frames, config.size, config.size))
    return cost.total.parameters, cost.total.macs


def _say(dist_info: DistInfo, text: str) -> None:
    if dist_info.is_main:
        print(text, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def run_study(
    config: StudyConfig,
    *,
    dist_info: DistInfo | None = None,
    command: Sequence[str] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> StudyResult:
    """Run every (variant, seed) of the plan not yet finished, then write the results table and the reports.

    ``on_step`` goes to every :func:`~kpsem.train.train` call (tests use it to simulate a kill). Rank 0
    prints a line per run with an estimate of the time left, and writes every file."""
    plan = load_plan(config.plan)
    variants = select_variants(plan, config.only)
    seeds, eval_clips = _seeds_and_clips(config, plan)
    if dist_info is None:
        dist_info = current(pick_device(0, config.device))
    out = Path(config.out)
    skipped = skipped_variants(plan, variants)
    if dist_info.is_main:
        _claim_folder(out, plan)
    barrier(dist_info)
    for name, note in skipped.items():
        _say(dist_info, f"study {plan.name}: variant {name} {note}")
    todo = [(v, s) for s in seeds for v in variants if v.name not in skipped]  # seed-major: a whole seed first
    ran: list[tuple[str, int]] = []
    reused: list[tuple[str, int]] = []
    costs: dict[str, tuple[int, int]] = {}
    spent: list[float] = []
    for number, (variant, seed) in enumerate(todo, start=1):
        run_dir = _run_dir(out, variant.name, seed)
        train_config = run_config(plan, variant, seed=seed, data=config.data, out=run_dir, split_id=config.split_id,
                                  init=config.init, layout=config.layout, annotations=config.annotations,
                                  device=config.device, workers=config.workers, progress=config.progress)
        evaluation = {"split": plan.eval_split, "clips": eval_clips}
        state = _agree(dist_info, _plan_run(run_dir, train_config, evaluation) if dist_info.is_main else None)
        where = f"[{number}/{len(todo)}] {variant.name} seed {seed}"
        if state == "done":
            reused.append((variant.name, seed))
            _say(dist_info, f"{where}: finished before, kept")
            continue
        started = time.perf_counter()
        result = _train_and_evaluate(config, plan, train_config, run_dir, state=state, where=where,
                                     model_id=f"{variant.name}_seed{seed}:{train_config.arch}", eval_clips=eval_clips,
                                     dist_info=dist_info, command=command, on_step=on_step)
        if dist_info.is_main and result is not None:
            if variant.name not in costs:
                costs[variant.name] = _cost(run_dir / "final.pt", train_config)
            row = _record_run(plan, variant, seed, train_config, run_dir, out, result, evaluation, costs[variant.name])
            spent.append(time.perf_counter() - started)
            left = len(todo) - number
            eta = f"; {left} left, about {_duration(left * float(np.mean(spent)))} at this pace" if left else ""
            _say(dist_info, f"{where}: top-1 {row['top1']:.2%}, top-5 {row['top5']:.2%} in "
                            f"{_duration(spent[-1])}{eta}")
        ran.append((variant.name, seed))
        barrier(dist_info)
    written: list[Path] = []
    results = pd.DataFrame(columns=list(RESULT_COLUMNS))
    if dist_info.is_main:
        written = write_reports(out, resamples=config.resamples)
        results = collect_results(plan, out)
        _say(dist_info, f"study {plan.name}: {len(results)} finished runs; reports in {out}")
    barrier(dist_info)
    return StudyResult(out=out, ran=ran, reused=reused, skipped=skipped, results=results, written=written)


def _seeds_and_clips(config: StudyConfig, plan: Plan) -> tuple[list[int], int]:
    """The seeds and test clips per video the study runs: the command line's, else the plan's; refused when
    a seed is negative or repeated, or there are no clips."""
    seeds = _unique_seeds(list(config.seeds if config.seeds is not None else plan.seeds), "--seeds")
    if any(s < 0 for s in seeds):
        raise PlanError(f"--seeds must be integers >= 0; got {seeds}")
    eval_clips = config.eval_clips if config.eval_clips is not None else plan.eval_clips
    if eval_clips < 1:
        raise PlanError(f"--eval-clips must be at least 1; got {eval_clips}")
    return seeds, eval_clips


def _train_and_evaluate(config: StudyConfig, plan: Plan, train_config: TrainConfig, run_dir: Path, *, state: str,
                        where: str, model_id: str, eval_clips: int, dist_info: DistInfo,
                        command: Sequence[str] | None, on_step: Callable[[int], None] | None) -> EvalResult | None:
    """Train one run (unless ``state`` says it is trained; a partial one resumes), then evaluate its final
    checkpoint on the plan's test split, writing ``predictions.parquet``; rank 0 gets the result."""
    if state != "trained":
        _say(dist_info, f"{where}: {'resuming' if state == 'partial' else 'training'} in {run_dir}")
        train(train_config, dist_info=dist_info, command=command, on_step=on_step)
    _say(dist_info, f"{where}: evaluating {eval_clips} clip(s) per {plan.eval_split} video")
    return evaluate_checkpoint(
        run_dir / "final.pt", data=config.data, split=plan.eval_split, clips=eval_clips,
        batch_size=train_config.eval_batch_size or train_config.batch_size, workers=train_config.workers,
        precision=train_config.precision, out=run_dir / "predictions.parquet", model_id=model_id,
        layout=config.layout, split_id=config.split_id, annotations=config.annotations, dist_info=dist_info,
        progress=config.progress,
    )


def _record_run(plan: Plan, variant: Variant, seed: int, train_config: TrainConfig, run_dir: Path, out: Path,
                result: EvalResult, evaluation: dict[str, Any], cost: tuple[int, int]) -> dict[str, Any]:
    """Mark one evaluated run finished (``done.json``, written last) and rewrite the results table; its row."""
    row = _result_row(variant, train_config, run_dir, out, result, cost)
    record = {"format": DONE_FORMAT, "variant": variant.name, "seed": seed, "row": row,
              "config": train_config.to_dict(), "evaluation": evaluation,
              "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    atomic_write_text(run_dir / "done.json", json.dumps(record, indent=2) + "\n")  # last: the run is done
    _write_results(plan, out)
    return row


def _claim_folder(out: Path, plan: Plan) -> None:
    """Write plan.json; a folder that holds another plan's study is refused (its Table 2 would mix them)."""
    path = out / "plan.json"
    if path.is_file():
        held = json.loads(path.read_text()).get("name")
        if held != plan.name:
            raise PlanError(f"study folder {out} holds plan {held!r}; use another --out for plan {plan.name!r}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(plan.to_dict(), indent=2) + "\n")


def _plan_run(run_dir: Path, config: TrainConfig, evaluation: dict[str, Any]) -> str:
    """What a run needs: "done" (nothing), "trained" (evaluate), "partial" or "new" (train, whose resume="auto"
    picks up the latest checkpoint of a partial run).

    A finished run made with other settings is refused rather than reused or overwritten; one evaluated with
    another protocol is evaluated again."""
    state = run_state(run_dir)
    done = run_dir / "done.json"
    if state == "done":
        record = json.loads(done.read_text())
        _refuse_changed(run_dir, record["config"], config)
        if record.get("evaluation") == evaluation:
            return "done"
        state = "trained"
    if state == "trained" and (run_dir / "config.json").is_file():
        _refuse_changed(run_dir, json.loads((run_dir / "config.json").read_text())["config"], config)
    done.unlink(missing_ok=True)  # a marker without its files is stale: the run is not finished
    return state


def _result_row(variant: Variant, config: TrainConfig, run_dir: Path, out: Path, result: EvalResult,
                cost: tuple[int, int]) -> dict[str, Any]:
    train_seconds, epochs = _train_seconds(run_dir)
    per_class = list(result.per_class_top1.values())
    return {
        "variant": variant.name, "label": variant.label, "arch": config.arch, "seed": int(config.seed),
        "split": int(config.split_id),
        "eval_split": result.split, "videos": int(result.num_videos),
        "clips_per_video": int(result.info.get("clips_per_video", 0)),
        "top1": float(result.video_top1), "top5": float(result.video_top5),
        "mean_class_accuracy": float(np.mean(per_class)) if per_class else float("nan"),
        "clip_top1": float(result.clip_top1), "parameters": int(cost[0]), "macs": int(cost[1]), "epochs": epochs,
        "train_seconds": train_seconds, "eval_seconds": float(result.seconds),
        "wall_seconds": train_seconds + float(result.seconds), "run": run_dir.relative_to(out).as_posix(),
    }


# --- results and reports --------------------------------------------------------------------------------------


def collect_results(plan: Plan, out: str | Path) -> pd.DataFrame:
    """One row per finished run of the plan's variants (any seed), in the plan's order, then by seed."""
    out = Path(out)
    rows = []
    for variant in plan.variants:
        folder = out / "runs" / variant.name
        if not folder.is_dir():
            continue
        rows.extend(json.loads((run_dir / "done.json").read_text())["row"] for run_dir in folder.glob("seed_*")
                    if run_state(run_dir) == "done")
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    order = {v.name: i for i, v in enumerate(plan.variants)}
    table = table.sort_values(["variant", "seed"], key=lambda c: c.map(order) if c.name == "variant" else c,
                              kind="stable")
    return table.reset_index(drop=True)


def _write_table(table: pd.DataFrame, stem: Path) -> list[Path]:
    """``<stem>.csv`` and ``<stem>.parquet``, each replaced whole."""
    csv, parquet = stem.with_suffix(".csv"), stem.with_suffix(".parquet")
    atomic_write_text(csv, table.to_csv(index=False))
    with atomic_path(parquet) as partial:
        table.to_parquet(partial, index=False)
    return [csv, parquet]


def _write_results(plan: Plan, out: Path) -> list[Path]:
    return _write_table(collect_results(plan, out), out / "results")


@dataclass
class DesignTable:
    """Table 2: per variant the mean and spread over seeds, and the paired comparison with its baseline."""

    table: pd.DataFrame  # one row per variant (columns: see design_table)
    runs: list[dict[str, Any]]  # per variant and run_seed: the paired statistics (PairedSignificance.to_dict())
    notes: list[str]  # how the statistics were made, in words

    def to_markdown(self) -> str:
        """The table as Markdown, accuracies in percent: mean ± standard deviation over seeds."""
        header = ["variant", "seeds", "top-1 (%)", "top-5 (%)", "mean class (%)", "params (M)", "GMACs",
                  "Δ top-1 vs baseline (points)", "McNemar p per seed", "note"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in self.table.itertuples(index=False):
            cells = [
                str(row.label), str(row.seeds) if row.seeds else "–",
                _mean_std(row.top1_mean, row.top1_std), _mean_std(row.top5_mean, row.top5_std),
                _mean_std(row.mean_class_mean, row.mean_class_std),
                "–" if _missing(row.parameters) else f"{row.parameters / 1e6:.3f}",
                "–" if _missing(row.macs) else f"{row.macs / 1e9:.3f}",
                _difference_cell(row), str(row.mcnemar_p) or "–", str(row.note),
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines + [""] + [f"- {note}" for note in self.notes]) + "\n"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _mean_std(mean: float, std: float) -> str:
    if _missing(mean):
        return "–"
    return f"{mean * 100:.1f}" + ("" if _missing(std) else f" ± {std * 100:.1f}")


def _difference_cell(row: Any) -> str:
    if _missing(row.difference_mean):
        return "–"
    text = f"{row.difference_mean * 100:+.1f}"
    if not _missing(row.difference_std):
        text += f" ± {row.difference_std * 100:.1f}"
    return text + f" [{row.ci_low * 100:+.1f}, {row.ci_high * 100:+.1f}]"


def design_table(
    plan: Plan,
    results: pd.DataFrame,
    predictions: Callable[[str, int], pd.DataFrame],
    *,
    skipped: dict[str, str] | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> DesignTable:
    """Table 2 from the results table and each run's predictions (``predictions(variant, seed)``).

    Per variant: mean and sample standard deviation (n - 1) over its seeds of video top-1, top-5 and mean class
    accuracy. Against its baseline, on the seeds both have: per seed, McNemar's exact test on the same test
    videos (:func:`~kpsem.explain.compare.paired_significance`); the top-1 difference as mean ± standard
    deviation over seeds; and a percentile bootstrap interval of that mean difference from the videos of all
    paired seeds pooled (each (video, seed) pair one item)."""
    skipped = skipped or {}
    rows, runs = [], []
    for variant in plan.variants:
        mine = results[results["variant"] == variant.name].sort_values("seed")
        baseline = plan.baseline_of(variant)
        row = _design_row(plan, variant, mine, baseline)
        if variant.name in skipped:
            row["note"] = skipped[variant.name]
        elif not len(mine):
            row["note"] = "baseline; no finished run yet" if baseline is None else "no finished run yet"
        elif baseline is None:
            row["note"] = "baseline"
        else:
            paired, records = _against_baseline(variant.name, baseline, mine, results, predictions,
                                                resamples=resamples, seed=seed)
            row.update(paired)
            runs.extend(records)
        rows.append(row)
    return DesignTable(table=pd.DataFrame(rows), runs=runs, notes=_design_notes(resamples, seed))


def _design_row(plan: Plan, variant: Variant, mine: pd.DataFrame, baseline: str | None) -> dict[str, Any]:
    """A variant's Table 2 row from its finished runs ``mine``, the comparison with its baseline still empty."""
    return {
        "variant": variant.name, "label": variant.label, "arch": plan.arch_of(variant), "seeds": len(mine),
        "top1_mean": _mean(mine["top1"]), "top1_std": _std(mine["top1"]),
        "top5_mean": _mean(mine["top5"]), "top5_std": _std(mine["top5"]),
        "mean_class_mean": _mean(mine["mean_class_accuracy"]), "mean_class_std": _std(mine["mean_class_accuracy"]),
        "parameters": _first(mine["parameters"]), "macs": _first(mine["macs"]), "baseline": baseline,
        "paired_seeds": 0, "difference_mean": math.nan, "difference_std": math.nan, "ci_low": math.nan,
        "ci_high": math.nan, "mcnemar_p": "", "significant_seeds": 0,
        "note": "",
    }


def _against_baseline(name: str, baseline: str, mine: pd.DataFrame, results: pd.DataFrame,
                      predictions: Callable[[str, int], pd.DataFrame], *, resamples: int,
                      seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Variant ``name`` against ``baseline`` on the seeds both finished: the row's comparison columns (or a note
    that no seed pairs yet), and one significance record per paired seed."""
    theirs = set(results.loc[results["variant"] == baseline, "seed"].astype(int))
    paired_seeds = [int(s) for s in mine["seed"] if int(s) in theirs]
    if not paired_seeds:
        return {"note": f"no seed in common with {baseline} yet"}, []
    significances: list[PairedSignificance] = []
    records: list[dict[str, Any]] = []
    right_b, right_k = [], []
    for run_seed in paired_seeds:
        try:
            compared = compare_predictions(predictions(baseline, run_seed), predictions(name, run_seed), level="video")
        except ValueError as error:  # e.g. runs evaluated with other clips per video
            raise ValueError(f"Table 2: {name} seed {run_seed} cannot be paired with {baseline} seed "
                             f"{run_seed}: {error}; evaluate both with one protocol (--eval-clips)") from None
        significance = paired_significance(compared, resamples=resamples, seed=seed)
        significances.append(significance)
        # "seed" in the record is the bootstrap's, as in compare's significance.json; the run's is run_seed
        records.append({"variant": name, "baseline": baseline, "run_seed": run_seed, **significance.to_dict()})
        items = compared.items
        right_b.append((items["baseline_pred"] == items["true_label"]).to_numpy())
        right_k.append((items["kpsem_pred"] == items["true_label"]).to_numpy())
    summary = summarise_runs(significances)
    low, high = bootstrap_difference(np.concatenate(right_b), np.concatenate(right_k), resamples=resamples, seed=seed)
    std = summary.std["difference"]
    return {"paired_seeds": len(significances), "difference_mean": summary.mean["difference"],
            "difference_std": math.nan if std is None else std, "ci_low": low, "ci_high": high,
            "mcnemar_p": "; ".join(f"{format_p(s.p_value)} (seed {n})" for s, n in zip(significances, paired_seeds)),
            "significant_seeds": summary.significant_runs}, records


def _design_notes(resamples: int, seed: int) -> list[str]:
    """What Table 2's numbers are, printed under it."""
    return [
        "Accuracies are video-level (mean softmax over a video's clips) on the plan's test split; mean ± sample "
        "standard deviation (n - 1) over seeds.",
        "Δ top-1: the variant minus its baseline, per seed on the same test videos; mean ± standard deviation over "
        f"the paired seeds, then a {0.95:.0%} percentile bootstrap interval ({resamples} resamples, seed {seed}) "
        "of that mean from the videos of all paired seeds pooled: every (video, seed) pair is one resampled item, "
        "so a video's seeds are treated as independent.",
        f"McNemar: exact two-sided test per seed on the videos where exactly one of the two is right; "
        f"significant when p < {ALPHA}.",
    ]


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else math.nan


def _std(values: pd.Series) -> float:
    return float(values.std(ddof=1)) if len(values) > 1 else math.nan


def _first(values: pd.Series) -> float:
    return float(values.iloc[0]) if len(values) else math.nan


@dataclass
class Panel:
    """One panel of Fig. 5: accuracy against one MF-KPSEM option, the other options at the plan's defaults."""

    option: str  # MFKPSEMConfig field on the x axis
    title: str  # e.g. "(b) regions per frame"
    axis: str  # x axis label
    ticks: list[str]  # every value the plan asks for, in order
    points: pd.DataFrame  # tick, variant, label, mean, std, seeds (finished values only)
    notes: list[str]  # values not drawn, and why, in full
    missing: dict[str, str]  # tick -> "skipped" (this build cannot run it) or "no run yet", shown under the tick
    varied: bool  # whether any variant of the plan changes this option alone
    baseline: tuple[str, float, float] | None  # (label, mean top-1, std) of the plan's baseline


def _resolved_options(config: TrainConfig) -> dict[str, Any]:
    """A config's MF-KPSEM options with MFKPSEMConfig's defaults filled in."""
    from kpsem.models.mf_kpsem import MFKPSEMConfig

    defaults = {f.name: f.default for f in fields(MFKPSEMConfig) if f.name in MODEL_OPTIONS}
    return {**defaults, **config.model_options}


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


def design_panels(plan: Plan, results: pd.DataFrame, *, skipped: dict[str, str] | None = None) -> list[Panel]:
    """Fig. 5's four panels. A variant belongs to the panel of option P when it is MF-KPSEM and its settings
    equal those of plain MF-KPSEM on the plan's base in everything but P; plain MF-KPSEM is on every panel."""
    skipped = skipped or {}
    reference = run_config(plan, Variant("reference", "reference", {"arch": "mf_kpsem"}), seed=0, data="", out="")
    ref_options = _resolved_options(reference)
    ref_rest = {k: v for k, v in reference.to_dict().items() if k != "model_options"}
    members: dict[str, list[tuple[Any, Variant]]] = {option: [] for option, _, _ in PANELS}
    for variant in plan.variants:
        config = run_config(plan, variant, seed=0, data="", out="")
        rest = {k: v for k, v in config.to_dict().items() if k != "model_options"}
        if config.arch != reference.arch or rest != ref_rest:
            continue
        options = _resolved_options(config)
        differing = [k for k in options if options[k] != ref_options[k]]
        for option in members:
            if set(differing) <= {option}:
                members[option].append((options[option], variant))
    base_rows = results[results["variant"] == plan.baseline]
    baseline = None
    if len(base_rows):
        std = _std(base_rows["top1"])
        baseline = (plan.variant(plan.baseline).label, _mean(base_rows["top1"]), std)
    panels = []
    for option, title, axis in PANELS:
        found = sorted(members[option], key=lambda item: _sort_key(item[0]))
        points, notes, waiting, missing = [], [], [], {}
        for value, variant in found:
            rows = results[results["variant"] == variant.name]
            if variant.name in skipped:
                notes.append(f"{axis} = {value}: {skipped[variant.name]}")
                missing[str(value)] = "skipped"
            elif not len(rows):
                waiting.append(f"{value}")
                missing[str(value)] = "no run yet"
            else:
                points.append({"tick": str(value), "variant": variant.name, "label": variant.label,
                               "mean": _mean(rows["top1"]), "std": _std(rows["top1"]), "seeds": len(rows)})
        if waiting:
            notes.append(f"{axis} = {', '.join(waiting)}: no finished run yet")
        if len(found) < 2:  # MF-KPSEM's own point at most: the plan does not vary this option
            notes.append(f"the plan has no variant that changes {axis} alone")
        panels.append(Panel(option=option, title=title, axis=axis, ticks=[str(v) for v, _ in found],
                            points=pd.DataFrame(points, columns=["tick", "variant", "label", "mean", "std", "seeds"]),
                            notes=notes, missing=missing, varied=len(found) > 1, baseline=baseline))
    return panels


def _predictions_reader(out: Path) -> Callable[[str, int], pd.DataFrame]:
    cache: dict[tuple[str, int], pd.DataFrame] = {}

    def read(variant: str, seed: int) -> pd.DataFrame:
        key = (variant, int(seed))
        if key not in cache:
            table = read_predictions(_run_dir(out, variant, seed) / "predictions.parquet")
            cache[key] = table[table["level"] == "video"]  # Table 2 compares videos; clip rows only cost memory
        return cache[key]

    return read


def write_reports(out: str | Path, *, resamples: int = 10_000, seed: int = 0,
                  style: FigureStyle | None = None) -> list[Path]:
    """Results table, Table 2 (CSV, Markdown, JSON) and Fig. 5 (PNG, PDF, SVG, JSON sidecar) of a study folder,
    from every finished run in it."""
    from kpsem.explain.study_figures import figure_design_study

    out = Path(out)
    plan = _study_plan(out)
    skipped = skipped_variants(plan)
    results = collect_results(plan, out)
    written = _write_table(results, out / "results")
    table = design_table(plan, results, _predictions_reader(out), skipped=skipped, resamples=resamples, seed=seed)
    written.append(atomic_write_text(out / "table2.csv", table.table.to_csv(index=False)))
    written.append(atomic_write_text(out / "table2.md", f"# {plan.description or plan.name}\n\n" + table.to_markdown()))
    written.append(atomic_write_text(out / "table2.json", json.dumps(
        {"plan": plan.name, "notes": table.notes, "rows": _records(table.table), "runs": table.runs,
         "resamples": resamples, "seed": seed}, indent=2, allow_nan=False) + "\n"))
    panels = design_panels(plan, results, skipped=skipped)
    figure = figure_design_study(panels, plan_name=plan.name, style=style)
    written += figure.save(out, stem="fig5_design")
    return written


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts, NaN as null."""
    return [{k: (None if _missing(v) else (v.item() if isinstance(v, np.generic) else v)) for k, v in row.items()}
            for row in table.to_dict(orient="records")]


def _study_plan(out: Path) -> Plan:
    path = out / "plan.json"
    if not path.is_file():
        raise FileNotFoundError(f"{out} is not a study folder (no plan.json): give the folder `kpsem study --out` "
                                "wrote")
    data = json.loads(path.read_text())
    data.pop("format", None)
    source = data.pop("source", "")
    for variant in data.get("variants", []):
        for key in ("baseline", "requires"):
            if variant.get(key) is None:
                variant.pop(key, None)
    return parse_plan(data, default_name=out.name, source=source)


@dataclass
class StudyFolder:
    """What a study folder holds, read back for the app."""

    plan: Plan  # the plan it ran
    results: pd.DataFrame  # every finished run (RESULT_COLUMNS)
    table2: pd.DataFrame | None  # table2.csv, None until the reports are written
    table2_markdown: str | None  # table2.md
    figure: Path | None  # fig5_design.png
    runs_total: int  # (variant, seed) pairs the plan's seeds and runnable variants make


def read_study(out: str | Path) -> StudyFolder:
    """Read a study folder: plan, results (from the finished runs themselves, so a running study shows its
    progress), and Table 2 and Fig. 5 as last written."""
    out = Path(out)
    plan = _study_plan(out)
    results = collect_results(plan, out)
    table2 = pd.read_csv(out / "table2.csv") if (out / "table2.csv").is_file() else None
    markdown = (out / "table2.md").read_text(encoding="utf-8") if (out / "table2.md").is_file() else None
    figure = out / "fig5_design.png"
    runnable = len(plan.variants) - len(skipped_variants(plan))
    return StudyFolder(plan=plan, results=results, table2=table2, table2_markdown=markdown,
                       figure=figure if figure.is_file() else None, runs_total=runnable * len(plan.seeds))
