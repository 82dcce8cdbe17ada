"""Heatmap targets, decoding, DLC offsets and heatmap losses (bioloop.tasks.pose.heatmaps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bioloop.errors import ConfigError, DataError
from bioloop.tasks.pose.heatmaps import (
    DLC_LOCREF_STD,
    confidence_radius,
    decode_heatmaps,
    ideal_mass,
    decode_with_offsets,
    encode_offsets,
    heatmap_loss,
    heatmap_size,
    make_heatmaps,
    to_heatmap_coords,
    to_input_coords,
)

NAN = float("nan")


def _random_keypoints(seed: int, b: int, k: int, h: int, w: int) -> torch.Tensor:
    """Subpixel points anywhere in the image, plus points hugging every border."""
    g = torch.Generator().manual_seed(seed)
    kp = torch.rand(b, k, 2, generator=g) * torch.tensor([w, h]) - 0.5
    edge = torch.tensor([[-0.5, -0.5], [w - 0.501, h - 0.501], [-0.49, h / 2 + 0.3],
                         [w - 0.6, 0.1], [0.2, h - 0.55]])
    kp[0, : len(edge)] = edge
    return kp


# ---------------------------------------------------------------- coordinates and targets


def test_heatmap_pixel_centres_map_to_the_middle_of_their_input_pixels():
    assert heatmap_size((256, 250), 4) == (64, 63)
    assert heatmap_size((5, 4), 2) == (3, 2)
    # stride 4: heatmap pixel 0 covers input pixels 0..3, centre 1.5; pixel 2 -> 9.5
    assert to_input_coords(torch.tensor([0.0, 2.0]), 4).tolist() == [1.5, 9.5]
    assert to_heatmap_coords(torch.tensor([1.5, 9.5]), 4).tolist() == [0.0, 2.0]
    assert to_input_coords(torch.tensor([3.0]), 1).tolist() == [3.0]


def test_gaussian_target_golden_values():
    kp = torch.tensor([[[2.0, 1.0]]])
    maps, valid = make_heatmaps(kp, (5, 4), stride=1, sigma=1.0)
    assert maps.shape == (1, 1, 5, 4) and valid.tolist() == [[True]]
    m = maps[0, 0]
    assert m[1, 2].item() == pytest.approx(1.0)
    assert m[1, 3].item() == pytest.approx(math.exp(-0.5))
    assert m[2, 3].item() == pytest.approx(math.exp(-1.0))
    assert m[4, 0].item() == pytest.approx(math.exp(-(4 + 9) / 2))
    # stride 2: input (0.5, 0.5) is the centre of heatmap pixel (0, 0); sigma in heatmap pixels
    maps, _ = make_heatmaps(torch.tensor([[[0.5, 0.5]]]), (5, 4), stride=2, sigma=2.0)
    assert maps.shape == (1, 1, 3, 2)
    assert maps[0, 0, 0, 0].item() == pytest.approx(1.0)
    assert maps[0, 0, 0, 1].item() == pytest.approx(math.exp(-1 / 8))
    # "sum" gives a probability distribution with the same shape
    summed, _ = make_heatmaps(kp, (5, 4), stride=1, sigma=1.0, normalize="sum")
    full, _ = make_heatmaps(kp, (5, 4), stride=1, sigma=1.0)
    assert summed.sum().item() == pytest.approx(1.0)
    assert torch.allclose(summed, full / full.sum(), atol=1e-7)


def test_plateau_target_is_a_disc_of_ones():
    kp = torch.tensor([[[4.0, 4.0], [4.0, 4.0]]])
    maps, _ = make_heatmaps(kp, (9, 9), stride=1, sigma=2.0, kind="plateau")
    expected = torch.zeros(9, 9)
    expected[3:6, 3:6] = 1
    expected[4, 2] = expected[4, 6] = expected[2, 4] = expected[6, 4] = 1  # d = 2 is inside
    assert torch.equal(maps[0, 0], expected)
    small, _ = make_heatmaps(kp, (9, 9), stride=1, sigma=1.5, kind="plateau")
    assert small[0, 0].sum().item() == 9 and torch.equal(small[0, 0, 3:6, 3:6], torch.ones(3, 3))
    summed, _ = make_heatmaps(kp, (9, 9), stride=1, sigma=2.0, kind="plateau", normalize="sum")
    assert torch.allclose(summed[0, 0], expected / 13)
    # a disc entirely outside the image stays an all-zero map, not NaN
    far, valid = make_heatmaps(torch.tensor([[[50.0, 50.0]]]), (9, 9), 1, 2.0, kind="plateau",
                               normalize="sum")
    assert valid.all() and far.abs().sum().item() == 0


@pytest.mark.parametrize("nan_mode,fill", [("uniform", 1 / 12), ("zero", 0.0)])
def test_missing_keypoints_give_uniform_or_zero_maps_and_a_false_mask(nan_mode, fill):
    kp = torch.tensor([[[1.0, 1.0], [NAN, NAN], [2.0, NAN]], [[NAN, 0.0], [3.0, 4.0], [0.0, 0.0]]])
    maps, valid = make_heatmaps(kp, (6, 8), stride=2, sigma=1.0, nan_mode=nan_mode)
    assert maps.shape == (2, 3, 3, 4)
    assert valid.tolist() == [[True, False, False], [False, True, True]]
    for b, k in [(0, 1), (0, 2), (1, 0)]:
        assert torch.allclose(maps[b, k], torch.full((3, 4), fill))
    assert torch.isfinite(maps).all() and maps[0, 0].max().item() > 0.5


def test_numpy_input_is_accepted():
    import numpy as np

    maps, valid = make_heatmaps(np.array([[[3.0, 2.0]]], dtype=np.float32), (8, 8), 2, 1.0)
    assert maps.dtype == torch.float32 and valid.all()


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
@pytest.mark.parametrize("normalize", ["peak", "sum"])
def test_encode_decode_round_trip_is_subpixel_exact(stride, normalize):
    h, w = 97, 130  # not multiples of the stride
    kp = _random_keypoints(stride, 4, 40, h, w)
    for sigma in (0.8, 2.0, 3.0):
        maps, _ = make_heatmaps(kp, (h, w), stride, sigma, normalize=normalize)
        xy, conf = decode_heatmaps(maps, stride)
        assert (xy - kp).abs().max().item() < 0.1
        assert conf.min().item() >= 0 and conf.max().item() <= 1
        assert xy.shape == kp.shape and xy.dtype == maps.dtype


def test_decoding_logits_matches_decoding_maps():
    kp = _random_keypoints(7, 2, 10, 64, 48)
    maps, _ = make_heatmaps(kp, (64, 48), 4, 1.5)
    xy_maps, conf_maps = decode_heatmaps(maps, 4)
    xy_logits, conf_logits = decode_heatmaps(torch.log(maps) + 3.0, 4, logits=True)
    assert (xy_logits - kp).abs().max().item() < 0.1
    assert torch.allclose(xy_maps, xy_logits, atol=1e-3)
    assert conf_maps.min().item() > 0.8  # a confident Gaussian peaks near 1
    # logits: the softmax mass within floor(2 * sigma) = 3 pixels of the peak, the same as the maps' own mass
    _, mass = decode_heatmaps(maps, 4, confidence="mass", sigma=1.5)
    _, conf_logits = decode_heatmaps(torch.log(maps) + 3.0, 4, logits=True, sigma=1.5)
    assert torch.allclose(conf_logits, mass, atol=1e-5)
    assert conf_logits.min().item() > 0.9  # subpixel positions and borders keep them a little under 1


def _window_mass(sigma: float, radius: int) -> float:
    """Hand formula: a sum-normalised Gaussian on a pixel centre is separable, so its mass in the
    (2r+1)^2 window is (sum_{|d|<=r} g(d) / sum_all g(d))^2 (the grid is wide enough for the tails)."""
    d = np.arange(-60, 61, dtype=np.float64)
    g = np.exp(-d**2 / (2 * sigma**2))
    return float((g[np.abs(d) <= radius].sum() / g.sum()) ** 2)


@pytest.mark.parametrize("sigma, radius", [(0.5, 1), (1.25, 2), (1.5, 3), (2.0, 4)])
def test_logit_confidence_is_the_softmax_mass_within_two_sigma(sigma, radius):
    """Lightning Pose's confidence, the softmax probability within floor(2 sigma) pixels of the peak,
    divided by the share the training target holds there: a target-sharp map scores 1, a map twice
    as wide its share relative to the target's."""
    assert confidence_radius(sigma) == radius
    assert ideal_mass(sigma) == pytest.approx(_window_mass(sigma, radius), abs=1e-12)
    kp = torch.tensor([[[60.0, 40.0]]])  # stride 1: exactly on a pixel centre, far from the border
    for width in (sigma, 2 * sigma):
        maps, _ = make_heatmaps(kp, (100, 120), 1, width, normalize="sum")
        logits = torch.log(maps.double()) + 7.0  # any constant: softmax(logits) == maps
        _, conf = decode_heatmaps(logits, 1, logits=True, sigma=sigma)
        expected = min(1.0, _window_mass(width, radius) / _window_mass(sigma, radius))
        assert conf.item() == pytest.approx(expected, abs=1e-6)  # float32 maps
    # by hand, sigma 1.5, r = 3: g(0..3) = 1, .8007, .4111, .1353 (sum over |d|<=3: 3.6942), tails
    # g(4..7) = .02857, .00386, .00034, .00002 (both sides: .0656): the target holds (3.6942 / 3.7598)^2
    # = 0.9654 of its mass in the window
    if sigma == 1.5:
        assert ideal_mass(sigma) == pytest.approx(0.9654, abs=1e-4)


def test_logit_confidence_is_low_for_flat_and_high_for_sharp_logits():
    """Every kl/js likelihood used to be sigmoid(peak logit) = 1.0; now a flat map scores its window's share."""
    flat = torch.full((1, 1, 32, 40), 25.0)  # large logits, but no peak at all
    _, conf = decode_heatmaps(flat, 2, logits=True, sigma=1.25)
    # the argmax of a flat map is the corner pixel: (r+1)^2 = 9 in-image pixels of 32 * 40, over the
    # 0.922 of its mass a sigma-1.25 target holds in the window
    assert conf.item() == pytest.approx(9 / (32 * 40) / ideal_mass(1.25))
    assert ideal_mass(1.25) == pytest.approx(0.9219, abs=1e-4)
    sharp = flat.clone()
    sharp[0, 0, 10, 12] = 60.0
    _, conf = decode_heatmaps(sharp, 2, logits=True, sigma=1.25)
    assert conf.item() > 0.99
    with pytest.raises(DataError, match="logit maps .* no absolute peak scale"):
        decode_heatmaps(flat, 2, logits=True, confidence="peak")


def test_decoding_uses_the_full_hessian_for_tilted_peaks():
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(24.0), indexing="ij")
    dx, dy = xs - 10.3, ys - 7.8
    log_map = -(1.0 * dx**2 + 1.2 * dx * dy + 0.8 * dy**2) / 4
    xy, _ = decode_heatmaps(log_map.exp()[None, None], 1)
    assert xy[0, 0].tolist() == pytest.approx([10.3, 7.8], abs=1e-4)


def test_confidence_is_low_for_uniform_and_zero_maps():
    kp = torch.tensor([[[NAN, NAN], [5.0, 5.0]]])
    uniform, _ = make_heatmaps(kp, (40, 40), 4, 1.0, nan_mode="uniform")
    zero, _ = make_heatmaps(kp, (40, 40), 4, 1.0, nan_mode="zero")
    for maps, low in ((uniform, 0.01), (zero, 0.0)):
        xy, conf = decode_heatmaps(maps, 4)
        assert torch.isfinite(xy).all()
        assert conf[0, 0].item() == pytest.approx(low) and conf[0, 1].item() > 0.9
    _, mass = decode_heatmaps(uniform, 4, confidence="mass", sigma=0.5)
    # a flat map's argmax is the corner pixel: 4 in-image pixels of its 3x3 window (radius 1), of 100,
    # over the share a sigma-0.5 target holds in that window
    assert mass[0, 0].item() == pytest.approx(4 / 100 / ideal_mass(0.5))
    assert 0.7 < mass[0, 1].item() <= 1


def test_tiny_and_flat_maps_decode_to_the_local_centroid():
    flat = torch.zeros(1, 1, 7, 7)
    flat[0, 0, 2:5, 3:6] = 1.0  # a 3x3 plateau centred on row 3, column 4
    xy, conf = decode_heatmaps(flat, 1)
    assert xy[0, 0].tolist() == pytest.approx([4.0, 3.0]) and conf.item() == 1.0
    tiny = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])  # smaller than the 3x3 Taylor stencil
    xy, _ = decode_heatmaps(tiny, 2)
    assert xy[0, 0].tolist() == pytest.approx([2.5, 1.5])


# ---------------------------------------------------------------- DLC offsets


def test_offset_maps_golden_layout():
    kp = torch.tensor([[[2.25, 1.5], [NAN, NAN]]])
    offsets, mask = encode_offsets(kp, (4, 5), stride=1, radius=1.0, locref_std=2.0)
    assert offsets.shape == (1, 4, 4, 5) and mask.shape == (1, 2, 4, 5)
    # pixel (row 1, col 2): dx = 0.25, dy = 0.5, divided by locref_std
    assert offsets[0, 0, 1, 2].item() == pytest.approx(0.125)
    assert offsets[0, 1, 1, 2].item() == pytest.approx(0.25)
    assert offsets[0, 1, 2, 2].item() == pytest.approx(-0.25)
    expected_mask = torch.zeros(4, 5)
    expected_mask[1:3, 2:4] = 1  # centres within 1 px of (2.25, 1.5): d^2 = 0.3125 or 0.8125
    assert torch.equal(mask[0, 0], expected_mask)
    assert mask[0, 1].sum() == 0 and offsets[0, 2:].abs().sum() == 0
    assert offsets[0, 0, 1, 3].item() == pytest.approx(-0.375)
    assert offsets[0, :2, 0].abs().sum() == 0 and offsets[0, :2, :, 0].abs().sum() == 0


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_offsets_round_trip(stride):
    h, w, radius = 90, 121, 17.0
    kp = _random_keypoints(10 + stride, 3, 30, h, w)
    offsets, _ = encode_offsets(kp, (h, w), stride, radius)
    gauss, _ = make_heatmaps(kp, (h, w), stride, 2.0)
    xy, conf = decode_with_offsets(gauss, offsets, stride)
    assert (xy - kp).abs().max().item() < 0.1 and conf.min().item() > 0.5
    # DLC: plateau targets (argmax anywhere in the disc) + locref recover the point too
    plateau, _ = make_heatmaps(kp, (h, w), stride, 0.9 * radius / stride, kind="plateau")
    xy, _ = decode_with_offsets(plateau, offsets, stride, DLC_LOCREF_STD)
    assert (xy - kp).abs().max().item() < 0.1


# ---------------------------------------------------------------- losses


def _pair(a, b) -> torch.Tensor:
    return torch.tensor([[a, b]], dtype=torch.float32)


def test_mse_loss_hand_values_and_masking():
    target = _pair([[0.5, 0.0], [0.0, 0.5]], [[1.0, 1.0], [1.0, 1.0]])
    pred = _pair([[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]])
    both = torch.tensor([[True, True]])
    first = torch.tensor([[True, False]])
    assert heatmap_loss(pred, target, both, "mse").item() == pytest.approx((0.125 + 1.0) / 2)
    assert heatmap_loss(pred, target, first, "mse").item() == pytest.approx(0.125)
    garbage = pred.clone()
    garbage[0, 1] = 1e6
    assert heatmap_loss(garbage, target, first, "mse").item() == pytest.approx(0.125)


def test_kl_loss_hand_values():
    one_hot = [[1.0, 0.0], [0.0, 0.0]]
    half = [[2.0, 2.0], [0.0, 0.0]]  # not normalised: divided by its sum -> (0.5, 0.5, 0, 0)
    zeros = [[0.0, 0.0], [0.0, 0.0]]
    valid = torch.tensor([[True, True]])
    # softmax of zero logits is uniform 1/4: KL(one-hot || u) = log 4, KL(half || u) = log 2
    loss = heatmap_loss(_pair(zeros, zeros), _pair(one_hot, half), valid, "kl")
    assert loss.item() == pytest.approx((math.log(4) + math.log(2)) / 2)
    # logits (log 3, 0, 0, 0) -> q = (1/2, 1/6, 1/6, 1/6): KL(one-hot || q) = log 2
    pred = _pair([[math.log(3), 0.0], [0.0, 0.0]], [[1e3, -1e3], [5.0, 7.0]])
    only_first = torch.tensor([[True, False]])
    assert heatmap_loss(pred, _pair(one_hot, half), only_first, "kl").item() == pytest.approx(
        math.log(2))
    # 3x3: uniform target vs uniform prediction is 0; one-hot vs uniform is log 9
    uni = torch.full((1, 2, 3, 3), 1 / 9)
    target = uni.clone()
    target[0, 1] = 0
    target[0, 1, 1, 1] = 1
    loss = heatmap_loss(torch.zeros(1, 2, 3, 3), target, valid, "kl")
    assert loss.item() == pytest.approx(math.log(9) / 2)


def test_js_loss_hand_values():
    one_hot = [[1.0, 0.0], [0.0, 0.0]]
    zeros = [[0.0, 0.0], [0.0, 0.0]]
    first = torch.tensor([[True, False]])
    # p = (1,0,0,0), q = 1/4 each, m = (5/8, 1/8, 1/8, 1/8)
    expected = 0.5 * (math.log(1.6) + 0.25 * math.log(0.4) + 0.75 * math.log(2))
    assert expected == pytest.approx(0.3803955, abs=1e-6)
    loss = heatmap_loss(_pair(zeros, [[9.0, 9.0], [9.0, 9.0]]), _pair(one_hot, one_hot), first,
                        "js")
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    # disjoint supports reach the maximum, log 2; identical distributions give 0
    disjoint = _pair([[-50.0, 50.0], [-50.0, -50.0]], zeros)
    assert heatmap_loss(disjoint, _pair(one_hot, one_hot), first, "js").item() == pytest.approx(
        math.log(2), abs=1e-5)
    same = _pair([[0.0, 0.0], [0.0, 0.0]], zeros)
    quarter = [[0.25, 0.25], [0.25, 0.25]]
    assert heatmap_loss(same, _pair(quarter, quarter), first, "js").item() == pytest.approx(0.0)


@pytest.mark.parametrize("kind", ["mse", "kl", "js"])
def test_losses_backpropagate_and_give_zero_without_valid_keypoints(kind):
    kp = torch.tensor([[[4.0, 4.0], [NAN, NAN]]])
    normalize = "peak" if kind == "mse" else "sum"
    target, valid = make_heatmaps(kp, (16, 16), 2, 1.0, normalize=normalize)
    pred = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = heatmap_loss(pred, target, valid, kind)
    loss.backward()
    assert loss.item() > 0 and pred.grad[0, 0].abs().sum() > 0 and pred.grad[0, 1].abs().sum() == 0
    none = heatmap_loss(pred, target, torch.zeros_like(valid), kind)
    assert none.item() == 0 and none.requires_grad


# ---------------------------------------------------------------- speed and errors


def test_make_heatmaps_is_vectorised():
    """No per-sample or per-keypoint Python loop: a batch of 64 x 17 keypoints runs exactly as many
    torch operations as a single keypoint (counted with a TorchFunctionMode, so machine load cannot
    change the outcome; tools/bench/bench_pose.py measures the speed-up)."""
    from torch.overrides import TorchFunctionMode

    class Count(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.calls = 0

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))

    def ops(b, k):
        kp = _random_keypoints(0, b, k, 256, 256)
        kp[::4, ::3] = NAN
        with Count() as counter:
            maps, _ = make_heatmaps(kp, (256, 256), 4, 2.0)
        assert maps.shape == (b, k, 64, 64)
        return counter.calls

    assert ops(64, 17) == ops(1, 5) == ops(8, 6)


@pytest.mark.parametrize("call,match", [
    (lambda: make_heatmaps(torch.zeros(1, 1, 2), (8, 8), 2, 1.0, kind="gausian"),
     r"heatmap kind: unknown value \(got 'gausian'\); use one of 'gaussian', 'plateau' "
     r"\(did you mean 'gaussian'\?\)"),
    (lambda: make_heatmaps(torch.zeros(1, 1, 2), (8, 8), 2, 1.0, nan_mode="drop"),
     r"nan_mode\): unknown value \(got 'drop'\)"),
    (lambda: make_heatmaps(torch.zeros(1, 1, 2), (8, 8), 2, 1.0, normalize="max"),
     r"heatmap normalize: unknown value"),
    (lambda: make_heatmaps(torch.zeros(1, 1, 2), (8, 8), 0, 1.0),
     r"downsample_factor: the heatmap stride must be a positive integer \(got 0\)"),
    (lambda: make_heatmaps(torch.zeros(1, 1, 2), (8, 8), 2.0, 1.0),
     r"downsample_factor: .*\(got 2\.0\)"),
    (lambda: make_heatmaps(torch.zeros(1, 1, 2), (8, 8), 2, 0.0),
     r"sigma: the heatmap sigma must be a positive number \(got 0\.0\)"),
    (lambda: heatmap_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2),
                          torch.ones(1, 1, dtype=torch.bool), "l2"),
     r"heatmap_loss_type: unknown value \(got 'l2'\)"),
    (lambda: decode_heatmaps(torch.zeros(1, 1, 4, 4), 2, confidence="max"),
     r"heatmap confidence: unknown value \(got 'max'\)"),
    (lambda: encode_offsets(torch.zeros(1, 1, 2), (8, 8), 2, radius=-1),
     r"locref radius \(pos_dist_thresh\): the radius must be a positive number"),
    (lambda: encode_offsets(torch.zeros(1, 1, 2), (8, 8), 2, radius=5, locref_std=0),
     r"locref_std: locref_std must be a positive number \(got 0\)"),
])
def test_bad_settings_raise_config_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


@pytest.mark.parametrize("call,match", [
    (lambda: make_heatmaps(torch.zeros(1, 2), (8, 8), 2, 1.0),
     r"keypoints: keypoints must have shape \(batch, keypoints, 2\) \(got \(1, 2\)\)"),
    (lambda: make_heatmaps(torch.zeros(1, 1, 2), (0, 8), 2, 1.0),
     r"image_size: the image size must be positive \(H, W\) \(got \(0, 8\)\)"),
    (lambda: decode_heatmaps(torch.zeros(4, 4), 2),
     r"heatmaps: heatmaps must be a 4D tensor \(batch, keypoints, H, W\) \(got \(4, 4\)\)"),
    (lambda: decode_with_offsets(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), 2),
     r"offsets: offset maps must have shape \(batch, 2\*keypoints, H, W\) = \(1, 4, 4, 4\) "
     r"\(got \(1, 2, 4, 4\)\)"),
    (lambda: heatmap_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3),
                          torch.ones(1, 1, dtype=torch.bool)),
     r"heatmap_loss: pred and target must have the same"),
])
def test_bad_shapes_raise_data_errors(call, match):
    with pytest.raises(DataError, match=match):
        call()
