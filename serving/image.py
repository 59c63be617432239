"""Uploaded images -> model input, in an image model's replica (no Ray, no HTTP).

The ingress ships each ``file`` part as an :class:`~serving.uploads.Upload` (name and
bytes) to the replica, which reads it with the checkpoint's own
:class:`~pipelines.media.image.decode.ImageReader`, so an upload is decoded and resized
exactly as the training images were::

    Upload(name, bytes) --header--> not an image, or not PNG/JPEG/BMP/WebP?  -> 422
                                    more pixels than data.image.max_pixels?  -> 413 (nothing decoded)
                        --ImageReader--> (1, size, size, 3) uint8: one frame
    bad bytes (empty, truncated, corrupt): DataError naming the part -> 422

Bytes are bounded at the HTTP edge (``max_upload_bytes``); pixels here, before decoding,
since a small PNG can declare gigabytes of them.
"""

from __future__ import annotations

import numpy as np

from pipelines.media.image.decode import ImageReader, ImageTooLarge
from serving.errors import TooLarge
from serving.uploads import Upload


class UploadImages:
    """Uploads -> one RGB frame each for one image model, refusing what it cannot take."""

    def __init__(self, reader: ImageReader) -> None:
        self.reader = reader

    def __call__(self, uploads: list[Upload]) -> list[np.ndarray]:
        """``(1, size, size, 3)`` uint8 per upload, in order; the first bad one raises
        (:class:`TooLarge` over the pixel limit, else ``DataError``), naming it."""
        return [self.frame(upload) for upload in uploads]

    def frame(self, upload: Upload) -> np.ndarray:
        try:
            return self.reader(upload.data, upload.name)
        except ImageTooLarge as exc:
            raise TooLarge(str(exc)) from None
