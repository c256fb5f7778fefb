"""Numbers fixed by the MFNet reference implementation (SPEC section 1), and the stand-in class names."""

from collections.abc import Sequence

__all__ = [
    "MFNET_MEAN", "MFNET_STD", "CLIP_FRAMES", "CLIP_SIZE", "FRAME_INTERVAL", "placeholder_class_names",
    "are_placeholder_names",
]

MFNET_MEAN: tuple[float, float, float] = (124 / 255, 117 / 255, 104 / 255)  # RGB in [0, 1]
MFNET_STD: tuple[float, float, float] = (1 / (0.0167 * 255),) * 3  # 0.2348 for every channel
CLIP_FRAMES = 16  # frames per clip
CLIP_SIZE = 224  # side of the square crop
FRAME_INTERVAL = 2  # default sampling interval between frames


def placeholder_class_names(count: int) -> list[str]:
    """``class_0`` .. ``class_{count-1}``: the names of classes nothing names (a published checkpoint, a table
    without its summary), shown until a class names file is loaded."""
    return [f"class_{index}" for index in range(count)]


def are_placeholder_names(names: Sequence[str]) -> bool:
    """Whether ``names`` are exactly the stand-ins :func:`placeholder_class_names` gives."""
    return list(names) == placeholder_class_names(len(names))
