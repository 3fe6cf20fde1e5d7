"""The uses of a trained run: PNG files, samples and interpolations, outlier scores and AUROC,
imputation and the embedding projector; each command's files and TensorBoard entries are
read back. Runs are tiny: the smoke config (a 500-image Fashion-MNIST slice) and the
linear-Gaussian config, trained for an epoch or two."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.linear_gaussian import DIAGONAL, LATENT_DIM, best_q, dense_decoder, noisy_data, prior
from vi_lab.cli import main
from vi_lab.config import EvalConfig, load_config
from vi_lab.inference.objectives import LogLikelihood
from vi_lab.models.linear_gaussian import LinearGaussianDecoder
from vi_lab.runs.board import write_png
from vi_lab.runs.folder import load_run
from vi_lab.train import train
from vi_lab.uses import impute
from vi_lab.uses.anomaly import anomaly_run, auroc, noise_like, ood_points, parse_ood
from vi_lab.uses.embed import CLASS_NAMES, embed_run
from vi_lab.uses.impute import fit_observed, impute_run, make_mask, masked_log_prob
from vi_lab.uses.sample import interpolate, sample_run

TRAIN_CLASSES = [0, 1, 2, 3, 4, 5, 6]
PAD = 2  # image_grid's border


def decode_png(data: bytes) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 pixels of a PNG file's bytes (Pillow)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode in ("L", "RGB")
        return np.asarray(image)


def grid_size(rows: int, cols: int, side: int = 28) -> tuple[int, int]:
    return rows * (side + PAD) + PAD, cols * (side + PAD) + PAD


def tile(pixels: np.ndarray, row: int, col: int, side: int = 28) -> np.ndarray:
    top, left = PAD + row * (side + PAD), PAD + col * (side + PAD)
    return pixels[top : top + side, left : left + side]


def pixels_of(png: Path) -> np.ndarray:
    """The exact grid beside a captioned figure (RUN/uses/{name}_pixels.png); the figure itself
    is checked to be one to read: about 1200 pixels wide, at no less than 150 dpi."""
    with Image.open(png) as image:
        assert image.width >= 1200 and min(image.info["dpi"]) >= 150
    return decode_png(png.with_name(f"{png.stem}_pixels.png").read_bytes())


def events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return accumulator


def smoke(tmp_path_factory, name: str, overrides: list[str]) -> Path:
    run_dir = tmp_path_factory.mktemp(name) / "run"
    train(load_config("configs/smoke.yaml", ["progress=false", *overrides]), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def amortized_run(tmp_path_factory) -> Path:
    """Trained on classes 0..6 only, so that classes 7..9 are held out."""
    return smoke(tmp_path_factory, "amortized", [f"data.classes=[{','.join(map(str, TRAIN_CLASSES))}]"])


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    return smoke(tmp_path_factory, "local", ["inference.kind=local", "data.num_train=200", "train.epochs=1"])


@pytest.fixture(scope="module")
def lg_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("lg") / "run"
    train(load_config("configs/linear_gaussian.yaml", ["progress=false", "train.epochs=3"]), run_dir)
    return run_dir


# PNG -------------------------------------------------------------------------------------


def test_png_round_trip(tmp_path: Path) -> None:
    def encode_png(image: torch.Tensor) -> bytes:
        return write_png(image, tmp_path / "image.png").read_bytes()

    gray = torch.rand(1, 5, 7)
    pixels = decode_png(encode_png(gray))
    assert pixels.shape == (5, 7)
    assert np.array_equal(pixels, (gray[0] * 255).round().to(torch.uint8).numpy())
    rgb = torch.rand(3, 4, 6)
    pixels = decode_png(encode_png(rgb))
    assert pixels.shape == (4, 6, 3)
    assert np.array_equal(pixels, (rgb.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy())
    assert decode_png(encode_png(torch.tensor([[-1.0, 2.0]]))).tolist() == [[0, 255]]  # clamped
    with pytest.raises(ValueError, match="shape"):
        encode_png(torch.rand(2, 4, 4))


# sample ----------------------------------------------------------------------------------


def test_interpolate_ends_and_middle() -> None:
    start, end = torch.randn(3, 4), torch.randn(3, 4)
    path = interpolate(start, end, 5)  # (3, 5, 4)
    assert path.shape == (3, 5, 4)
    assert torch.allclose(path[:, 0], start) and torch.allclose(path[:, -1], end)
    assert torch.allclose(path[:, 2], (start + end) / 2)


def test_sample_writes_pngs_and_tensorboard(amortized_run) -> None:
    paths = sample_run(amortized_run, ["num=9", "num_pairs=2", "num_steps=4"])
    samples = pixels_of(paths["samples"])
    assert samples.shape == grid_size(3, 3)
    assert samples.std() > 0  # decoded images, not a blank canvas
    lerp = pixels_of(paths["interpolation"])
    assert lerp.shape == grid_size(2, 4 + 2)
    x = load_run(amortized_run).data.x["test"][:4].view(4, 28, 28).numpy()
    for pair in range(2):  # each row is [image 2i, decoded steps, image 2i + 1]
        assert np.array_equal(tile(lerp, pair, 0), (x[2 * pair] * 255).astype(np.uint8))
        assert np.array_equal(tile(lerp, pair, 5), (x[2 * pair + 1] * 255).astype(np.uint8))
        assert not np.array_equal(tile(lerp, pair, 1), tile(lerp, pair, 4))  # the path moves

    images = events(amortized_run).Tags()["images"]
    assert {"uses/samples", "uses/interpolation"} <= set(images)


# anomaly ---------------------------------------------------------------------------------


def brute_force_auroc(scores_in: list[float], scores_out: list[float]) -> float:
    pairs = list(itertools.product(scores_in, scores_out))
    return sum(1.0 if o > i else 0.5 if o == i else 0.0 for i, o in pairs) / len(pairs)


def test_auroc_by_hand_with_ties() -> None:
    # pairs (in, out): (1,2) win, (2,2) tie, (3,2) loss, and 4 beats all three: 4.5 / 6
    assert auroc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0])) == pytest.approx(0.75)
    assert auroc(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])) == 1.0
    assert auroc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert auroc(torch.tensor([5.0, 5.0]), torch.tensor([5.0, 5.0, 5.0])) == 0.5
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        a = torch.randint(0, 6, (13,), generator=generator).float()
        b = torch.randint(2, 8, (9,), generator=generator).float()
        assert auroc(a, b) == pytest.approx(brute_force_auroc(a.tolist(), b.tolist()))
    with pytest.raises(ValueError):
        auroc(torch.tensor([]), torch.tensor([1.0]))


def test_ood_specs_and_sets(amortized_run, lg_run) -> None:
    assert parse_ood("classes:9,7,7").classes == [7, 9]
    assert parse_ood("classes:7,8,9").tag == "classes_7-8-9"
    for bad in ("bogus", "classes:", "classes:10", "classes:a", "noise:1"):
        with pytest.raises(ValueError, match="--ood must be"):
            parse_ood(bad)

    run = load_run(amortized_run)
    x = run.data.x["test"][:20]
    flipped = ood_points(parse_ood("flip"), run, x, "test", 20, 0)
    assert torch.equal(flipped.view(20, 28, 28), x.view(20, 28, 28).flip(1))
    noise = noise_like(x, torch.Generator().manual_seed(0))
    assert set(noise.unique().tolist()) == {0.0, 1.0} and 0.4 < noise.mean() < 0.6  # binary data, coin flips
    held_out = ood_points(parse_ood("classes:7,8,9"), run, x, "test", 20, 0)
    assert held_out.shape == (20, 784) and not any(torch.equal(h, x_i) for h in held_out for x_i in x)

    with pytest.raises(ValueError, match=r"class\(es\) 6 were in the run's training data"):
        anomaly_run(amortized_run, ["classes:6,7"])
    with pytest.raises(ValueError, match="needs a Fashion-MNIST run"):
        anomaly_run(lg_run, ["classes:7"])
    with pytest.raises(ValueError, match="flip needs image data"):
        anomaly_run(lg_run, ["flip"])


FAST = ["num_points=40", "max_steps=20", "num_samples=50", "elbo_samples=20"]


@pytest.mark.parametrize("run_name", ["amortized_run", "local_run"])
def test_anomaly_separates_noise(run_name, request) -> None:
    run_dir = request.getfixturevalue(run_name)
    specs = ["noise", "classes:7,8,9"] if run_name == "amortized_run" else ["noise"]
    summary = anomaly_run(run_dir, specs, FAST)
    written = json.loads((run_dir / "uses" / "anomaly.json").read_text())
    assert written == json.loads(json.dumps(summary))
    result = written["sets"]["noise"]
    assert set(result["auroc"]) == {"kl", "neg_elbo", "kl_refined", "neg_elbo_refined", "neg_log_px"}
    assert result["num_ood"] == 40 and written["num_in"] == 40
    assert result["auroc"]["neg_elbo"] > 0.9 and result["auroc"]["neg_log_px"] > 0.9
    assert result["mean_ood"]["neg_log_px"] > result["mean_in"]["neg_log_px"]

    tags = events(run_dir).Tags()
    scalars = tags["scalars"]
    assert "uses/anomaly/noise/auroc_neg_log_px" in scalars
    assert {"uses/anomaly/noise/kl_in", "uses/anomaly/noise/kl_ood"} <= set(tags["histograms"])
    assert events(run_dir).Scalars("uses/anomaly/noise/auroc_kl")[-1].value == pytest.approx(
        result["auroc"]["kl"], rel=1e-5
    )
    if run_name == "amortized_run":
        assert "uses/anomaly/classes_7-8-9/auroc_kl" in scalars


def test_anomaly_without_refinement(lg_run) -> None:
    summary = anomaly_run(lg_run, ["noise"], ["num_points=100", "refine=false"])
    assert set(summary["sets"]["noise"]["auroc"]) == {"kl", "neg_elbo", "neg_log_px"}
    assert summary["sets"]["noise"]["auroc"]["neg_log_px"] > 0.8


# impute ----------------------------------------------------------------------------------


def test_masks() -> None:
    generator = torch.Generator().manual_seed(0)
    observed = make_mask("random:0.3", 50, 784, (1, 28, 28), generator)
    assert observed.shape == (50, 784) and 0.27 < (~observed).float().mean() < 0.33
    top = make_mask("top", 2, 784, (1, 28, 28), generator).view(2, 28, 28)
    assert not top[:, :14].any() and top[:, 14:].all()
    bottom = make_mask("bottom", 2, 784, (1, 28, 28), generator).view(2, 28, 28)
    assert bottom[:, :14].all() and not bottom[:, 14:].any()
    assert make_mask("top", 1, 16, None, generator).tolist() == [[False] * 8 + [True] * 8]
    for bad in ("random", "random:0", "random:1", "random:x", "left", "top:1"):
        with pytest.raises(ValueError, match="--mask must be"):
            make_mask(bad, 1, 16, None, generator)


def test_masked_log_prob_counts_observed_pixels_only() -> None:
    torch.manual_seed(0)
    decoder = LinearGaussianDecoder(6, 2)
    x, z = torch.randn(3, 6), torch.randn(4, 3, 2)
    everything = torch.ones(3, 6, dtype=torch.bool)
    assert torch.allclose(masked_log_prob(decoder, x, everything, z), decoder.log_prob(x, z))
    half = torch.tensor([True, False] * 3).expand(3, 6)
    garbage = torch.where(half, x, torch.nan)  # missing values never enter the likelihood
    expected = decoder.log_prob_pixels(x, z)[..., 0::2].sum(-1)
    assert torch.allclose(masked_log_prob(decoder, garbage, half, z), expected)
    likelihood = LogLikelihood(2, lambda x, z: masked_log_prob(decoder, x, half, z))  # as impute refines
    assert torch.allclose(likelihood.log_prob(garbage, z), expected)


def test_fit_observed_gives_every_chunk_its_own_mask() -> None:
    """Chunks of one point, rows alternately fully observed and fully missing: a missing row's
    best q is the prior exactly, an observed row's the closed-form best diagonal q*."""
    torch.manual_seed(0)
    decoder = dense_decoder()
    x = noisy_data(decoder, num_points=6)
    observed = torch.tensor([[True], [False]] * 3).expand(6, x.shape[1])
    start = torch.ones(6, 2 * LATENT_DIM)
    fit = fit_observed(decoder, DIAGONAL, x, observed, start, EvalConfig().refine, batch_size=1)
    assert fit.params[1::2].abs().max() < 0.05
    best = decoder.exact_elbo(x[0::2], DIAGONAL, best_q(decoder, x[0::2]))
    reached = decoder.exact_elbo(x[0::2], DIAGONAL, fit.params[0::2])
    assert (best - reached).max() < 0.3  # the refinement defaults' tolerance: 0.05 nats per window
    assert (
        best - decoder.exact_elbo(x[0::2], DIAGONAL, prior(x[0::2]))
    ).min() > 1.0  # the prior is far from q*


def test_fit_observed_keeps_each_row_with_its_mask_when_rows_drop_out(monkeypatch) -> None:
    """One chunk of 8: six fully observed rows start at their q* and stop early, two fully
    missing rows start far from their best q (the prior) and go on without them once the working
    set is compacted. Each is still scored with its own mask: a missing row scored with an
    observed row's mask would move towards q* of its pixels, not to the prior."""
    torch.manual_seed(0)
    decoder = dense_decoder()
    x = noisy_data(decoder, num_points=8)
    observed = torch.ones(8, x.shape[1], dtype=torch.bool)
    observed[6:] = False
    start = best_q(decoder, x)
    start[6:, :LATENT_DIM] += 3.0
    scored_rows = []

    def recording(decoder, x, observed, z):
        scored_rows.append(x.shape[0])
        return masked_log_prob(decoder, x, observed, z)

    monkeypatch.setattr(impute, "masked_log_prob", recording)
    fit = fit_observed(decoder, DIAGONAL, x, observed, start, EvalConfig().refine, batch_size=8)
    # the working set was compacted to the two missing rows (then to the last one going on)
    assert scored_rows[0] == 8 and min(scored_rows) in (1, 2) and 2 in scored_rows
    assert fit.params[6:].abs().max() < 0.05
    best = decoder.exact_elbo(x[:6], DIAGONAL, best_q(decoder, x[:6]))
    assert (best - decoder.exact_elbo(x[:6], DIAGONAL, fit.params[:6])).max() < 0.3


def test_impute_beats_the_mean_on_the_linear_gaussian_model(lg_run) -> None:
    summary = impute_run(lg_run, "top", ["num_points=100"])
    written = json.loads((lg_run / "uses" / "impute.json").read_text())
    assert written["mse_imputed"] == pytest.approx(summary["mse_imputed"])
    assert written["missing_fraction"] == 0.5
    gap = summary["mse_mean_image"] - summary["mse_imputed"]
    assert gap > 3 * max(summary["mse_imputed_se"], summary["mse_mean_image_se"])
    assert summary["mse_imputed"] < summary["mse_guess"]  # fitting q to the observed half helps
    assert "png" not in summary and not (lg_run / "uses" / "impute.png").exists()
    assert "uses/impute/top/mse_imputed" in events(lg_run).Tags()["scalars"]


def test_impute_picture(amortized_run) -> None:
    summary = impute_run(amortized_run, "random:0.5", ["num_points=20", "num_images=5", "max_steps=20"])
    assert 0 < summary["mse_imputed"] < 1  # (the smoke model is too weak to beat the mean image)
    pixels = pixels_of(Path(summary["png"]))
    assert pixels.shape == grid_size(3, 5)  # rows: observed, imputed, truth
    x = load_run(amortized_run).data.x["test"][:5].view(5, 28, 28).numpy()
    for col in range(5):
        truth = (x[col] * 255).astype(np.uint8)
        assert np.array_equal(tile(pixels, 2, col), truth)
        shown = tile(pixels, 0, col)
        gray = shown == 128  # MISSING_GRAY, never a pixel of binary data
        assert 0.3 < gray.mean() < 0.7 and np.array_equal(shown[~gray], truth[~gray])
        assert np.array_equal(tile(pixels, 1, col)[~gray], truth[~gray])  # observed pixels kept
    assert "uses/impute" in events(amortized_run).Tags()["images"]


# embed -----------------------------------------------------------------------------------


def test_embed_writes_the_projector(amortized_run) -> None:
    summary = embed_run(amortized_run, ["num_points=30"])
    config = Path(summary["projector_config"]).read_text()
    assert 'tensor_name: "uses/embedding:' in config
    run = load_run(amortized_run)
    step = json.loads((amortized_run / "metrics.json").read_text())["steps"]
    folder = amortized_run / "uses" / "embedding"
    assert not (amortized_run / f"{step:05d}").exists()  # beside the uses' outputs, not a stray folder
    assert 'tensor_path: "uses/embedding/tensors.tsv"' in config
    vectors = np.loadtxt(folder / "tensors.tsv")
    with torch.no_grad():
        loc = run.model.family.center(run.model.posterior.infer(run.model.decoder, run.data.x["test"][:30]))
    assert vectors.shape == (30, 8) and np.allclose(vectors, loc.numpy(), atol=1e-5)
    labels = (folder / "metadata.tsv").read_text().splitlines()
    assert labels == [CLASS_NAMES[int(c)] for c in run.data.labels["test"][:30]]
    assert set(labels) <= {CLASS_NAMES[c] for c in TRAIN_CLASSES}
    assert (folder / "sprite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.allclose(np.load(amortized_run / "uses" / "embedding.npz")["loc"], vectors, atol=1e-5)
    embed_run(amortized_run, ["num_points=10"])  # a rerun replaces the files
    assert np.loadtxt(folder / "tensors.tsv").shape == (10, 8)


# the command line ------------------------------------------------------------------------


def test_cli_commands(amortized_run, lg_run, capsys) -> None:
    run = str(amortized_run)
    assert main(["sample", run, "num_pairs=1", "--num", "4"]) == 0
    assert pixels_of(amortized_run / "uses" / "samples.png").shape == grid_size(2, 2)
    assert main(["anomaly", run, *FAST, "--ood", "noise", "--ood", "flip"]) == 0
    assert set(json.loads((amortized_run / "uses" / "anomaly.json").read_text())["sets"]) == {"noise", "flip"}
    assert main(["impute", str(lg_run), "num_points=20", "--mask", "bottom"]) == 0
    assert main(["embed", run, "num_points=10"]) == 0
    assert "Projector" in capsys.readouterr().out

    for argv, message in [
        (["anomaly", run, "--ood", "classes:x"], "--ood must be"),
        (["anomaly", run, "--ood", "classes:3"], "were in the run's training data"),
        (["impute", run, "--mask", "left"], "--mask must be"),
        (["sample", str(lg_run)], "needs image data"),
        (["embed", run, "num_points=0"], "num_points"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"vi-lab {argv[0]}: error:") and message in err and "\n" not in err
