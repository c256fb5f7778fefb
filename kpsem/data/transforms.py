"""Clip preprocessing of MFNet (SPEC section 1): the same crop for every frame of a clip.

train: random square scale (each frame resized to s x s, s uniform in ``scale_range``, as the MFNet
reference's ``RandomScale(make_square=True)`` does), random ``size`` crop, horizontal flip with p = 0.5
(``flip=False`` turns it off).
test: resize the short side to ``resize`` (aspect kept), centre crop ``size``. The evaluation protocols
(:class:`kpsem.data.EvalProtocol`) also take three crops along the long side (``crop="three"``) or a seeded
random crop after a square resize (``crop="random"``, ``square=True``: the MFNet reference's test transform);
:func:`view_geometry` works out every such box.
Defaults follow the 224 recipe and scale with ``size``: resize = round(size * 256 / 224) and
scale_range = (size, round(size * 288 / 224)), so a 112 model gets 128 and (112, 144).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kpsem.constants import CLIP_SIZE, MFNET_MEAN, MFNET_STD

__all__ = ["TEST_CROPS", "ClipTransform", "TransformedClip", "mirrored_labels", "normalise", "denormalise",
           "view_geometry"]

# Words that a left-right mirror turns into each other, in class names.
_MIRROR_WORDS = {"left": ("right",), "right": ("left",), "cw": ("ccw",), "ccw": ("cw",),
                 "clockwise": ("anticlockwise", "counterclockwise"), "anticlockwise": ("clockwise",),
                 "counterclockwise": ("clockwise",)}
_WORD = re.compile(r"[A-Za-z]+")


def mirrored_labels(class_names: Sequence[str]) -> list[int]:
    """Label of each class after a left-right flip of its clips: mirror-image pairs swap, others stay.

    Why: a flipped "slide_left" clip shows "slide_right", and a flipped "Pushing something from left
    to right" shows "... from right to left"; flipping without swapping teaches the model that the two
    look alike. Pairs are the names that differ only in the words left/right, cw/ccw or
    clockwise/anticlockwise (counterclockwise); e.g. ["rise", "slide_left", "slide_right"] -> [0, 2, 1].
    A class whose name holds such a word but has no mirrored partner keeps its label.
    """
    index = {name.lower(): i for i, name in enumerate(class_names)}
    result = list(range(len(class_names)))
    for i, name in enumerate(class_names):
        words = [m for m in _WORD.finditer(name) if m.group().lower() in _MIRROR_WORDS]
        if not words:
            continue
        for choice in range(2):  # clockwise has two spellings of its mirror image
            parts, last = [], 0
            for m in words:
                options = _MIRROR_WORDS[m.group().lower()]
                parts += [name[last:m.start()], options[min(choice, len(options) - 1)]]
                last = m.end()
            partner = index.get(("".join(parts) + name[last:]).lower())
            if partner is not None and partner != i:
                result[i] = partner
                break
    for i, j in enumerate(result):  # keep it an involution: only mutual pairs swap
        if result[j] != i:
            result[i] = i
    return result


TEST_CROPS = ("centre", "three", "random")  # test-time crops: the centre, one of three along the long side, random


def view_geometry(
    height: int,
    width: int,
    *,
    size: int,
    resize: int,
    crop: str = "centre",
    square: bool = False,
    position: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where a test view of a ``height`` x ``width`` frame comes from: ((resized h, w), (top, left)) of its
    ``size`` x ``size`` crop.

    The frame is resized so that its short side is ``resize`` (aspect kept; never below ``size``), or to
    ``resize`` x ``resize`` when ``square``. ``crop``: "centre"; "three", crop ``position`` (0, 1, 2) of three
    along the long side (its start, centre and end; centred on the short side); "random", a top-left corner
    drawn uniformly from every position where the crop fits (``rng``: top first, then left).
    E.g. 240 x 320 with resize = size = 224: resized 224 x 299, three crops at left 0, 37 and 75.
    """
    if crop not in TEST_CROPS:
        raise ValueError(f"crop must be one of {', '.join(TEST_CROPS)}; got {crop!r}")
    if square:
        new_h = new_w = resize
    else:
        scale = resize / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    if crop == "three":
        if position not in (0, 1, 2):
            raise ValueError(f"position must be 0, 1 or 2 (three crops); got {position}")
        if new_w >= new_h:  # landscape (or square): the crops move along the width
            left = (0, (new_w - size) // 2, new_w - size)[position]
        else:
            top = (0, (new_h - size) // 2, new_h - size)[position]
    elif crop == "random":
        if rng is None:
            raise ValueError("a random crop needs rng= (a seeded numpy Generator)")
        top = int(rng.integers(new_h - size + 1))
        left = int(rng.integers(new_w - size + 1))
    return (new_h, new_w), (top, left)


@dataclass
class TransformedClip:
    """A clip as the model sees it, and the pixels behind it."""

    clip: torch.Tensor  # (3, T, size, size) float32, normalised
    display: np.ndarray  # (T, size, size, 3) uint8: exactly the pixels of ``clip`` before normalisation
    crop_box: tuple[int, int, int, int]  # (top, left, height, width) in the resized frame
    resized_size: tuple[int, int]  # (height, width) of the frame after resizing, before cropping
    scale: tuple[float, float]  # (y, x) resized / input pixels; equal for test, may differ for train
    flipped: bool  # whether the crop was mirrored left-right (train only)


def normalise(display: np.ndarray, mean: tuple[float, ...] = MFNET_MEAN, std: tuple[float, ...] = MFNET_STD
              ) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float32, (x / 255 - mean) / std per channel."""
    x = torch.from_numpy(np.ascontiguousarray(display)).permute(3, 0, 1, 2).float().div_(255)  # (3, T, H, W)
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
    return x.sub_(m).div_(s)


def denormalise(clip: torch.Tensor, mean: tuple[float, ...] = MFNET_MEAN, std: tuple[float, ...] = MFNET_STD
                ) -> np.ndarray:
    """Inverse of :func:`normalise`: (3, T, H, W) -> (T, H, W, 3) uint8 (rounded)."""
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
    x = (clip.detach().float().cpu() * s + m).mul(255).round().clamp(0, 255)
    return x.to(torch.uint8).permute(1, 2, 3, 0).numpy()


class ClipTransform:
    """MFNet's train or test preprocessing; call it on (T, H, W, 3) uint8 RGB frames."""

    def __init__(
        self,
        train: bool,
        size: int = CLIP_SIZE,
        resize: int | None = None,
        scale_range: tuple[int, int] | None = None,
        mean: tuple[float, ...] = MFNET_MEAN,
        std: tuple[float, ...] = MFNET_STD,
        flip: bool = True,
        crop: str = "centre",
        square: bool = False,
    ) -> None:
        if crop not in TEST_CROPS:
            raise ValueError(f"crop must be one of {', '.join(TEST_CROPS)}; got {crop!r}")
        if size < 1:
            raise ValueError(f"size must be a positive number of pixels; got {size}")
        self.train = bool(train)
        self.size = int(size)
        self.resize = int(resize) if resize is not None else round(size * 256 / 224)  # test short side
        lo, hi = scale_range if scale_range is not None else (size, round(size * 288 / 224))
        self.scale_range = (int(lo), int(hi))  # train square side, inclusive
        if self.resize < self.size:
            raise ValueError(f"resize ({self.resize}) must be at least size ({self.size}) to centre crop")
        if not self.size <= self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must satisfy size <= low <= high; got {self.scale_range} for size {size}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB); got {mean}, {std}")
        self.mean, self.std = tuple(mean), tuple(std)
        self.flip = bool(flip)  # train only: mirror left-right with p = 0.5
        self.crop = crop  # test only: which crop (see view_geometry)
        self.square = bool(square)  # test only: resize to resize x resize instead of the short side

    def __repr__(self) -> str:
        mode = (f"train, scale_range={self.scale_range}, flip={self.flip}" if self.train
                else f"test, resize={self.resize}{' square' if self.square else ''}, crop={self.crop}")
        return f"ClipTransform({mode}, size={self.size})"

    @property
    def needed_short_side(self) -> int:
        """The short side decoding should keep so that no step here has to upscale a capped frame."""
        return self.scale_range[1] if self.train else self.resize

    def __call__(self, frames: np.ndarray, rng: np.random.Generator | None = None) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (3, T, size, size) float32, normalised."""
        return self.apply(frames, rng=rng).clip

    def apply(self, frames: np.ndarray, rng: np.random.Generator | None = None, position: int = 0
              ) -> TransformedClip:
        """The clip, its display pixels and the crop actually used (``rng`` drives the train randomness and
        a random test crop; ``position`` picks one of three test crops)."""
        import cv2

        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected frames of shape (T, H, W, 3) and dtype uint8; got {frames.shape} {frames.dtype}"
            )
        height, width = frames.shape[1:3]
        flipped = False
        if self.train:
            rng = rng if rng is not None else np.random.default_rng()
            side = int(rng.integers(self.scale_range[0], self.scale_range[1] + 1))
            new_h = new_w = side
            top = int(rng.integers(side - self.size + 1))
            left = int(rng.integers(side - self.size + 1))
            flipped = bool(rng.random() < 0.5) and self.flip
        else:
            (new_h, new_w), (top, left) = view_geometry(height, width, size=self.size, resize=self.resize,
                                                        crop=self.crop, square=self.square, position=position,
                                                        rng=rng)
        shrink = new_h * new_w < height * width
        method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        display = np.empty((len(frames), self.size, self.size, 3), dtype=np.uint8)  # (T, size, size, 3)
        for t, frame in enumerate(frames):
            resized = frame if (new_h, new_w) == (height, width) else cv2.resize(frame, (new_w, new_h),
                                                                                  interpolation=method)
            display[t] = resized[top:top + self.size, left:left + self.size]
        if flipped:
            display = np.ascontiguousarray(display[:, :, ::-1])
        return TransformedClip(
            clip=normalise(display, self.mean, self.std),  # (3, T, size, size)
            display=display,
            crop_box=(top, left, self.size, self.size),
            resized_size=(new_h, new_w),
            scale=(new_h / height, new_w / width),
            flipped=flipped,
        )
