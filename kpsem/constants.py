"""Numbers fixed by the MFNet reference implementation (SPEC section 1)."""

__all__ = ["MFNET_MEAN", "MFNET_STD", "CLIP_FRAMES", "CLIP_SIZE", "FRAME_INTERVAL"]

MFNET_MEAN: tuple[float, float, float] = (124 / 255, 117 / 255, 104 / 255)  # RGB in [0, 1]
MFNET_STD: tuple[float, float, float] = (1 / (0.0167 * 255),) * 3  # 0.2348 for every channel
CLIP_FRAMES = 16  # frames per clip
CLIP_SIZE = 224  # side of the square crop
FRAME_INTERVAL = 2  # default sampling interval between frames
