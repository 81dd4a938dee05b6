"""Image files: size from the header, pixels as the sample contract wants them.

One size everywhere: the stored pixel grid. EXIF orientation is ignored both when the header is
read (PIL's ``size``) and when the pixels are decoded (``cv2.IMREAD_IGNORE_ORIENTATION``), as
annotations refer to the stored grid; the readers take each image's size from its header, never
from an annotation that may disagree. A file that is empty, not an image, or truncated (a JPEG
without its end-of-image marker, a PNG without its ``IEND`` chunk: decoders fill the missing
part with grey) is refused with its name.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from detkd.errors import DataError

PADDING = b"\x00\r\n\t "  # what some writers leave after a JPEG's end-of-image marker
END_BYTES = 1024  # the end of a file that check_file_end reads
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".PNG", ".JPG", ".JPEG")


def find_image(folder: str, stem: str, referenced_by: str) -> str:
    """The image ``folder/stem.<ext>`` for any usual extension, or a DataError naming both."""
    for ext in IMAGE_EXTENSIONS:
        path = os.path.join(folder, stem + ext)
        if os.path.isfile(path):
            return path
    raise DataError(referenced_by, f"no image {stem}.{{png,jpg,jpeg,bmp}} in {folder}")


def image_size(path: str) -> tuple[int, int]:
    """``(width, height)`` read from the file header only (no decoding)."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise DataError(path, "image file is missing") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(path, f"unreadable image ({e})") from None


def read_rgb(path: str) -> np.ndarray:
    """The image as ``[H, W, 3]`` uint8 RGB (EXIF orientation ignored), or a DataError naming
    the file when it is missing, undecodable or truncated."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(path, "image file is missing") from None
    except OSError as e:
        raise DataError(path, f"cannot read the image ({e.strerror or e})") from None
    refuse_truncated(path, data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise DataError(path, "unreadable image (empty, or not a valid image file)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_file_end(path: str) -> None:
    """:func:`read_rgb`'s check for a cut-off file without decoding it: only the file's first and
    last bytes are read (``detkd data stats`` runs it on every image)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(len(head), size - END_BYTES))
            tail = f.read()
            if not tail.rstrip(PADDING) and size > len(head) + len(tail):  # all padding: look further back
                f.seek(len(head))
                tail = f.read()
    except FileNotFoundError:
        raise DataError(path, "image file is missing") from None
    except OSError as e:
        raise DataError(path, f"cannot read the image ({e.strerror or e})") from None
    refuse_truncated(path, head + tail)


def refuse_truncated(path: str, data: bytes) -> None:
    """A DataError naming ``path`` when ``data`` (the file's bytes, or its first and last ones) ends early."""
    problem = truncation(data)
    if problem:
        raise DataError(path, f"truncated image ({problem})")


def truncation(data: bytes) -> str | None:
    """Why a JPEG or PNG file's bytes end early, or None (other formats: the decoder decides)."""
    if data[:3] == b"\xff\xd8\xff":
        end = data.rstrip(PADDING)
        return None if end.endswith(b"\xff\xd9") else "no JPEG end-of-image marker"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return None if b"IEND" in data[-16:] else "no PNG IEND chunk"
    return None
