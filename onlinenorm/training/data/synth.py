"""Synthetic image classification data, written in the real file formats.

Each class owns a colour tint (a quick, coarse cue: pairs of classes share a
tint, so it alone cannot pass about half accuracy) and two coloured
sinusoidal gratings (orientation, frequency, colour: the fine cue that tells
the pair apart). A sample is its tint plus its class's gratings with random
phase (so a pixel template cannot work but a convolution can) and jittered
orientation, frequency and amplitude, plus a weaker grating of a random
*other* class, smooth low-frequency clutter, pixel noise, and brightness and
contrast changes. A ResNet learns it well above chance within a few epochs,
but not perfectly, so normalizer choices show.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .split import Split

TINT = 0.6  # length of the class tint, a chroma vector orthogonal to grey
CLASSES_PER_TINT = 2
GRATINGS_PER_CLASS = 2
FREQUENCY_RANGE = (1.5, 5.0)  # cycles per image side
ORIENTATION_JITTER = 0.2  # radians, std
FREQUENCY_JITTER = 0.1  # relative, half-width
AMPLITUDE_RANGE = (0.35, 0.9)
DISTRACTOR_AMPLITUDE = 0.8  # upper bound of the other class's grating amplitude
CLUTTER_GRID = 4  # the smooth clutter is a CLUTTER_GRID^2 random field upsampled
CLUTTER_STD = 0.45
PIXEL_NOISE_STD = 0.3
BRIGHTNESS_STD = 0.25
CONTRAST_RANGE = (0.7, 1.3)
PIXEL_SCALE = 60.0  # one unit of signal in uint8 levels, around mid-grey 128
CHUNK = 1024  # samples generated at once (bounds float64 memory)


@dataclass(frozen=True)
class ClassGratings:
    """Per class: tint (C, 3); per class and grating: orientation, frequency (C, G), RGB colour (C, G, 3)."""

    tint: np.ndarray
    orientation: np.ndarray
    frequency: np.ndarray
    colour: np.ndarray

    @staticmethod
    def draw(num_classes: int, rng: np.random.Generator) -> ClassGratings:
        shape = (num_classes, GRATINGS_PER_CLASS)
        colour = rng.normal(size=(*shape, 3))
        colour /= np.linalg.norm(colour, axis=-1, keepdims=True)
        tints = -(-num_classes // CLASSES_PER_TINT)
        hue = (rng.permutation(num_classes) // CLASSES_PER_TINT) * 2 * np.pi / tints
        chroma = np.stack([np.array([1, -1, 0]) / np.sqrt(2), np.array([1, 1, -2]) / np.sqrt(6)])  # grey-free plane
        tint = TINT * (np.cos(hue)[:, None] * chroma[0] + np.sin(hue)[:, None] * chroma[1])
        return ClassGratings(tint, rng.uniform(0, np.pi, shape), rng.uniform(*FREQUENCY_RANGE, shape), colour)


def _grating(size: int, orientation: np.ndarray, frequency: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Unit sinusoids (N, H, W) with per-sample orientation, frequency and phase (N,)."""
    coords = np.arange(size) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    along = np.cos(orientation)[:, None, None] * xx + np.sin(orientation)[:, None, None] * yy
    return np.cos(2 * np.pi * frequency[:, None, None] * along + phase[:, None, None])


def _clutter(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random fields (N, 3, H, W): a coarse grid, bilinearly upsampled."""
    coarse = rng.normal(size=(n, 3, CLUTTER_GRID, CLUTTER_GRID))
    position = np.linspace(0, CLUTTER_GRID - 1, size)
    low = np.floor(position).astype(int).clip(max=CLUTTER_GRID - 2)
    frac = position - low
    rows = coarse[:, :, low] * (1 - frac)[:, None] + coarse[:, :, low + 1] * frac[:, None]
    return rows[..., low] * (1 - frac) + rows[..., low + 1] * frac


def _render(labels: np.ndarray, size: int, classes: ClassGratings, rng: np.random.Generator) -> np.ndarray:
    """uint8 images (N, 3, size, size) for ``labels`` (N,)."""
    n = len(labels)
    num_classes = len(classes.orientation)
    signal = np.broadcast_to(classes.tint[labels][:, :, None, None], (n, 3, size, size)).copy()
    others = (labels + rng.integers(1, num_classes, n)) % num_classes
    for owner, (amplitude_low, amplitude_high) in ((labels, AMPLITUDE_RANGE), (others, (0.0, DISTRACTOR_AMPLITUDE))):
        for g in range(GRATINGS_PER_CLASS):
            orientation = classes.orientation[owner, g] + rng.normal(0, ORIENTATION_JITTER, n)
            frequency = classes.frequency[owner, g] * rng.uniform(1 - FREQUENCY_JITTER, 1 + FREQUENCY_JITTER, n)
            wave = _grating(size, orientation, frequency, rng.uniform(0, 2 * np.pi, n))
            amplitude = rng.uniform(amplitude_low, amplitude_high, n)
            signal += (amplitude[:, None] * classes.colour[owner, g])[:, :, None, None] * wave[:, None]
    signal += CLUTTER_STD * _clutter(n, size, rng) + rng.normal(0, PIXEL_NOISE_STD, signal.shape)
    signal = signal * rng.uniform(*CONTRAST_RANGE, (n, 1, 1, 1)) + rng.normal(0, BRIGHTNESS_STD, (n, 1, 1, 1))
    return np.clip(np.rint(128 + PIXEL_SCALE * signal), 0, 255).astype(np.uint8)


def synthesize(num_classes: int, num_train: int, num_test: int, image_size: int, seed: int) -> tuple[Split, Split]:
    """Balanced train and test splits from one class structure (both depend only on the arguments)."""
    classes = ClassGratings.draw(num_classes, np.random.default_rng([seed, 0]))
    splits = []
    for split_id, count in ((1, num_train), (2, num_test)):
        rng = np.random.default_rng([seed, split_id])
        labels = rng.permutation(np.arange(count) % num_classes)
        images = (
            np.concatenate([_render(labels[i : i + CHUNK], image_size, classes, rng) for i in range(0, count, CHUNK)])
            if count
            else np.zeros((0, 3, image_size, image_size), np.uint8)
        )
        splits.append(Split(images, labels.astype(np.int64)))
    return splits[0], splits[1]
