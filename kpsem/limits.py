"""Limits on untrusted input, in one place: each bounds what one file can make the process allocate.

A checkpoint, a predictions table or a frame image is checked against these before its data is read,
so that a small file that declares a huge tensor, table or picture is refused with a message instead of
taking gigabytes. The README's "Bad and hostile input" table lists each limit with what happens past it.
Every limit is far above what a real file of this project needs (the numbers in the comments).
"""

from __future__ import annotations

__all__ = [
    "MAX_CHECKPOINT_BYTES",
    "MAX_CHECKPOINT_PICKLE_BYTES",
    "MAX_MODEL_MODULES",
    "MAX_CLASSES",
    "MAX_CLIP_FRAMES",
    "MAX_CLIP_SIZE",
    "MAX_PREDICTION_ROWS",
    "MAX_PREDICTION_VALUES",
    "MAX_PREDICTION_BYTES",
    "MAX_PREDICTION_TEXT_BYTES",
    "MAX_FRAME_PIXELS",
    "MAX_DECODED_FRAME_PIXELS",
    "format_bytes",
]

# Checkpoints. A full MFNet is 33 MB of tensors, MF-KPSEM a little more.
MAX_CHECKPOINT_BYTES = 2 * 2**30  # tensors of one checkpoint, as its zip directory declares them; and the model built
MAX_CHECKPOINT_PICKLE_BYTES = 8 * 2**20  # its pickled metadata (names, config, class list): ours are under 1 MB
MAX_MODEL_MODULES = 10_000  # modules a checkpoint's config may build (a full MF-KPSEM has 315)
MAX_CLASSES = 100_000  # class names in a checkpoint, probabilities in a predictions row (Kinetics-700: 700)
MAX_CLIP_FRAMES = 128  # frames per clip a checkpoint may ask for (the paper's: 16)
MAX_CLIP_SIZE = 512  # side of the square crop a checkpoint may ask for (the paper's: 224)

# Predictions tables (Parquet). A 10-clip evaluation of Kinetics-400 is 220k rows and 90M values.
MAX_PREDICTION_ROWS = 5_000_000  # clip and video rows
MAX_PREDICTION_VALUES = 150_000_000  # values in all columns, list items counted one by one
MAX_PREDICTION_BYTES = 2**30  # the file's pages once decompressed
MAX_PREDICTION_TEXT_BYTES = 256 * 2**20  # text once dictionary-encoded strings are expanded

# Frame images in frame folders. JPEGs are decoded at 1/2, 1/4 or 1/8 scale when the clip needs no more.
MAX_FRAME_PIXELS = 2**30  # what an image header may declare (32768 x 32768, OpenCV's own ceiling); past it: a bomb
MAX_DECODED_FRAME_PIXELS = 40_000_000  # pixels decoded for one frame (an 8K frame is 33M): 120 MB as RGB


def format_bytes(size: int) -> str:
    """1536 -> '1.5 KiB': messages state a size beside its limit in the same units."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"
