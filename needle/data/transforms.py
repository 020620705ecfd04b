"""Random image augmentations acting on one H x W x C NumPy image."""
import numpy as np


class Transform:
    """Base class: a callable mapping one H x W x C image to a new image."""

    def __call__(self, img):
        raise NotImplementedError


class RandomFlipHorizontal(Transform):
    """Mirror the image left-right with probability ``p``.

    Args:
        p: probability of flipping.

    Example:
        >>> img = np.arange(6.0).reshape(1, 3, 2)
        >>> RandomFlipHorizontal(p=1.0)(img)[0, :, 0]
        array([4., 2., 0.])
    """

    def __init__(self, p=0.5):
        self.p = p

    def __call__(self, img):
        return np.flip(img, axis=1) if np.random.rand() < self.p else img


class RandomCrop(Transform):
    """Zero-pad by ``padding`` on each side of H and W, then crop a randomly shifted window
    of the original size (shift in ``[-padding, padding]`` along each axis).

    Args:
        padding: maximum shift in pixels.

    Example:
        >>> img = np.ones((4, 4, 1))
        >>> RandomCrop(padding=2)(img).shape
        (4, 4, 1)
    """

    def __init__(self, padding=3):
        self.padding = padding

    def __call__(self, img):
        shift_x, shift_y = np.random.randint(-self.padding, self.padding + 1, size=2)
        return self.crop(img, shift_x, shift_y)

    def crop(self, img, shift_x, shift_y):
        """Deterministic part of the transform: output[i, j] = img[i + shift_x, j + shift_y],
        zero where that falls outside the image."""
        p = self.padding
        h, w = img.shape[:2]
        padded = np.pad(img, [(p, p), (p, p)] + [(0, 0)] * (img.ndim - 2))
        return padded[p + shift_x:p + shift_x + h, p + shift_y:p + shift_y + w]
