"""The VAE itself: shapes, seeded sampling, an all-Linear architecture set by its constructor, and the
strict safetensors-only save_pretrained / from_pretrained round trip."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import EntryNotFoundError
from safetensors.torch import load_file, save_file
from torch import nn

from vae import VAE, UserError
from vae.model import ACTIVATIONS, ELU

VAE_PACKAGE = Path(__file__).resolve().parent.parent / "vae"

SMALL = {"image_shape": (1, 28, 28), "hidden_dims": (32,), "latent_dim": 4}
COLOUR = {"image_shape": (3, 8, 12), "hidden_dims": (24, 16, 8), "latent_dim": 3, "dropout": 0.25}
COLOUR |= {"class_names": ("cat", "dog", "fox")}


def make_model(seed: int = 0, **kwargs) -> VAE:
    torch.manual_seed(seed)
    return VAE(**kwargs).eval()


@pytest.mark.parametrize("kwargs", [{}, SMALL, COLOUR], ids=["default", "small", "colour"])
def test_encode_decode_and_forward_shapes(kwargs):
    model = make_model(**kwargs)
    c, h, w = model.image_shape
    d = model.latent_dim
    x = torch.rand(5, c, h, w, generator=torch.Generator().manual_seed(0))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, d)
    images = model.decode(torch.randn(5, d))
    assert images.shape == (5, c, h, w)
    assert images.min() >= 0 and images.max() <= 1
    out = model(x)
    assert out.logits.shape == (5, c * h * w)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (5, d)
    assert torch.allclose(torch.sigmoid(out.logits).view(5, c, h, w), model.decode(out.z))


def test_forward_draws_z_by_reparameterisation_from_the_generator():
    model = make_model(**SMALL)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    out = model(x, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(3, 4, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(out.z, out.mu + eps * torch.exp(0.5 * out.logvar))
    again = model(x, generator=torch.Generator().manual_seed(7))
    assert torch.equal(out.z, again.z) and torch.equal(out.logits, again.logits)


def test_default_architecture_is_mnist_784_512_256_32():
    model = make_model()
    assert model.image_shape == (1, 28, 28) and model.latent_dim == 32 and model.hidden_dims == [512, 256]
    assert model.class_names == [str(d) for d in range(10)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    sizes = [(m.in_features, m.out_features) for m in linears]
    assert sizes == [(784, 512), (512, 256), (256, 64), (32, 256), (256, 512), (512, 784)]


def test_sample_is_fixed_by_its_seed():
    model = make_model(**SMALL)
    a, b, c = model.sample(6, seed=3), model.sample(6, seed=3), model.sample(6, seed=4)
    assert a.shape == (6, 1, 28, 28) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a[0], a[1])  # different images within one call


def test_sample_at_temperature_zero_decodes_the_prior_mean():
    model = make_model(**SMALL)
    images = model.sample(4, seed=0, temperature=0.0)
    for image in images:
        assert torch.equal(image, images[0])
    assert torch.allclose(images[0], model.decode(torch.zeros(1, 4))[0])


def test_only_linear_layers_have_parameters():
    model = make_model(**COLOUR)
    with_params = [m for m in model.modules() if list(m.parameters(recurse=False))]
    assert with_params and all(isinstance(m, nn.Linear) for m in with_params)
    assert len(with_params) == 2 * (len(COLOUR["hidden_dims"]) + 1)  # encoder and decoder: one per layer
    assert model.encoder[0].in_features == 3 * 8 * 12 and model.encoder[-1].out_features == 2 * 3
    assert model.decoder[0].in_features == 3 and model.decoder[-1].out_features == 3 * 8 * 12
    # class statistics are buffers: saved with the weights, never trained
    assert {name for name, _ in model.named_buffers()} == {"class_means", "class_stds"}
    assert model.class_means.shape == model.class_stds.shape == (3, 3)


@pytest.mark.parametrize("dropout", [0.0, 0.25])
def test_dropout_after_each_hidden_layer_only_while_training(dropout):
    model = make_model(**(COLOUR | {"dropout": dropout}))
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [m.p for m in layers] == ([dropout] * 2 * len(COLOUR["hidden_dims"]) if dropout else [])
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.decode(z), model.decode(z))  # eval mode: deterministic
    model.train()
    torch.manual_seed(1)
    first = model.decode(z)
    assert torch.equal(first, model.decode(z)) == (dropout == 0.0)


def test_our_elu_is_torchs_with_its_gradient():
    """vae.model.ELU (written with exp, not expm1) against nn.ELU, in float32 and under bf16 autocast."""
    x = torch.cat([torch.linspace(-60, 60, 4001), torch.tensor([0.0, -1e-7, 1e-7, 1e4, -1e4])])
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    mine, torchs = ELU()(ours), nn.ELU()(theirs)
    assert torch.allclose(mine, torchs, rtol=1e-6, atol=1e-7)
    (mine.sum() + torchs.sum()).backward()
    assert torch.allclose(ours.grad, theirs.grad, rtol=1e-6, atol=1e-7) and torch.isfinite(ours.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = ELU()(x.bfloat16())
    assert torch.allclose(half.float(), torchs.detach(), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("activation", ["relu", "elu", "silu", "gelu", "tanh"])
def test_activation_is_part_of_the_saved_architecture(tmp_path, activation):
    model = make_model(**(SMALL | {"activation": activation}))
    kinds = {type(m) for m in model.modules() if not isinstance(m, nn.Linear | nn.Sequential | VAE)}
    assert kinds == {ACTIVATIONS[activation]}
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["activation"] == activation
    assert VAE.from_pretrained(tmp_path).activation == activation


def test_an_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        VAE(activation="sigmoid")


def randomised(model: VAE) -> VAE:
    """Fill every tensor, buffers included, with distinct values so a round trip cannot pass by luck."""
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator))
    return model


def test_save_pretrained_writes_config_safetensors_and_card_only(tmp_path):
    model = randomised(make_model(**COLOUR))
    model.save_pretrained(tmp_path / "model")
    files = {p.relative_to(tmp_path / "model").as_posix() for p in (tmp_path / "model").rglob("*")}
    assert files == {"config.json", "model.safetensors", "README.md"}  # nothing pickled (.bin, .pt, .pkl)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config == {
        "image_shape": [3, 8, 12],
        "hidden_dims": [24, 16, 8],
        "latent_dim": 3,
        "dropout": 0.25,
        "activation": "relu",
        "class_names": ["cat", "dog", "fox"],
    }
    stored = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert stored.keys() == model.state_dict().keys()
    assert {"class_means", "class_stds"} <= stored.keys()


def test_from_pretrained_restores_every_tensor_and_the_architecture(tmp_path):
    model = randomised(make_model(**COLOUR))
    model.save_pretrained(tmp_path)
    loaded = VAE.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.image_shape == (3, 8, 12) and loaded.hidden_dims == [24, 16, 8] and loaded.latent_dim == 3
    assert loaded.class_names == ["cat", "dog", "fox"]
    assert [m.p for m in loaded.modules() if isinstance(m, nn.Dropout)] == [0.25] * 6
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert torch.equal(original[key], restored[key]), key
    assert torch.equal(model.sample(3, seed=1), loaded.sample(3, seed=1))
    assert loaded.from_pretrained(str(tmp_path)).latent_dim == 3  # a str path works as well as a Path


def test_a_model_folder_also_loads_after_a_second_save(tmp_path):
    model = randomised(make_model(**SMALL))
    model.save_pretrained(tmp_path / "a")
    VAE.from_pretrained(tmp_path / "a").save_pretrained(tmp_path / "b")
    assert (tmp_path / "a" / "config.json").read_text() == (tmp_path / "b" / "config.json").read_text()
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in "ab")
    assert all(torch.equal(a[key], b[key]) for key in a) and a.keys() == b.keys()


@pytest.mark.parametrize("change", ["extra", "missing"])
def test_loading_is_strict_about_the_tensor_set(tmp_path, change):
    make_model(**SMALL).save_pretrained(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    if change == "extra":
        tensors["surprise"] = torch.zeros(2)
    else:
        del tensors["class_stds"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(RuntimeError, match="surprise" if change == "extra" else "class_stds"):
        VAE.from_pretrained(tmp_path)


def test_weights_that_do_not_match_config_json_are_refused(tmp_path):
    make_model(**SMALL).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"latent_dim": 5}))
    with pytest.raises(RuntimeError, match="size mismatch"):
        VAE.from_pretrained(tmp_path)


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything tries to fetch a file from the Hub."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"unexpected Hub lookup: {args} {kwargs}")

    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", refuse)


@pytest.mark.parametrize("path", ["checkpoints/nope", "./nope", "/tmp/nope-vae-test-missing", "nope"])
def test_a_missing_local_path_is_reported_without_a_hub_lookup(tmp_path, monkeypatch, no_hub, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()  # "checkpoints/nope" looks like user/repo, but checkpoints/ is here
    with pytest.raises(UserError, match="No such checkpoint folder") as err:
        VAE.from_pretrained(path)
    assert path in str(err.value)


@pytest.mark.parametrize("remove", [["model.safetensors"], ["config.json"], ["config.json", "model.safetensors"]])
def test_a_folder_without_the_model_files_is_a_clear_error(tmp_path, no_hub, remove):
    make_model(**SMALL).save_pretrained(tmp_path)
    for name in remove:
        (tmp_path / name).unlink()
    with pytest.raises(UserError, match="is not a model folder") as err:
        VAE.from_pretrained(tmp_path)
    for name in remove:
        assert f"no {name}" in str(err.value)
    assert str(tmp_path) in str(err.value)


def test_a_hub_repo_with_only_pickled_weights_is_refused(tmp_path, monkeypatch):
    """The mixin falls back to pytorch_model.bin when a repo has no model.safetensors: we never unpickle it."""
    model = make_model(**SMALL)
    model.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    requested = []

    def fake_download(repo_id: str, filename: str, **kwargs) -> str:
        requested.append(filename)
        if filename == "model.safetensors":
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(tmp_path / filename)

    def refuse_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a downloaded file")

    monkeypatch.setattr("huggingface_hub.hub_mixin.hf_hub_download", fake_download)
    monkeypatch.setattr(torch, "load", refuse_unpickling)
    with pytest.raises(UserError, match="pickled") as err:
        VAE.from_pretrained("someone/old-vae")
    assert "model.safetensors" in str(err.value)
    assert requested == ["config.json", "model.safetensors", "pytorch_model.bin"]


def test_a_hub_repo_id_loads_through_the_hub_download(tmp_path, monkeypatch):
    model = randomised(make_model(**SMALL))
    model.save_pretrained(tmp_path)
    monkeypatch.setattr(
        "huggingface_hub.hub_mixin.hf_hub_download", lambda repo_id, filename, **kw: str(Path(tmp_path) / filename)
    )
    loaded = VAE.from_pretrained("someone/vae-mnist")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def vae_imports(path: Path) -> set[str]:
    """The vae modules a module of the package imports, anywhere in it: at the top, inside functions, for type checking
    (`from vae import architecture` counts as vae.architecture; `from vae import VAE` as the package itself)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("vae.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("vae."):
                found.add(node.module)
            elif node.module == "vae":
                modules = {f"vae.{alias.name}" for alias in node.names}
                found |= {m for m in modules if (VAE_PACKAGE / f"{m[4:]}.py").is_file()} or {"vae"}
    return found


def test_no_module_imports_one_that_imports_it_back():
    """Issue 31: no import circle in the package, not even one hidden behind an import inside a function (the model
    card and vae.hub, the class samples' figure and vae.steering had one each): every module can be read knowing only
    the ones below it."""
    graph = {
        f"vae.{path.stem}" if path.stem != "__init__" else "vae": vae_imports(path) for path in VAE_PACKAGE.glob("*.py")
    }
    graph["vae"] -= {"vae"}

    def circle(module: str, path: list[str]) -> list[str] | None:
        for imported in sorted(graph.get(module, ())):
            if imported in path:
                return [*path[path.index(imported) :], imported]
            found = circle(imported, [*path, imported])
            if found:
                return found
        return None

    circles = {frozenset(c): c for c in (circle(m, [m]) for m in sorted(graph)) if c}  # each circle once
    assert not circles, " ; ".join(" → ".join(c) for c in circles.values())
