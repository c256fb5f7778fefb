"""Motion probes: does a model use motion, and which? Predictions under inputs that keep appearance.

Every input probe keeps what each frame looks like and changes only the motion: the frames reversed,
shuffled (one seeded permutation), frozen on the middle frame, played at half the frame rate (every 2nd
frame twice, same length), or the whole clip mirrored left-right (scored against the mirror-image label
where the class has a mirror partner, :func:`kpsem.data.mirrored_labels`: hop_cw <-> hop_ccw). The
knock-outs (MF-KPSEM only, :data:`kpsem.models.mf_kpsem.KNOCKOUTS`) switch a part of the module off at
test time: the temporal (KPSEM) half of the classifier input zeroed, the separation centres fixed at the
geometric centre, the spatial half zeroed. A model without KPSEM gets "not applicable" for those.

A clip and its input probes go through the model as one batch; the head knock-outs reuse the clip's
features, and only the centre knock-out needs a second pass. Clips, their order, decoding and the video
score (mean softmax over a video's clips) are the evaluation's (:mod:`kpsem.evaluate`); the table has one
row per model, probe and video (:data:`COLUMNS`), and :func:`summarise_probes`, :func:`per_class_probes`
and :func:`probe_sentences` turn it into accuracies with Wilson 95% intervals and plain sentences.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kpsem.data.transforms import mirrored_labels
from kpsem.io import atomic_path
from kpsem.models import KNOCKOUTS, has_kpsem, paper_name

__all__ = [
    "COLUMNS",
    "INPUT_PROBES",
    "KNOCKOUTS",
    "PROBES",
    "PROBES_FORMAT",
    "REFERENCE",
    "ProbeError",
    "ProbeResult",
    "apply_input_probe",
    "frame_order",
    "parse_probes",
    "per_class_probes",
    "probe_checkpoints",
    "probe_clip",
    "probe_index",
    "probe_logits",
    "probe_model",
    "probe_report",
    "probe_sentences",
    "read_probes",
    "summarise_probes",
    "supports_knockouts",
    "target_labels",
    "write_probes",
]

PROBES_FORMAT = "kpsem-probes/1"  # stored in the Parquet metadata; bumped on a breaking change
REFERENCE = "none"  # the clip as it is: what every probe is compared with

INPUT_PROBES: dict[str, str] = {
    "reverse": "frames in reverse order",
    "shuffle": "frames in one seeded random order (never the identity)",
    "freeze": "the middle frame repeated for every frame",
    "subsample": "every 2nd frame shown twice (half the frame rate, same length)",
    "mirror": "the clip mirrored left-right, scored against the mirror-image label",
}
PROBES: tuple[str, ...] = (*INPUT_PROBES, *KNOCKOUTS)  # every probe, in the order tables list them

# "... when <phrase>" in the accuracy sentences, and "<gerund> turns K of N predictions into ..." per class.
_WHEN = {
    "reverse": "the frames are reversed",
    "shuffle": "the frames are shuffled",
    "freeze": "one frame is repeated (frozen on the middle frame)",
    "subsample": "every 2nd frame is repeated twice",
    "mirror": "the clip is mirrored (scored against the mirror-image label)",
    "zero_temporal": "the temporal (KPSEM) half of the classifier input is zeroed",
    "geometric_centres": "the separation centres are fixed at the geometric centre",
    "zero_spatial": "the spatial half of the classifier input is zeroed",
}
_DOING = {
    "reverse": "reversing the clip",
    "shuffle": "shuffling the frames",
    "freeze": "freezing the clip on its middle frame",
    "subsample": "repeating every 2nd frame",
    "mirror": "mirroring the clip",
    "zero_temporal": "zeroing the temporal half",
    "geometric_centres": "fixing the centres at the geometric centre",
    "zero_spatial": "zeroing the spatial half",
}

# Column -> meaning: one row per model, probe and video.
COLUMNS: dict[str, str] = {
    "model_id": "which model (checkpoint stem:arch, or as given)",
    "arch": "its architecture (mfnet, mf_kpsem)",
    "probe": "'none' (the clip as it is), an input probe or a knock-out",
    "kind": "'none', 'input' (the clip changed) or 'knockout' (the model changed)",
    "video_id": "the data set's id of the video",
    "num_clips": "clips behind the row (their softmax is averaged, as in evaluation)",
    "true_label": "ground-truth class index",
    "true_class": "ground-truth class name",
    "target_label": "label the prediction is scored against: the true one, or its mirror image under 'mirror'",
    "target_class": "its name",
    "pred_label": "predicted class index (top-1 of the mean softmax)",
    "pred_class": "predicted class name",
    "pred_prob": "probability of the predicted class",
    "true_prob": "probability of the true class",
    "target_prob": "probability of the target class",
    "reference_label": "prediction on the unprobed clip (probe 'none')",
    "reference_class": "its name",
    "changed": "whether the prediction differs from the unprobed clip's",
    "correct": "whether the prediction is the target label",
    "probs": "the full probability vector (one float per class)",
}


class ProbeError(ValueError):
    """A probes file that cannot be read, or probes that cannot run; the message says why and what to do."""


def parse_probes(text: str | Sequence[str]) -> list[str]:
    """'reverse,shuffle' (or a list, or 'all') -> the probes in :data:`PROBES` order, without repeats.

    'none' (the unprobed clip) is always run and may be left out. An unknown name is an error naming it
    and the known ones."""
    names = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    names = [p for p in names if p]
    if names == ["all"]:
        return list(PROBES)
    unknown = [p for p in names if p not in PROBES and p != REFERENCE]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; choose from {', '.join(PROBES)} (or 'all')")
    if not names:
        raise ValueError(f"no probes given; choose from {', '.join(PROBES)} (or 'all')")
    return [p for p in PROBES if p in names]


def frame_order(probe: str, frames: int, *, seed: int = 0) -> list[int]:
    """Which input frame each output frame shows under a temporal probe (T frames in, T out).

    reverse: T-1 .. 0; shuffle: a permutation drawn from ``seed`` (drawn again while it is the identity);
    freeze: (T-1)//2 everywhere; subsample: 0, 0, 2, 2, ... (the last frame of an odd T is its own pair)."""
    if frames < 1:
        raise ValueError(f"a clip needs at least one frame; got {frames}")
    if probe == "reverse":
        return list(range(frames - 1, -1, -1))
    if probe == "shuffle":
        if frames < 2:
            raise ValueError("shuffle needs a clip of at least 2 frames; one frame has no other order")
        generator = torch.Generator().manual_seed(int(seed))
        order = list(range(frames))
        while order == list(range(frames)):  # an identity "shuffle" would test nothing
            order = torch.randperm(frames, generator=generator).tolist()
        return order
    if probe == "freeze":
        return [(frames - 1) // 2] * frames
    if probe == "subsample":
        return [2 * (t // 2) for t in range(frames)]
    raise ValueError(f"{probe!r} is not a temporal probe; choose from reverse, shuffle, freeze, subsample")


def apply_input_probe(clips: torch.Tensor, probe: str, *, seed: int = 0) -> torch.Tensor:
    """(N, 3, T, H, W) -> the same clips under ``probe``: frames reordered, or mirrored along W.

    Works on normalised clips: mirroring commutes with per-channel normalisation, so this is the clip of
    the mirrored video."""
    if clips.ndim != 5:
        raise ValueError(f"expected clips of shape (N, 3, T, H, W); got {tuple(clips.shape)}")
    if probe == "mirror":
        return clips.flip(-1)
    if probe not in INPUT_PROBES:
        raise ValueError(f"{probe!r} is not an input probe; choose from {', '.join(INPUT_PROBES)}")
    order = torch.tensor(frame_order(probe, clips.shape[2], seed=seed), device=clips.device)
    return clips.index_select(2, order)


def target_labels(probe: str, labels: Sequence[int] | np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """The label each probed clip should get: its mirror partner under 'mirror', else its own label."""
    labels = np.asarray(labels, dtype=np.int64)
    if probe != "mirror":
        return labels
    mirrored = np.asarray(mirrored_labels(class_names), dtype=np.int64)
    return mirrored[labels]


def supports_knockouts(model: nn.Module) -> bool:
    """Whether the knock-outs apply: they switch parts of KPSEM off, so only MF-KPSEM has them."""
    return has_kpsem(model)


@torch.no_grad()
def probe_logits(model: nn.Module, clips: torch.Tensor, probes: Sequence[str], *, seed: int = 0
                 ) -> dict[str, torch.Tensor]:
    """Logits (N, classes) of the clips as they are ('none') and under each probe; the model in eval mode.

    The clips and their input probes are one forward ((1 + P) N rows); the head knock-outs reuse the
    clips' features, the centre knock-out is one more pass over the N clips. Knock-outs on a model
    without KPSEM are an error (callers list them as not applicable instead)."""
    n = len(clips)
    inputs = [p for p in probes if p in INPUT_PROBES]
    knockouts = [p for p in probes if p in KNOCKOUTS]
    unknown = [p for p in probes if p not in PROBES and p != REFERENCE]
    if unknown:
        raise ValueError(f"unknown probe {unknown[0]!r}; choose from {', '.join(PROBES)}")
    if knockouts and not supports_knockouts(model):
        raise ValueError(f"knock-outs {', '.join(knockouts)} need an MF-KPSEM; {type(model).__name__} has no KPSEM "
                         "module (they are not applicable to it)")
    batch = torch.cat([clips, *(apply_input_probe(clips, p, seed=seed) for p in inputs)])  # ((1 + P) N, 3, T, H, W)
    features = model.forward_features(batch)
    logits = model.forward_head(features)  # ((1 + P) N, classes)
    out = {REFERENCE: logits[:n]}
    out.update({p: logits[(i + 1) * n:(i + 2) * n] for i, p in enumerate(inputs)})
    if knockouts:
        own = (features[0][:n], features[1][:n])  # MF-KPSEM: (tail map, temporal feature) of the unprobed clips
        for name in knockouts:
            if name == "geometric_centres":  # acts inside KPSEM: one more pass over the unprobed clips
                out[name] = model(clips, knockout=name)
            else:
                out[name] = model.forward_head(own, knockout=name)
    return out


def _kind(probe: str) -> str:
    return "none" if probe == REFERENCE else "input" if probe in INPUT_PROBES else "knockout"


def _video_rows(probs: dict[str, np.ndarray], labels: Sequence[int], video_ids: Sequence[str],
                clip_indices: Sequence[int], *, class_names: Sequence[str], model_id: str, arch: str) -> pd.DataFrame:
    """Per-probe clip softmaxes -> one row per probe and video (:data:`COLUMNS`), videos scored as in evaluation."""
    from kpsem.evaluate import predictions_table

    names = np.asarray(class_names, dtype=object)
    frames = []
    reference = None
    for probe, p in probs.items():  # the reference comes first
        videos = predictions_table(p, labels, video_ids, clip_indices, class_names=class_names, model_id=model_id)
        videos = videos[videos["level"] == "video"].reset_index(drop=True)  # sorted by video_id
        vprobs = np.stack(videos["probs"].to_numpy()).astype(np.float32) if len(videos) else np.zeros((0, len(names)))
        truth = videos["true_label"].to_numpy(np.int64)
        target = target_labels(probe, truth, class_names)
        pred = np.argmax(vprobs, axis=1)  # ties: the lower index, as in evaluation's top-k
        rows = np.arange(len(pred))
        if reference is None:
            reference = pred
        frames.append(pd.DataFrame({
            "model_id": model_id, "arch": arch, "probe": probe, "kind": _kind(probe),
            "video_id": videos["video_id"].astype(str).to_numpy(), "num_clips": videos["num_clips"].to_numpy(np.int64),
            "true_label": truth, "true_class": names[truth].tolist(),
            "target_label": target, "target_class": names[target].tolist(),
            "pred_label": pred.astype(np.int64), "pred_class": names[pred].tolist(), "pred_prob": vprobs[rows, pred],
            "true_prob": vprobs[rows, truth], "target_prob": vprobs[rows, target],
            "reference_label": reference.astype(np.int64), "reference_class": names[reference].tolist(),
            "changed": pred != reference, "correct": pred == target, "probs": [row.tolist() for row in vprobs],
        }))
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)]


@dataclass
class ProbeResult:
    """The probe table of one or more models on one set of videos, and what made it."""

    table: pd.DataFrame  # one row per model, probe and video (:data:`COLUMNS`)
    probes: list[str]  # probes asked for, in :data:`PROBES` order ('none' is always in the table too)
    models: dict[str, dict[str, Any]]  # model_id -> {"arch", "knockouts" (applicable?), "checkpoint", ...}
    class_names: list[str]  # index -> name
    info: dict[str, Any] = field(default_factory=dict)  # seed, shuffle order, clips per video, data, timing

    def merged(self, other: ProbeResult) -> ProbeResult:
        """Both results in one (other models on the same videos with the same probes)."""
        if other.probes != self.probes or other.class_names != self.class_names:
            raise ValueError("probe results with different probes or classes cannot be merged")
        clash = sorted(set(self.models) & set(other.models))
        if clash:
            raise ValueError(f"model id {clash[0]!r} appears twice; give each checkpoint its own --model-id")
        seconds = {**self.info.get("seconds", {}), **other.info.get("seconds", {})}
        return ProbeResult(pd.concat([self.table, other.table], ignore_index=True), list(self.probes),
                           {**self.models, **other.models}, list(self.class_names),
                           {**self.info, **other.info, "seconds": seconds})


def _ordered_models(result: ProbeResult) -> list[str]:
    """Models with KPSEM first (the question is about them), otherwise in the order given."""
    return sorted(result.models, key=lambda m: not result.models[m]["knockouts"])


def _display_names(result: ProbeResult) -> dict[str, str]:
    """'MF-KPSEM' / 'MFNet' where one model has that architecture, else the model id."""
    archs = [result.models[m]["arch"] for m in result.models]
    return {m: paper_name(v["arch"]) if archs.count(v["arch"]) == 1 else m for m, v in result.models.items()}


def _counts(rows: pd.DataFrame) -> dict[str, Any]:
    """Accuracy with its Wilson 95% interval, and the share of changed predictions, of some rows."""
    from kpsem.explain.significance import wilson_interval

    n, right, changed = len(rows), int(rows["correct"].sum()), int(rows["changed"].sum())
    low, high = wilson_interval(right, n) if n else (math.nan, math.nan)
    return {"videos": n, "correct": right, "accuracy": right / n if n else math.nan, "ci_low": low, "ci_high": high,
            "changed": changed, "changed_share": changed / n if n else math.nan}


def summarise_probes(result: ProbeResult) -> pd.DataFrame:
    """Per model and probe: accuracy, Wilson 95% interval, share of changed predictions, and McNemar's exact
    p for the change in accuracy against the unprobed clip (paired on the videos).

    A knock-out on a model without KPSEM is a row with ``applicable`` False and no numbers (NaN), never a
    made-up figure."""
    from kpsem.explain.significance import mcnemar_exact

    rows = []
    table = result.table
    for model_id in result.models:
        own = table[table["model_id"] == model_id]
        reference = own[own["probe"] == REFERENCE].set_index("video_id")
        ref_counts = _counts(reference)
        for probe in [REFERENCE, *result.probes]:
            base = {"model_id": model_id, "arch": result.models[model_id]["arch"], "probe": probe, "kind": _kind(probe)}
            if probe in KNOCKOUTS and not result.models[model_id]["knockouts"]:
                rows.append({**base, "applicable": False, "reference_accuracy": ref_counts["accuracy"],
                             "note": "not applicable: no KPSEM module"})
                continue
            probed = own[own["probe"] == probe].set_index("video_id")
            counts = _counts(probed)
            was_right = reference["correct"].reindex(probed.index).to_numpy(bool)
            now_right = probed["correct"].to_numpy(bool)
            gained, lost = int((now_right & ~was_right).sum()), int((was_right & ~now_right).sum())
            rows.append({**base, "applicable": True, **counts, "reference_accuracy": ref_counts["accuracy"],
                         "gained": gained, "lost": lost,
                         "p_value": mcnemar_exact(gained, lost) if probe != REFERENCE else math.nan, "note": ""})
    columns = ["model_id", "arch", "probe", "kind", "applicable", "videos", "correct", "accuracy", "ci_low", "ci_high",
               "changed", "changed_share", "reference_accuracy", "gained", "lost", "p_value", "note"]
    out = pd.DataFrame(rows).reindex(columns=columns)
    for column in ("videos", "correct", "changed", "gained", "lost"):
        out[column] = out[column].astype("Int64")  # <NA> where not applicable
    return out


def per_class_probes(result: ProbeResult) -> pd.DataFrame:
    """Per model, probe and true class: accuracy with its interval, changed predictions, and the class the
    changed predictions went to most often (``top_new_class``, ``top_new_count`` of ``videos``)."""
    out = []
    table = result.table
    for (model_id, probe, cls), rows in table.groupby(["model_id", "probe", "true_class"], sort=False):
        changed = rows[rows["changed"]]
        top = changed["pred_class"].value_counts(sort=True)
        out.append({"model_id": model_id, "arch": result.models[model_id]["arch"], "probe": probe,
                    "true_class": cls, "true_label": int(rows["true_label"].iloc[0]), **_counts(rows),
                    "top_new_class": str(top.index[0]) if len(top) else "",
                    "top_new_count": int(top.iloc[0]) if len(top) else 0})
    frame = pd.DataFrame(out)
    order = {p: i for i, p in enumerate([REFERENCE, *PROBES])}
    frame["_m"] = frame["model_id"].map({m: i for i, m in enumerate(result.models)})
    frame["_p"] = frame["probe"].map(order)
    frame = frame.sort_values(["_m", "_p", "true_label"], kind="stable")
    return frame.drop(columns=["_m", "_p"]).reset_index(drop=True)


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def probe_sentences(result: ProbeResult) -> list[str]:
    """What the table shows, in plain sentences: for each probe, how each model's accuracy moves against the
    unprobed clip (with the 95% interval), then the largest per-class switch the probe causes, e.g.
    "On hop_cw, reversing the clip turns 6 of 8 MF-KPSEM predictions into hop_ccw (MFNet: 2 of 8)."."""
    summary = summarise_probes(result)
    classes = per_class_probes(result)
    names = _display_names(result)
    models = _ordered_models(result)
    sentences = []
    for probe in result.probes:
        parts, missing = [], []
        verb_first = None
        for model_id in models:
            row = summary[(summary["model_id"] == model_id) & (summary["probe"] == probe)].iloc[0]
            if not row["applicable"]:
                missing.append(names[model_id])
                continue
            before, after = float(row["reference_accuracy"]), float(row["accuracy"])
            verb = "falls" if round(after * 100) < round(before * 100) else (
                "rises" if round(after * 100) > round(before * 100) else "stays")
            interval = f"95% CI {_pct(row['ci_low'])}-{_pct(row['ci_high'])}"
            if verb == "stays":
                text = f"stays at {_pct(after)} ({interval})"
            else:
                text = f"{verb} from {_pct(before)} to {_pct(after)} ({interval})"
            if not parts:
                parts.append(f"{names[model_id]}'s accuracy {text} when {_WHEN[probe]}")
                verb_first = verb
            else:
                same = verb == verb_first != "stays"  # "MFNet's from 77% to 52%": the verb is the first model's
                parts.append(f"{names[model_id]}'s " + (text.split(" ", 1)[1] if same else f"accuracy {text}"))
        if not parts:
            sentences.append(f"{_WHEN[probe][0].upper()}{_WHEN[probe][1:]}: not applicable to "
                             f"{', '.join(missing)} (no KPSEM module).")
            continue
        note = f" (not applicable to {', '.join(missing)}: no KPSEM module)" if missing else ""
        sentences.append(", ".join(parts) + note + ".")
        sentences.extend(_switch_sentences(result, classes, probe, models, names))
    return sentences


def _switch_sentences(result: ProbeResult, classes: pd.DataFrame, probe: str, models: list[str],
                      names: dict[str, str], *, most: int = 3) -> list[str]:
    """Up to ``most`` classes where the probe sends at least half the videos (and two) to one other class, the
    largest first: "On hop_cw, reversing the clip turns 7 of 8 MF-KPSEM predictions into hop_ccw (MFNet: 5 of 8)."
    Each class is told by the model with the most such switches, the other models' counts in brackets."""
    flips = classes[(classes["probe"] == probe) & classes["model_id"].isin(models)]
    flips = flips[flips["top_new_count"] >= np.maximum(2, np.ceil(flips["videos"] / 2))]  # a pattern, not a lone switch
    rank = {m: i for i, m in enumerate(models)}
    flips = flips.assign(_m=flips["model_id"].map(rank)).sort_values(
        ["top_new_count", "true_label", "_m"], ascending=[False, True, True], kind="stable")
    out = []
    for _, best in flips.drop_duplicates("true_class").head(most).iterrows():
        cls, new = best["true_class"], best["top_new_class"]
        counts = []
        for model_id in [best["model_id"], *[m for m in models if m != best["model_id"]]]:
            rows = result.table[(result.table["model_id"] == model_id) & (result.table["probe"] == probe)
                                & (result.table["true_class"] == cls)]
            if len(rows):
                counts.append((names[model_id], int((rows["changed"] & (rows["pred_class"] == new)).sum()), len(rows)))
        (name, k, n), rest = counts[0], counts[1:]
        partner = result.class_names[int(target_labels("mirror", [int(best["true_label"])], result.class_names)[0])]
        right = ", the mirror-image label, so these are right" if probe == "mirror" and partner == new != cls else ""
        others = "; ".join(f"{other}: {j} of {m}" for other, j, m in rest)
        out.append(f"On {cls}, {_DOING[probe]} turns {k} of {n} {name} predictions into {new}{right}"
                   + (f" ({others})" if others else "") + ".")
    return out


@torch.no_grad()
def probe_model(
    model: nn.Module,
    dataset: Any,
    *,
    class_names: Sequence[str],
    model_id: str,
    arch: str,
    probes: Sequence[str],
    seed: int = 0,
    batch_size: int = 4,
    workers: int = 0,
    precision: str = "fp32",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    lock: Any = None,
) -> ProbeResult:
    """Every clip of ``dataset`` (items as :class:`kpsem.data.ClipDataset` yields) as it is and under each
    probe; one row per probe and video. Knock-outs on a model without KPSEM are left out of the table and
    marked not applicable. ``progress(done, total)`` after each batch; ``should_stop()`` True stops with
    :class:`InterruptedError`; ``lock`` is held around each forward (the app shares its models). ``precision``:
    fp32, bf16, fp16 or auto (:mod:`kpsem.precision`); what ran is stored in the result's ``info``."""
    from kpsem.evaluate import clip_loader, scored_batches
    from kpsem.precision import resolve_precision

    probes = parse_probes(probes)
    knockouts_apply = supports_knockouts(model)
    run = [p for p in probes if knockouts_apply or p not in KNOCKOUTS]
    total = len(dataset)
    if total == 0:
        raise ValueError("the data set is empty: no clips to probe")
    device = next(model.parameters()).device
    resolved = resolve_precision(device, precision)
    model.eval()
    loader = clip_loader(dataset, batch_size=batch_size, workers=workers, device=device)
    started = time.perf_counter()
    probs: dict[str, list[np.ndarray]] = {p: [] for p in [REFERENCE, *run]}
    labels: list[int] = []
    video_ids: list[str] = []
    clip_indices: list[int] = []
    done, frames = 0, 0

    def stop_if_asked() -> None:
        if should_stop is not None and should_stop():
            raise InterruptedError(f"stopped after {done} of {total} clips; nothing was saved")

    stop_if_asked()
    for batch in scored_batches(lambda clips: probe_logits(model, clips, run, seed=seed), loader, device=device,
                                precision=resolved, name=model_id, lock=lock):
        done += batch.size
        if batch.scores is not None:
            frames = batch.clips.shape[2]
            for probe, value in batch.scores.items():
                probs[probe].append(F.softmax(value, dim=1).cpu().numpy())
            labels.extend(int(v) for v in batch.labels)
            video_ids.extend(batch.video_ids)
            clip_indices.extend(batch.clip_indices)
        if progress is not None:
            progress(done, total)
        if done < total:  # asked before every batch, so that a stop leaves the rest undecoded
            stop_if_asked()
    if not labels:
        raise ValueError("no clip of the data set could be decoded; nothing to probe")
    stacked = {p: np.concatenate(v) for p, v in probs.items()}
    table = _video_rows(stacked, labels, video_ids, clip_indices, class_names=class_names, model_id=model_id, arch=arch)
    info = {"seed": seed, "seconds": {model_id: round(time.perf_counter() - started, 3)},
            "precision": resolved.as_dict(),
            **({"shuffle_order": frame_order("shuffle", frames, seed=seed)} if "shuffle" in run else {})}
    return ProbeResult(table, probes, {model_id: {"arch": arch, "knockouts": knockouts_apply}}, list(class_names), info)


def probe_clip(model: nn.Module, clips: torch.Tensor, *, class_names: Sequence[str], true_label: int | None,
               probes: Sequence[str] = PROBES, seed: int = 0, model_id: str = "model", arch: str = "",
               precision: str = "fp32") -> pd.DataFrame:
    """One video's clips (N, 3, T, H, W) as they are and under each probe: one row per probe (:data:`COLUMNS`).

    Knock-outs on a model without KPSEM come back as rows with ``applicable`` False and no prediction.
    With ``true_label`` None (an upload of unknown class) the truth columns are empty and nothing is scored.
    ``precision`` as in :func:`probe_model`."""
    from kpsem.evaluate import score_clips
    from kpsem.precision import resolve_precision

    probes = parse_probes(probes)
    applies = supports_knockouts(model)
    run = [p for p in probes if applies or p not in KNOCKOUTS]
    model.eval()
    device = next(model.parameters()).device
    logits = score_clips(lambda batch: probe_logits(model, batch, run, seed=seed), clips, device=device,
                         precision=resolve_precision(device, precision), name=model_id)
    probs = {p: F.softmax(v, dim=1).cpu().numpy() for p, v in logits.items()}
    n = len(clips)
    table = _video_rows(probs, [true_label if true_label is not None else 0] * n, ["clip"] * n, list(range(n)),
                        class_names=class_names, model_id=model_id, arch=arch)
    table["applicable"] = True
    if true_label is None:
        for column in ("true_label", "target_label", "true_prob", "target_prob"):
            table[column] = None
        for column in ("true_class", "target_class", "correct"):
            table[column] = None
    missing = [p for p in probes if p not in run]
    if missing:
        blank = pd.DataFrame({"model_id": model_id, "arch": arch, "probe": missing, "kind": "knockout",
                              "applicable": False})
        table = pd.concat([table, blank], ignore_index=True)
        for column in ("num_clips", "pred_label", "reference_label"):
            table[column] = table[column].astype("Int64")  # <NA> on the rows that are not applicable
    return table.drop(columns=["video_id", "probs"])


def probe_index(
    models: Sequence[tuple[nn.Module, Any, str]],
    index: Any,
    *,
    probes: Sequence[str] = PROBES,
    clips: int = 1,
    seed: int = 0,
    batch_size: int = 4,
    workers: int = 0,
    precision: str = "fp32",
    progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    lock: Any = None,
) -> ProbeResult:
    """Probe loaded models, ``(model, CheckpointInfo, model_id)`` each, on ``clips`` test clips per video of a
    :class:`kpsem.data.DatasetIndex`: the command's and the app's one way in.

    Clip length, size, interval and normalisation come from each checkpoint, as in evaluation; each must name
    the data set's classes. ``progress(model_id, done, total)`` after every batch."""
    from kpsem.evaluate import _check_classes, evaluation_dataset

    if not models:
        raise ValueError("give at least one model to probe")
    if clips < 1:
        raise ValueError(f"clips must be at least 1; got {clips}")
    probes = parse_probes(probes)
    result: ProbeResult | None = None
    for model, info, model_id in models:
        _check_classes(info.class_names, list(index.class_names), Path(model_id))
        dataset = evaluation_dataset(index, info, clips=clips)  # the centre clips evaluation scores

        def tick(done: int, total: int, model_id: str = model_id) -> None:
            if progress is not None:
                progress(model_id, done, total)

        one = probe_model(model, dataset, class_names=info.class_names, model_id=model_id, arch=info.arch,
                          probes=probes, seed=seed, batch_size=batch_size, workers=workers, precision=precision,
                          progress=tick,
                          should_stop=should_stop, lock=lock)
        one.models[model_id].update(clip_frames=info.clip_frames, clip_size=info.clip_size)
        result = one if result is None else result.merged(one)
    assert result is not None  # at least one model, checked above
    result.info.update(clips_per_video=clips, split=index.split, data=str(index.root), layout=index.layout,
                       videos=len(index.videos))
    return result


def probe_checkpoints(
    checkpoints: Sequence[str | Path],
    *,
    data: str | Path,
    split: str = "test",
    probes: Sequence[str] = PROBES,
    clips: int = 1,
    seed: int = 0,
    batch_size: int = 4,
    workers: int = 2,
    precision: str = "auto",
    device: str | None = None,
    model_ids: Sequence[str] | None = None,
    layout: str | None = None,
    split_id: int = 1,
    annotations: str | Path | None = None,
    progress: bool = False,
) -> ProbeResult:
    """Load each checkpoint and probe it (:func:`probe_index`) on ``data``'s ``split``; ``progress`` shows one
    bar per model (tqdm)."""
    from kpsem.checkpoint import load_checkpoint
    from kpsem.data import open_dataset
    from kpsem.distributed import pick_device
    from kpsem.evaluate import _check_classes, default_model_id

    if not checkpoints:
        raise ValueError("give at least one checkpoint (--checkpoint PATH)")
    if model_ids is not None and len(model_ids) != len(checkpoints):
        raise ValueError(f"{len(model_ids)} model ids for {len(checkpoints)} checkpoints; give one --model-id each "
                         "or none")
    probes = parse_probes(probes)
    chosen = pick_device(0, device)
    index = open_dataset(data, split=split, layout=layout, split_id=split_id, annotations=annotations)  # type: ignore[arg-type]
    models = []
    for number, checkpoint in enumerate(checkpoints):
        loaded = load_checkpoint(checkpoint, map_location=chosen)
        _check_classes(loaded.info.class_names, list(index.class_names), Path(checkpoint))  # before any work
        model_id = model_ids[number] if model_ids is not None else default_model_id(checkpoint, loaded.info.arch)
        models.append((loaded.model, loaded.info, model_id))
    bars: dict[str, Any] = {}

    def tick(model_id: str, done: int, total: int) -> None:
        if not progress:
            return
        if model_id not in bars:
            from tqdm.auto import tqdm

            for bar in bars.values():
                bar.close()
            bars[model_id] = tqdm(total=total, desc=f"probe {model_id}", unit="clip", dynamic_ncols=True)
        bars[model_id].update(done - bars[model_id].n)

    try:
        result = probe_index(models, index, probes=probes, clips=clips, seed=seed, batch_size=batch_size,
                             workers=workers, precision=precision, progress=tick)
    finally:
        for bar in bars.values():
            bar.close()
    for (_, _, model_id), checkpoint in zip(models, checkpoints):
        result.models[model_id]["checkpoint"] = str(checkpoint)
    result.info.update(data=str(data), device=str(chosen))
    return result


def probe_report(result: ProbeResult) -> dict[str, Any]:
    """Everything but the per-video table as plain JSON-able data: probes, models, settings, the sentences,
    the summary per probe and per class (``NaN`` -> ``null`` where a probe does not apply)."""
    return {"format": PROBES_FORMAT, "probes": result.probes, "models": result.models, "info": result.info,
            "sentences": probe_sentences(result),
            "per_probe": json.loads(summarise_probes(result).to_json(orient="records")),
            "per_class": json.loads(per_class_probes(result).to_json(orient="records"))}


def _schema() -> Any:
    import pyarrow as pa

    types = {"model_id": pa.string(), "arch": pa.string(), "probe": pa.string(), "kind": pa.string(),
             "video_id": pa.string(), "num_clips": pa.int64(), "true_label": pa.int64(), "true_class": pa.string(),
             "target_label": pa.int64(), "target_class": pa.string(), "pred_label": pa.int64(),
             "pred_class": pa.string(), "pred_prob": pa.float32(), "true_prob": pa.float32(),
             "target_prob": pa.float32(), "reference_label": pa.int64(), "reference_class": pa.string(),
             "changed": pa.bool_(), "correct": pa.bool_(), "probs": pa.list_(pa.float32())}
    return pa.schema([(name, types[name]) for name in COLUMNS])


def write_probes(result: ProbeResult, path: str | Path) -> Path:
    """The table as Parquet (atomically), with the probes, models, classes and settings in its metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrow = pa.Table.from_pandas(result.table[list(COLUMNS)], schema=_schema(), preserve_index=False)
    meta = {"format": PROBES_FORMAT, "probes": result.probes, "models": result.models,
            "class_names": result.class_names, "info": result.info}
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), b"kpsem_probes": json.dumps(meta).encode()})
    with atomic_path(path) as partial:
        pq.write_table(arrow, partial)
    return path


def read_probes(path: str | Path) -> ProbeResult:
    """Read a table written by ``python -m kpsem probe``; :class:`ProbeError` names what is wrong."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    make = "make one with `python -m kpsem probe --checkpoint CKPT --data ROOT --out PATH.parquet`"
    if not path.is_file():
        raise ProbeError(f"probes file {path} does not exist; {make}")
    if path.stat().st_size == 0:
        raise ProbeError(f"probes file {path} is empty (0 bytes); it was not written completely")
    try:
        with open(path, "rb") as handle:  # one open: a file replaced meanwhile is read whole (see kpsem.io)
            arrow = pq.read_table(handle)
    except (pa.ArrowInvalid, OSError) as error:
        raise ProbeError(f"{path} is not a Parquet probes table ({str(error).splitlines()[0]}); {make}") from None
    meta = (arrow.schema.metadata or {}).get(b"kpsem_probes")
    if meta is None:
        hint = (" (it is a predictions table from `kpsem evaluate`)"
                if b"kpsem_format" in (arrow.schema.metadata or {}) else "")
        raise ProbeError(f"{path} is not a kpsem probes table: it has no probe metadata{hint}; {make}")
    missing = [c for c in COLUMNS if c not in arrow.column_names]
    if missing:
        raise ProbeError(f"{path} is not a kpsem probes table: it lacks columns {', '.join(missing)}")
    meta = json.loads(meta)
    return ProbeResult(arrow.to_pandas(), list(meta["probes"]), dict(meta["models"]), list(meta["class_names"]),
                       dict(meta.get("info", {})))
