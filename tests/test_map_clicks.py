"""The clickable map (issue 12, part 3): a click on the t-SNE map decodes the nearest test digit, a click on a 2-D
model's latent plane decodes exactly that point, two clicks walk between them. Through a real server and
gradio_client; the checkpoints are copies in a folder whose path has spaces, as a user's would.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError
from test_app import frames_of_strip, launched, read

import app
from vae import map_clicks, output_files
from vae.assets import load_assets
from vae.classes import neighbour_agreement
from vae.figures import latent_grid
from vae.folder import TSNE_MAP
from vae.imaging import class_colours, to_grid, to_uint8
from vae.latent import plane_grid
from vae.maps import PLOT, PlaneMap, TsneMap

MNIST, PLANE, NO_MAP = "vae mnist", "vae mnist 2d", "no map"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("map clicks") / "my models"
    copies = {
        MNIST: shutil.copytree(app.CHECKPOINTS / "vae-mnist", root / MNIST, ignore=shutil.ignore_patterns(".*")),
        PLANE: shutil.copytree(app.CHECKPOINTS / "vae-mnist-2d", root / PLANE, ignore=shutil.ignore_patterns(".*")),
    }
    no_map = shutil.ignore_patterns(".*", TSNE_MAP)
    copies[NO_MAP] = shutil.copytree(app.CHECKPOINTS / "vae-mnist", root / NO_MAP, ignore=no_map)
    return copies


@pytest.fixture(scope="module")
def mnist(folders):
    return load_assets(folders[MNIST], MNIST)


@pytest.fixture(scope="module")
def plane(folders):
    return load_assets(folders[PLANE], PLANE)


@pytest.fixture(scope="module")
def client(mnist, folders, tmp_path_factory):
    others = {PLANE: str(folders[PLANE]), NO_MAP: str(folders[NO_MAP])}
    with launched(app.build_demo(mnist, others)) as url:
        yield Client(url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def decoded_pixels(assets, z: torch.Tensor) -> np.ndarray:
    """What the map tab shows of a latent z (D,): the digit decoded, upscaled by whole pixels to 224."""
    with torch.no_grad():
        x = assets.model.decode(z[None])
    return to_grid(x, nrow=1, scale=8, padding=0)


def as_digit(path) -> torch.Tensor:
    """A 224-pixel PNG of one digit → the (1, 1, 28, 28) image in [0, 1] it was upscaled from."""
    pixels = read(path)
    assert pixels.shape == (224, 224)
    return torch.from_numpy(pixels[::8, ::8].astype(np.float32) / 255)[None, None]


def cluster_centres(assets) -> dict[int, list[float]]:
    """For each class, a point of the t-SNE map inside its cluster: the clear test digit (all 10 nearest map
    neighbours of its class) nearest the middle of the class's clear points."""
    coords, labels = assets.tsne["coords"], assets.tsne["labels"]
    clear = neighbour_agreement(coords, labels) == 1.0
    centres = {}
    for c in range(10):
        points = coords[clear & (labels == c)]
        centres[c] = points[(points - points.median(0).values).norm(dim=1).argmin()].tolist()
    return centres


# --- the pictures: pixels and map coordinates, both ways (no server) --------------------------------------------------


def test_plane_cells_decode_exactly_their_grid_points(plane):
    """The picture is the model card's latent grid, and the centre pixel of each cell is the z it shows."""
    picture = PlaneMap(plane.model)
    assert np.array_equal(picture.image[..., 0], latent_grid(plane.model, 20, scale=1))
    grid = plane_grid(20)  # (400, 2), row by row from the top
    for row, col in [(0, 0), (0, 19), (7, 12), (19, 0), (19, 19)]:
        z = picture.to_map((col + 0.5) * 28, (row + 0.5) * 28)
        assert torch.allclose(torch.tensor(z, dtype=torch.float64), grid[row * 20 + col].double(), atol=1e-6)
    for px, py in [(0.0, 0.0), (3.7, 551.2), (280.0, 280.0), (559.9, 0.1)]:  # and every pixel, continuously
        assert np.allclose(picture.to_pixel(*picture.to_map(px, py)), (px, py), atol=1e-6)
    z_left, _ = picture.to_map(10, 0)
    z_right, _ = picture.to_map(20, 0)
    assert z_left < z_right and picture.to_map(0, 10)[1] > picture.to_map(0, 20)[1], "z1 grows right, z2 up"


def test_tsne_picture_draws_each_point_where_a_click_finds_it(mnist):
    picture = TsneMap(mnist.tsne["coords"], mnist.tsne["labels"], mnist.class_names)
    assert picture.image.shape[:2] == (PLOT, PLOT + 150)
    colours = list(class_colours(mnist.class_names).values())
    coords, labels = mnist.tsne["coords"], mnist.tsne["labels"]
    clear = torch.nonzero(neighbour_agreement(coords, labels) == 1.0)[:, 0][:50]
    for i in clear.tolist():
        px, py = picture.to_pixel(*coords[i].tolist())
        assert np.allclose(picture.to_map(px, py), coords[i].tolist(), atol=1e-4)
        rgb = "#{:02x}{:02x}{:02x}".format(*picture.image[round(py), round(px)])
        assert rgb == colours[int(labels[i])], "the dot under a clear point has its class's colour"


# --- /pick through the server ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", [MNIST, PLANE, NO_MAP])
def test_the_hover_data_finds_the_digit_a_click_picks(name, mnist, plane, folders):
    """Issue 29: what web/map.js reads. On a grid of the plot's pixels, the nearest point in the hover data is the test
    digit whose image a click there shows (map_clicks.latent_at); cell i of the sprite sheet is test digit i's image. A
    model without test images has none."""
    assets = {MNIST: mnist, PLANE: plane}.get(name) or load_assets(folders[NO_MAP], NO_MAP)
    text = map_clicks.map_hover(assets)
    if name == NO_MAP:
        assert text == "" and "Hover" not in app.map_hint(assets)
        return
    data = json.loads(text)
    images = assets.tsne["images"]
    assert len(data["xs"]) == len(data["ys"]) == assets.click_map.size
    assert len(data["points"]) == len(data["labels"]) == len(images) and data["captions"][8] == "an 8"
    points = torch.tensor(data["points"], dtype=torch.float64)
    for px in range(0, assets.click_map.size, 7):
        for py in range(3, assets.click_map.size, 7 * 5):
            here = torch.tensor([[data["xs"][px], data["ys"][py]]], dtype=torch.float64)
            index = int(torch.cdist(here, points)[0].argmin())
            assert index == map_clicks.latent_at(assets, assets.click_map.to_map(px, py))[1], (px, py)
    assert (data["radius"] is None) == (name == PLANE), "on the plane, where no dots are drawn, always a digit"
    sprite = read(Path(urllib.parse.unquote(data["sprite"].removeprefix(output_files.FILE_ROUTE))))
    columns, (height, width) = data["columns"], data["cell"]
    for i in (0, 1, columns, len(images) - 1):
        row, column = divmod(i, columns)
        assert np.array_equal(
            sprite[row * height : (row + 1) * height, column * width : (column + 1) * width], images[i, 0].numpy()
        )


def test_a_click_on_each_cluster_decodes_its_digit(client, mnist, digit_classifier):
    """A click inside the cluster of 3s (and of every other digit) shows a real test 3 and decodes a 3, as an
    independent classifier reads it; the real digit is the map's own test image, unchanged."""
    read_as = {}
    for c, point in cluster_centres(mnist).items():
        _, real, decoded, caption, walk = client.predict(point, None, MNIST, api_name="/pick")
        assert walk is None and f"is {'an' if c == 8 else 'a'} **{c}**" in caption
        index = int(torch.cdist(torch.tensor([point]), mnist.tsne["coords"])[0].argmin())
        assert np.array_equal(read(decoded), decoded_pixels(mnist, mnist.tsne["latents"][index]))
        assert np.array_equal(read(real)[::8, ::8], mnist.tsne["images"][index, 0].numpy())
        with torch.no_grad():
            read_as[c] = int(digit_classifier(as_digit(decoded)).argmax())
    assert read_as[3] == 3
    assert read_as == {c: c for c in range(10)}


def test_two_clicks_walk_between_them(client, mnist):
    centres = cluster_centres(mnist)
    picture, _, decoded, caption, walk = client.predict(centres[7], centres[3], MNIST, api_name="/pick")
    assert "walk" in caption
    frames = frames_of_strip(walk, 10)  # (10, 1, 28, 28): from the 3 to the 7
    _, _, first, _, _ = client.predict(centres[3], None, MNIST, api_name="/pick")
    assert torch.equal(frames[:1], as_digit(first)) and torch.equal(frames[-1:], as_digit(decoded))
    marked, plain = read(picture), TsneMap(mnist.tsne["coords"], mnist.tsne["labels"], mnist.class_names).image
    assert marked.shape == plain.shape and (marked != plain).any(axis=-1).mean() > 0.001, "both clicks marked"


def test_a_click_on_the_plane_decodes_exactly_that_point(client, plane):
    for z in ([0.0, 0.0], [0.61, -1.3], [-1.9, 1.85]):
        picture, real, decoded, caption, walk = client.predict(z, None, PLANE, api_name="/pick")
        assert np.array_equal(read(decoded), decoded_pixels(plane, torch.tensor(z)))
        assert f"z = ({z[0]:.2f}, {z[1]:.2f})" in caption and real is not None and walk is None
        assert read(picture).shape == (PLOT, PLOT, 3)
    _, _, decoded, _, walk = client.predict([1.0, 1.0], [-1.0, -1.0], PLANE, api_name="/pick")
    frames = frames_of_strip(walk, 10)
    line = torch.linspace(-1, 1, 10)[:, None].expand(10, 2)  # the straight line from (-1, -1) to (1, 1)
    with torch.no_grad():
        assert torch.equal(frames, torch.from_numpy(to_uint8(plane.model.decode(line))).float() / 255)


def test_the_caption_names_the_nearest_digit_with_its_article(client, plane):
    """Issue 29: "is an 8", not "is a 8"."""
    labels, latents = plane.tsne["labels"], plane.tsne["latents"]
    for digit, article in ((8, "an"), (3, "a")):
        z = latents[labels == digit][0].tolist()
        caption = client.predict(z, None, PLANE, api_name="/pick")[3]
        assert f"(0.00 away) is {article} **{digit}**." in caption


def test_a_cell_centre_on_the_plane_shows_that_cell(client, plane):
    """A click in the middle of a cell of the picture decodes the digit the cell shows."""
    picture = PlaneMap(plane.model)
    row, col = 4, 15
    z = list(picture.to_map((col + 0.5) * 28, (row + 0.5) * 28))
    _, _, decoded, _, _ = client.predict(z, None, PLANE, api_name="/pick")
    cell = picture.image[row * 28 : (row + 1) * 28, col * 28 : (col + 1) * 28, 0]
    assert np.array_equal(read(decoded)[::8, ::8], cell)


@pytest.mark.parametrize(
    ("point", "walk_from", "checkpoint", "message"),
    [
        ([100, 0], None, MNIST, "Point must be a point [x, y] of the map (t-SNE coordinates): x from"),
        ([0.0, 0.0, 1.0], None, MNIST, "Point must be a point [x, y]"),
        ("0, 0", None, MNIST, "Point must be a point [x, y]"),
        ([0, None], None, MNIST, "got [0, None]"),
        ([0, 0], [0, 1e308], MNIST, "Walk from must be a point [x, y]"),
        ([3.0, 0.0], None, PLANE, "(z1, z2 of the latent plane): x from -1.94 to 1.94"),
        ([0, 0], None, NO_MAP, "has no cached t-SNE map"),
        ([0, 0], None, "nope", "Unknown checkpoint 'nope'"),
    ],
)
def test_bad_points_are_refused_and_the_server_stays_up(client, point, walk_from, checkpoint, message):
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(point, walk_from, checkpoint, api_name="/pick")
    assert client.predict([0.0, 0.0], None, PLANE, api_name="/pick")[2] is not None
