"""Image files: size from the header, pixels as the sample contract wants them."""

from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from detkd.errors import DataError

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
    """The image as ``[H, W, 3]`` uint8 RGB, or a DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(path, "image file is missing")
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DataError(path, "unreadable image (not a valid image file or truncated)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
