"""One image (encoded bytes or a file) -> the model's input: one RGB frame.

    bytes / file --Pillow: open (header only)--> not an image, or not PNG/JPEG/BMP/WebP -> DataError
                                                 more than data.image.max_pixels?        -> ImageTooLarge
                 --draft (JPEG: DCT scaling), EXIF orientation applied, RGB--> decoded image
                 --BOX resize to size x size--> frame (1, size, size, 3) uint8

An image is a one-frame sequence, so the video models' frame CNN and everything after it
(batching by frame count, ``models.vec2seq``) run on images unchanged. The same
:class:`ImageReader` runs in Ray Data (training ingest and ``rayseq eval``) and in the
Serve replicas (uploads), so a model sees an upload exactly as it saw its training
images. Resizing is :func:`square_rgb`, which video frame folders use too: the mean of the
source pixels each output pixel covers, so a large shrink does not alias.

The pixel limit is checked on the header, before anything is decoded: a PNG of a few
kilobytes can declare 50,000 x 50,000 pixels. Pillow's own ``DecompressionBombError``
(past twice its ``MAX_IMAGE_PIXELS``) is the same refusal. A file cut short or corrupt
fails while decoding and is a :class:`~pipelines.errors.DataError` naming it, never a
half-grey image (Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines.config import ImageConfig
from pipelines.errors import DataError

FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "WEBP"})
"""The image files this medium reads, by Pillow's format names (``MPO``: a camera JPEG
carrying extra pictures; its first is read)."""
NAMED = "PNG, JPEG, BMP or WebP"
"""How messages name them."""


class ImageTooLarge(DataError):
    """An image over ``data.image.max_pixels``: a bad training record; serving answers 413."""


def square_rgb(image: Image.Image, side: int) -> np.ndarray:
    """``(side, side, 3)`` uint8 RGB of an opened image: converted, then ``BOX``-resized
    (each output pixel the mean of the source pixels it covers; enlarging: nearest)."""
    return np.array(image.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=np.uint8)


class ImageReader:
    """Decode and resize images the way :class:`~pipelines.config.ImageConfig` says."""

    def __init__(self, config: ImageConfig) -> None:
        self.config = config

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.config.size, self.config.size, 3)

    def __call__(self, source: bytes | str | Path, origin: str) -> np.ndarray:
        """Encoded bytes or an image file -> ``(1, size, size, 3)`` uint8; ``origin``
        names it in errors (``file[0] 'cat.png'``, ``manifest.csv:row 3 (a.png)``)."""
        if isinstance(source, (bytes, bytearray, memoryview)):
            if not len(source):
                raise DataError(f"{origin}: empty file")
            return self._read(io.BytesIO(source), origin)
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{origin}: no such file ({path})")
        if path.stat().st_size == 0:
            raise DataError(f"{origin}: empty file")
        return self._read(path, origin)

    def _read(self, file: io.BytesIO | Path, origin: str) -> np.ndarray:
        side, limit = self.config.size, self.config.max_pixels
        try:
            with Image.open(file) as image:
                if image.format not in FORMATS:
                    raise DataError(f"{origin}: a {image.format} image; images are {NAMED}")
                width, height = image.size
                if width * height > limit:
                    raise ImageTooLarge(f"{origin}: {width}x{height} = {width * height:,} pixels; the limit is "
                                        f"{limit:,} (data.image.max_pixels)")
                image.draft("RGB", (side, side))  # JPEG: decode at 1/2..1/8 scale, still >= side
                frame = square_rgb(ImageOps.exif_transpose(image), side)
        except DataError:  # a ValueError: not one of Pillow's below
            raise
        except Image.DecompressionBombError as err:
            raise ImageTooLarge(f"{origin}: too many pixels to decode ({err})") from None
        except UnidentifiedImageError:
            raise DataError(f"{origin}: not a readable image; images are {NAMED}") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{origin}: truncated or corrupt image ({_reason(err)})") from None
        return frame[None]


def _reason(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
