"""Grad-CAM for 3-D video models, built on pytorch-grad-cam's ``BaseCAM`` and ``ActivationsAndGradients``.

Why a subclass and not ``pytorch_grad_cam.GradCAM`` as is: the package runs the whole network with
autograd on and normalises every map to [0, 1] before resizing it (``scale_cam_image``, a cubic spline
for 3-D maps). Comparing two models needs the raw maps, one weight per time slice is not one of its
modes, and the cost target (at most 1.3x a plain forward pass) needs autograd only above the CAM layer.
So this module keeps the package's activation/gradient capture, weighting and channel sum, and adds:

* a forward hook (registered before the package's own) that turns the CAM layer's output into a fresh
  leaf tensor and switches autograd on from there; the caller runs the forward under
  ``torch.no_grad()``, so nothing below the CAM layer is recorded and the gradient is taken with
  ``torch.autograd.grad`` down to that leaf only (no weight gradients; the model's ``.grad`` stays
  untouched, and the model itself is never mutated, so a cached model can be shared);
* the model's train/eval mode is never changed as others see it: each forward runs in eval mode inside
  :func:`explaining`, which holds the model's lock and puts every module's own mode back, so a model in
  training mode keeps its BatchNorm running statistics, and explanations from several threads neither
  see one another's switch nor leave the model in the wrong mode;
* per-time-slice weights (MMAction2 / SlowFast style): gradients averaged over H, W per t;
* raw (ReLU'd, unnormalised) maps, and a trilinear upsampling to the clip's frames and pixels that
  keeps the cell-centre convention of :mod:`kpsem.models.kpsem_module` (``align_corners=False``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpsem._compat import import_torchvision
from kpsem.models import has_kpsem, list_models, model_class
from kpsem.models.kpsem_module import KPSEMInternals

import_torchvision()  # pytorch-grad-cam imports torchvision; on this CPU torch that needs the shim first

from pytorch_grad_cam.base_cam import BaseCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

__all__ = ["CAM_LAYERS", "Weighting", "CAMResult", "VideoGradCAM", "explaining", "upsample_cam", "normalise_cam"]

# every registered model's named stages, top first (each model class lists its own: ``cam_layers``)
CAM_LAYERS = tuple(dict.fromkeys(layer for name in list_models() for layer in model_class(name).cam_layers))
Weighting = Literal["clip", "slice"]
_WEIGHTINGS = ("clip", "slice")
# One explanation at a time per model: the package's hooks record every forward of the layer they sit on,
# so two threads explaining one cached model (two Streamlit sessions) would read each other's tensors, and
# one thread's switch to eval mode (or back) would change the mode another thread's forward runs in.
# Re-entrant, so that code already inside explaining() may call explain().
_model_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _lock_for(model: nn.Module) -> threading.RLock:
    with _locks_guard:
        return _model_locks.setdefault(model, threading.RLock())


@contextmanager
def explaining(model: nn.Module) -> Iterator[nn.Module]:
    """The model's lock held and the model in eval mode for the block; every module's mode put back after.

    Why every module's own flag, not ``model.train(was_training)``: a model being fine-tuned with frozen
    BatchNorm layers (in eval mode inside a training model) would come back with them training. Why the
    lock: the switch and the forward must not interleave with another thread's, or one thread's forward
    runs in training mode (BatchNorm then updates its running statistics) and the last restore wins.
    For a model already in eval mode (the app's cached models) this is one walk over its modules.
    """
    with _lock_for(model):
        modes = [(module, module.training) for module in model.modules()]
        changed = any(training for _, training in modes)
        if changed:
            model.eval()
        try:
            yield model
        finally:
            if changed:
                for module, training in modes:
                    module.training = training


@dataclass
class CAMResult:
    """One explained batch: logits, the CAM at layer resolution and at clip resolution."""

    logits: torch.Tensor  # (N, classes), detached, CPU
    targets: list[int]  # class explained for each clip
    activations: torch.Tensor  # (N, C, T', H', W') the CAM layer's output, detached, CPU
    gradients: torch.Tensor  # (N, C, T', H', W') d score / d activations, detached, CPU
    weights: np.ndarray  # (N, C) for "clip" weighting, (N, C, T') for "slice"
    cam_feature: np.ndarray  # (N, T', H', W') raw ReLU'd map at the layer's resolution
    cam_raw: np.ndarray  # (N, T, H, W) raw map upsampled to the clip (unnormalised, >= 0)
    cam: np.ndarray  # (N, T, H, W) cam_raw divided by each clip's maximum, in [0, 1]
    internals: KPSEMInternals | None  # MF-KPSEM's internals from the same forward (detached, CPU)


def upsample_cam(cam: torch.Tensor | np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """(N, T', H', W') -> (N, T, H, W), trilinear with ``align_corners=False``.

    Our own code, not ``pytorch_grad_cam.utils.image.scale_cam_image``: that one min-max normalises
    each map before zooming (we need raw values) and uses a cubic spline, which overshoots below 0.
    ``align_corners=False`` puts feature cell j's value at the centre of the pixels it covers, the
    convention every coordinate of KPSEM uses.
    """
    tensor = torch.as_tensor(np.asarray(cam, dtype=np.float32))
    return F.interpolate(tensor[:, None], size=size, mode="trilinear", align_corners=False)[:, 0].numpy()


def normalise_cam(cam: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Divide a non-negative map by ``scale`` (default: its own maximum); 0 stays 0, all-zero stays 0."""
    scale = float(cam.max()) if scale is None else float(scale)
    return np.zeros_like(cam) if scale <= 0 else np.clip(cam / scale, 0.0, 1.0).astype(np.float32)


class VideoGradCAM(BaseCAM):
    """Grad-CAM over one named layer of a 3-D model; a context manager that always releases its hooks.

    >>> with VideoGradCAM(model, layer="tail", weighting="slice") as cam:
    ...     result = cam.explain(clip)          # clip (N, 3, T, H, W)

    ``weighting="clip"``: one weight per channel, gradients averaged over T', H', W' (classic
    Grad-CAM). ``weighting="slice"``: one weight per channel and time slice, averaged over H', W'.
    The model's mode is left as it is; each :meth:`explain` runs the model in eval mode inside
    :func:`explaining`, so explainers of one model may overlap in time and across threads.
    """

    def __init__(self, model: nn.Module, *, layer: str = "tail", weighting: Weighting = "clip") -> None:
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting must be one of {_WEIGHTINGS}; got {weighting!r}")
        try:
            target_layer = model.get_submodule(layer)
        except AttributeError:
            known = list(getattr(model, "cam_layers", ()))
            raise ValueError(
                f"{type(model).__name__} has no layer {layer!r} for Grad-CAM; use one of {known} "
                "(or any dotted submodule name such as 'conv5.B02')"
            ) from None
        self.layer_name = layer
        self.weighting: Weighting = weighting
        self._armed = False  # the leaf hook acts only inside explain()
        self._leaf: torch.Tensor | None = None
        # Registered first (prepend) so that the package's hooks see the leaf, not the original output.
        self._leaf_handle = target_layer.register_forward_hook(self._make_leaf, prepend=True)
        try:
            with explaining(model):  # BaseCAM.__init__ calls model.eval(): undone at once, seen by no one
                super().__init__(model, [target_layer], uses_gradients=True, detach=True)
        except BaseException:
            self._leaf_handle.remove()
            raise

    # -- hooks ------------------------------------------------------------------------------------

    def _make_leaf(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        """Cut the graph at the CAM layer and record autograd from here on (see module doc)."""
        if not self._armed:
            return None
        if self._leaf is not None:
            raise RuntimeError(f"layer {self.layer_name!r} ran twice in one forward pass; Grad-CAM needs one output")
        torch.set_grad_enabled(True)  # undone by the torch.no_grad() context around the forward
        self._leaf = output.detach().requires_grad_(True)
        return self._leaf

    def release(self) -> None:
        """Remove every hook this explainer added (the model's mode was never changed). Idempotent."""
        self.activations_and_grads.release()
        self._leaf_handle.remove()

    def __enter__(self) -> VideoGradCAM:
        return self

    def __exit__(self, exc_type: object, exc_value: object, traceback: object) -> bool:
        self.release()
        return False  # unlike BaseCAM.__exit__, never swallow an exception (it hides IndexError)

    def __del__(self) -> None:
        if hasattr(self, "_leaf_handle"):
            self._leaf_handle.remove()
        if hasattr(self, "activations_and_grads"):
            self.activations_and_grads.release()

    # -- weighting --------------------------------------------------------------------------------

    def get_cam_weights(  # type: ignore[override]
        self, input_tensor: torch.Tensor, target_layer: nn.Module, targets: list, activations: np.ndarray,
        grads: np.ndarray,
    ) -> np.ndarray:
        """(N, C, T', H', W') gradients -> (N, C) per clip or (N, C, T') per time slice."""
        if grads.ndim != 5:
            raise ValueError(f"VideoGradCAM needs 5-D (N, C, T, H, W) activations at "
                             f"{self.layer_name!r}; got {grads.ndim}-D")
        return grads.mean(axis=(2, 3, 4)) if self.weighting == "clip" else grads.mean(axis=(3, 4))

    def get_cam_image(  # type: ignore[override]
        self, input_tensor: torch.Tensor, target_layer: nn.Module, targets: list, activations: np.ndarray,
        grads: np.ndarray, eigen_smooth: bool = False,
    ) -> np.ndarray:
        """Weighted channel sum, (N, T', H', W'). The package handles (N, C) weights on 5-D maps;
        per-slice weights (N, C, T') are ours."""
        if self.weighting == "clip":
            return super().get_cam_image(input_tensor, target_layer, targets, activations, grads, eigen_smooth)
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        return (weights[:, :, :, None, None] * activations).sum(axis=1)  # (N, T', H', W')

    # -- the one call -----------------------------------------------------------------------------

    def explain(self, clip: torch.Tensor, targets: list[int] | int | None = None) -> CAMResult:
        """One forward (autograd only above the CAM layer) and one backward to the CAM layer.

        clip (N, 3, T, H, W) on the model's device; ``targets`` a class per clip (default: prediction).
        """
        if clip.dim() != 5:
            raise ValueError(f"expected a clip batch of shape (N, 3, T, H, W); got {tuple(clip.shape)}")
        with explaining(self.model):
            return self._explain(clip, targets)

    def _explain(self, clip: torch.Tensor, targets: list[int] | int | None) -> CAMResult:
        self.activations_and_grads.clear()
        self._leaf = None
        self._armed = True
        internals = None
        try:
            with torch.no_grad():
                if has_kpsem(self.model):
                    logits, internals = self.model.forward_with_internals(clip)
                else:
                    logits = self.model(clip)
                if self._leaf is None:
                    raise RuntimeError(f"layer {self.layer_name!r} did not run in the forward pass")
                chosen = self._resolve_targets(logits, targets)
                with torch.enable_grad():
                    score = sum(ClassifierOutputTarget(c)(row) for c, row in zip(chosen, logits))
                    if not score.requires_grad:
                        raise RuntimeError(f"the logits do not depend on layer {self.layer_name!r}")
                    # Fires the package's tensor hook, which stores the gradient it records.
                    torch.autograd.grad(score, [self._leaf])
        finally:
            self._armed = False
            self._leaf = None
        # (N, C, T', H', W') on the CPU, float32 also under autocast (numpy has no bfloat16)
        activations = self.activations_and_grads.activations[0].float()
        gradients = self.activations_and_grads.gradients[0].float()
        acts_np, grads_np = activations.numpy(), gradients.numpy()
        weights = self.get_cam_weights(clip, self.target_layers[0], [], acts_np, grads_np)
        cam_feature = np.maximum(self.get_cam_image(clip, self.target_layers[0], [], acts_np, grads_np), 0)
        cam_raw = upsample_cam(cam_feature, tuple(clip.shape[2:]))  # (N, T, H, W)
        cam = np.stack([normalise_cam(c) for c in cam_raw])
        self.activations_and_grads.clear()
        return CAMResult(
            logits=logits.detach().float().cpu(),
            targets=chosen,
            activations=activations,
            gradients=gradients,
            weights=weights,
            cam_feature=cam_feature.astype(np.float32),
            cam_raw=cam_raw,
            cam=cam,
            internals=internals.detach() if internals is not None else None,
        )

    @staticmethod
    def _resolve_targets(logits: torch.Tensor, targets: list[int] | int | None) -> list[int]:
        n, classes = logits.shape
        if targets is None:
            return [int(c) for c in logits.argmax(dim=1)]
        chosen = [int(targets)] * n if isinstance(targets, int) else [int(c) for c in targets]
        if len(chosen) != n:
            raise ValueError(f"{len(chosen)} target classes for a batch of {n} clips")
        for c in chosen:
            if not 0 <= c < classes:
                raise ValueError(f"target class {c} is out of range for a model with {classes} "
                                 f"classes (0..{classes - 1})")
        return chosen
