"""Pictures of the latent space that a visitor can click: the t-SNE map of the test digits, and for a model with a
2-D latent the latent plane itself, the decoded manifold.

Each picture knows where its pixels lie in map coordinates, both ways, because it was drawn here from those
coordinates: a click at pixel (px, py) is a point of the map (t-SNE units, or z itself on the plane), and a point of
the map is drawn back at its pixel. Only numpy, torch and PIL: the app draws these without matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from vae.imaging import class_colours, to_grid
from vae.latent import PLANE_QUANTILES, plane_grid
from vae.model import VAE

PLOT = 560  # the square drawing area, pixels: 20 cells of 28 on the plane
POINT_RADIUS = 3
LEGEND_WIDTH = 150  # beside the t-SNE map: one colour swatch and class name per row
LEGEND_ROW = 22
PLANE_CELLS = 20  # the plane's grid, as in the model card's latent_grid.png
MARKS = ((0, 0, 0), (255, 255, 255))  # a click's ring: black outside, white inside, seen on white and on black
CURRENT = (214, 39, 40)  # the newest click: red


@dataclass(frozen=True)
class Extent:
    """A map's range in its own units: what a click can reach (an API caller's point must lie inside)."""

    x: tuple[float, float]
    y: tuple[float, float]

    def contains(self, x: float, y: float) -> bool:
        return self.x[0] <= x <= self.x[1] and self.y[0] <= y <= self.y[1]


class ClickMap:
    """A picture (H, W, 3) uint8 of a map whose plot area is PLOT x PLOT pixels from the top left corner."""

    kind: str  # "tsne" or "plane"
    image: np.ndarray
    extent: Extent
    size: int = PLOT  # the plot's side in pixels: what a click can land on

    def to_map(self, px: float, py: float) -> tuple[float, float]:
        raise NotImplementedError

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        raise NotImplementedError

    def in_plot(self, px: float, py: float) -> bool:
        return 0 <= px < self.size and 0 <= py < self.size

    def axes(self) -> tuple[list[float], list[float]]:
        """The map's x at each column of the plot and its y at each row: the point a click on pixel (px, py) lands
        on is (xs[px], ys[py]), as to_map gives it (both maps are separable), so a page can find it without us."""
        return [self.to_map(px, 0)[0] for px in range(self.size)], [self.to_map(0, py)[1] for py in range(self.size)]

    def with_curves(self, curves: list[list[tuple[float, float]]]) -> np.ndarray:
        """The picture with each curve (points in map units) drawn closed, outlined in black, the first one red and the
        others white: a posterior's ellipses at 1 and 2 sd (vae.posterior.ellipse)."""
        picture = Image.fromarray(self.image)
        draw = ImageDraw.Draw(picture)
        for i, curve in enumerate(curves):
            pixels = [self.to_pixel(x, y) for x, y in curve]
            pixels.append(pixels[0])
            draw.line(pixels, fill=MARKS[0], width=5)
            draw.line(pixels, fill=CURRENT if i == 0 else MARKS[1], width=2)
        return np.asarray(picture)

    def marked(self, points: list[tuple[float, float]]) -> np.ndarray:
        """The picture with a ring at each point (map units), the last one red, and a line through them."""
        picture = Image.fromarray(self.image)
        draw = ImageDraw.Draw(picture)
        pixels = [self.to_pixel(x, y) for x, y in points]
        if len(pixels) > 1:
            draw.line(pixels, fill=MARKS[0], width=5)
            draw.line(pixels, fill=MARKS[1], width=2)
        for i, (px, py) in enumerate(pixels):
            inner = CURRENT if i == len(pixels) - 1 else MARKS[1]
            draw.ellipse((px - 10, py - 10, px + 10, py + 10), outline=MARKS[0], width=3)
            draw.ellipse((px - 7, py - 7, px + 7, py + 7), outline=inner, width=3)
        return np.asarray(picture)


class TsneMap(ClickMap):
    """The t-SNE map: one dot per test image, coloured by class, with a legend on the right. Both axes have the same
    scale (t-SNE distances do not prefer a direction); y grows upwards, as in the cached figure."""

    kind = "tsne"

    def __init__(self, coords: torch.Tensor, labels: torch.Tensor, class_names: list[str]):
        colours = list(class_colours(class_names).values())  # as in the cached figure and the interactive map
        coords = coords.double()  # (N, 2)
        low, high = coords.min(0).values, coords.max(0).values
        centre, half = (low + high) / 2, float((high - low).max()) / 2 * 1.05 + 1e-6  # 5% margin
        self.extent = Extent(
            (float(centre[0]) - half, float(centre[0]) + half), (float(centre[1]) - half, float(centre[1]) + half)
        )
        picture = Image.new("RGB", (PLOT + LEGEND_WIDTH, PLOT), "white")
        draw = ImageDraw.Draw(picture)
        draw.rectangle((0, 0, PLOT - 1, PLOT - 1), outline=(200, 200, 200))
        order = torch.randperm(len(coords), generator=torch.Generator().manual_seed(0))  # no class always on top
        for i in order.tolist():
            px, py = self.to_pixel(*coords[i].tolist())
            r = POINT_RADIUS
            draw.ellipse((px - r, py - r, px + r, py + r), fill=colours[int(labels[i])])
        font = ImageFont.load_default(size=14)
        for k, name in enumerate(class_names[: PLOT // LEGEND_ROW]):
            top = 8 + k * LEGEND_ROW
            draw.rectangle((PLOT + 12, top + 3, PLOT + 24, top + 15), fill=colours[k])
            draw.text((PLOT + 30, top), str(name)[:16], fill="black", font=font)
        self.image = np.asarray(picture)

    def to_map(self, px: float, py: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.extent.x, self.extent.y
        return x0 + px / PLOT * (x1 - x0), y1 - py / PLOT * (y1 - y0)

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.extent.x, self.extent.y
        return (x - x0) / (x1 - x0) * PLOT, (y1 - y) / (y1 - y0) * PLOT


class PlaneMap(ClickMap):
    """The latent plane of a 2-D model: an n x n grid of digits decoded at Normal quantiles (the manifold figure of
    Kingma & Welling, 2014). Pixels map to z through the same quantiles, continuously: the centre of a cell is
    exactly the z its digit was decoded from, and any pixel between centres is the z between them in quantile
    space."""

    kind = "plane"

    @torch.no_grad()
    def __init__(self, model: VAE, n: int = PLANE_CELLS):
        scale = max(1, PLOT // (n * model.image_shape[-1]))
        images = to_grid(model.decode(plane_grid(n).to(model.device)).cpu(), nrow=n, scale=scale, padding=0)
        self.n, self.cell = n, scale * model.image_shape[-1]
        canvas = np.full((PLOT, PLOT, 3), 255, np.uint8)  # a digit size that does not divide PLOT leaves a margin
        height, width = images.shape[:2]
        canvas[:height, :width] = images[..., None] if images.ndim == 2 else images
        self.image = canvas
        self.size = n * self.cell  # the pixels the grid covers; a click beyond is off the plane
        low, high = self.to_map(0, self.size - 1e-9)[0], self.to_map(self.size - 1e-9, 0)[0]
        self.extent = Extent((low, high), (low, high))

    def quantile(self, pixel: float) -> float:
        """A pixel along an axis → the Normal quantile it shows (cell centres at PLANE_QUANTILES' grid)."""
        first, last = PLANE_QUANTILES
        return first + (pixel / self.cell - 0.5) * (last - first) / (self.n - 1)

    def pixel(self, quantile: float) -> float:
        first, last = PLANE_QUANTILES
        return ((quantile - first) * (self.n - 1) / (last - first) + 0.5) * self.cell

    def to_map(self, px: float, py: float) -> tuple[float, float]:
        first, last = PLANE_QUANTILES  # rows go down as z2 goes up: row r shows the quantile of cell n - 1 - r
        q = torch.tensor([self.quantile(px), first + last - self.quantile(py)], dtype=torch.float64)
        q = q.clamp(1e-6, 1 - 1e-6)
        z = torch.distributions.Normal(0.0, 1.0).icdf(q)
        return float(z[0]), float(z[1])

    def to_pixel(self, x: float, y: float) -> tuple[float, float]:
        first, last = PLANE_QUANTILES
        q = torch.distributions.Normal(0.0, 1.0).cdf(torch.tensor([x, y], dtype=torch.float64))
        return self.pixel(float(q[0])), self.pixel(first + last - float(q[1]))
