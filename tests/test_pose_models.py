"""Pose backbones and models (bioloop.tasks.pose.backbones / models)."""

from __future__ import annotations

import copy

import pytest
import torch

from bioloop.errors import CheckpointError, ConfigError, DataError
from bioloop.tasks.pose.backbones import BackboneUnfreezer, build_backbone, freeze, unfreeze
from bioloop.tasks.pose.models import (
    HeatmapHead,
    RegressionModel,
    build_lp_model,
    build_pose_model,
    init_heads,
    select_more_confident,
)

K = 4
TINY = "test_resnet"  # timm, 0.4M params, 96 channels, stride 32


@pytest.fixture(scope="module")
def models():
    return {(t, d): build_lp_model(t, TINY, K, d) for t in ("heatmap", "regression",
                                                          "heatmap_mhcrnn") for d in (1, 2, 3)}


def _dlc_spec() -> dict:
    return {"backbone": {"type": "ResNet", "model_name": TINY, "output_stride": 16,
                         "freeze_bn_stats": True, "freeze_bn_weights": False},
            "backbone_output_channels": 96,
            "heads": {"bodypart": {
                "type": "HeatmapHead", "weight_init": "normal",
                "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False,
                              "clip_scores": True, "location_refinement": True,
                              "locref_std": 7.2801},
                "target_generator": {"type": "HeatmapPlateauGenerator", "num_heatmaps": K,
                                     "pos_dist_thresh": 17, "heatmap_mode": "KEYPOINT",
                                     "generate_locref": True, "locref_std": 7.2801},
                "criterion": {"heatmap": {"type": "WeightedBCECriterion", "weight": 1.0},
                              "locref": {"type": "WeightedHuberCriterion", "weight": 0.05}},
                "heatmap_config": {"channels": [96, "num_bodyparts"], "kernel_size": [3],
                                   "strides": [2]},
                "locref_config": {"channels": [96, "num_bodyparts x 2"], "kernel_size": [3],
                                  "strides": [2]}}}}


@pytest.mark.parametrize("d", [1, 2, 3])
def test_heatmap_shapes_and_backward(models, d):
    model = models[("heatmap", d)]
    out = model(torch.randn(2, 3, 64, 64))
    assert model.stride == 2**d
    assert out["heatmaps"].shape == (2, K, 64 // 2**d, 64 // 2**d)
    out["heatmaps"].square().mean().backward()
    assert model.head.layers[-1].weight.grad is not None
    assert next(model.backbone.parameters()).grad is not None
    model.zero_grad()


@pytest.mark.parametrize("d", [1, 2, 3])
def test_mhcrnn_shapes_and_backward(models, d):
    model = models[("heatmap_mhcrnn", d)]
    out = model(torch.randn(2, 5, 3, 64, 64))
    size = (2, K, 64 // 2**d, 64 // 2**d)
    assert out["heatmaps_sf"].shape == size and out["heatmaps_mf"].shape == size
    (out["heatmaps_sf"].mean() + out["heatmaps_mf"].mean()).backward()
    assert model.gru_fwd.gates.weight.grad is not None
    model.zero_grad()
    with pytest.raises(DataError, match="5 frames"):
        model(torch.randn(1, 3, 3, 64, 64))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_regression_shapes_and_backward(models, d):
    model = models[("regression", d)]
    out = model(torch.randn(2, 3, 64, 48))
    assert out["keypoints"].shape == (2, K, 2)
    out["keypoints"].mean().backward()
    model.zero_grad()


def test_regression_pixel_mapping_golden():
    model = build_lp_model("regression", TINY, 2)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 0.0, -1.0, 1.0]))
    kp = model(torch.randn(1, 3, 32, 64))["keypoints"][0]
    # u=0 -> centre (W/2 - 0.5, H/2 - 0.5); (-1, +1) -> left edge -0.5, bottom edge H - 0.5
    assert torch.allclose(kp, torch.tensor([[31.5, 15.5], [-0.5, 31.5]]))
    back = RegressionModel.normalize_keypoints(kp, (32, 64))
    assert torch.allclose(back, torch.tensor([[0.0, 0.0], [-1.0, 1.0]]))


def test_odd_size_matches_heatmap_grid_and_locref():
    model = build_lp_model("heatmap", TINY, K, 2, locref=True)
    out = model(torch.randn(1, 3, 70, 90))
    assert out["heatmaps"].shape == (1, K, 18, 23)  # ceil(70/4), ceil(90/4)
    assert out["offsets"].shape == (1, 2 * K, 18, 23)


def test_head_too_coarse_errors():
    with pytest.raises(ConfigError, match="downsample_factor.*coarser"):
        HeatmapHead(96, K, downsample_factor=6, backbone_stride=32)


def test_select_more_confident_picks_higher_peak():
    sf = torch.zeros(1, 2, 3, 3)
    mf = torch.zeros(1, 2, 3, 3)
    sf[0, 0, 1, 1], mf[0, 0, 0, 0] = 0.9, 0.4  # keypoint 0: static wins
    sf[0, 1, 2, 2], mf[0, 1, 0, 1] = 0.2, 0.7  # keypoint 1: context wins
    best = select_more_confident(sf, mf)
    assert torch.equal(best[0, 0], sf[0, 0]) and torch.equal(best[0, 1], mf[0, 1])
    # logits (kl/js): the map with more softmax mass near its peak wins, not the higher raw score
    # 9x9 maps, 3x3 window: two far peaks of 5 hold (e^5 + 8) / (2 e^5 + 79) = 0.416 near the argmax,
    # one peak of 4 holds (e^4 + 8) / (e^4 + 80) = 0.465
    split = torch.zeros(1, 1, 9, 9)
    split[0, 0, 1, 1] = split[0, 0, 7, 7] = 5.0
    single = torch.zeros(1, 1, 9, 9)
    single[0, 0, 4, 4] = 4.0
    assert torch.equal(select_more_confident(split, single, logits=True, sigma=0.5), single)
    assert torch.equal(select_more_confident(single, split, logits=True, sigma=0.5), single)
    with pytest.raises(DataError, match="same shape"):
        select_more_confident(sf, mf[:, :1])


def test_dlc_spec_builds_with_locref():
    model = build_pose_model(_dlc_spec(), num_keypoints=K)
    out = model(torch.randn(1, 3, 64, 64))
    assert model.stride == 8  # output_stride 16 / one stride-2 deconv
    assert out["heatmaps"].shape == (1, K, 8, 8) and out["offsets"].shape == (1, 2 * K, 8, 8)
    assert model.dlc_settings["target_generator"]["pos_dist_thresh"] == 17
    model.train()
    assert not any(m.training for m in model.backbone.modules()
                   if isinstance(m, torch.nn.BatchNorm2d))  # freeze_bn_stats


def test_dlc_spec_unknown_keys_did_you_mean():
    spec = _dlc_spec()
    spec["backbone"]["freeze_bn_stat"] = spec["backbone"].pop("freeze_bn_stats")
    spec["heads"]["bodypart"]["predictor"]["locref_stdev"] = 7.0
    spec["heads"]["bodypart"]["criterion"]["heatmap"]["type"] = "WeightedMSECriterio"
    with pytest.raises(ConfigError) as info:
        build_pose_model(spec, num_keypoints=K, where="pytorch_config.yaml: model")
    text = str(info.value)
    assert "3 problems" in text
    assert "model.backbone.freeze_bn_stat: unknown key" in text
    assert "did you mean 'freeze_bn_stats'?" in text
    assert "heads.bodypart.predictor.locref_stdev" in text and "'locref_std'?" in text
    assert "criterion.heatmap.type" in text and "'WeightedMSECriterion'?" in text


def test_dlc_spec_wrong_channels_and_neck():
    spec = _dlc_spec()
    spec["backbone_output_channels"] = 2048
    with pytest.raises(ConfigError, match="backbone_output_channels.*set it to 96"):
        build_pose_model(spec, num_keypoints=K)
    spec = _dlc_spec()
    spec["neck"] = {"type": "Transformer"}
    with pytest.raises(ConfigError, match="neck: necks are not supported"):
        build_pose_model(spec, num_keypoints=K)


def test_lp_names_and_unknown_names():
    net, channels, stride = build_backbone("resnet50_animal_ap10k")
    assert (channels, stride) == (2048, 32) and "layer4" in dict(net.body.named_children())
    with pytest.raises(ConfigError, match="did you mean 'resnet10t'"):
        build_backbone("resnet10tt")
    with pytest.raises(ConfigError, match="did you mean 'heatmap_mhcrnn'"):
        build_lp_model("heatmap_mhcrn", TINY, K)


def test_pretrained_true_is_refused_offline():
    with pytest.raises(ConfigError) as info:
        build_backbone(TINY, pretrained=True, where="config.py: model.backbone")
    text = str(info.value)
    assert text.startswith("config.py: model.backbone: pretrained=True would download")
    assert "offline" in text and "local path" in text


def test_local_weights_round_trip(tmp_path):
    src, _, _ = build_backbone(TINY)
    wrapped = {"module." + k: v for k, v in src.body.state_dict().items()}
    wrapped["module.fc.weight"] = torch.zeros(1000, 96)  # classifier: stripped
    path = tmp_path / "w.pth"
    torch.save({"state_dict": wrapped}, path)
    dst, _, _ = build_backbone(TINY, pretrained=str(path))
    x = torch.randn(1, 3, 64, 64)
    src.eval(), dst.eval()
    assert torch.equal(src(x), dst(x))


def test_torchvision_checkpoint_and_gray_input(tmp_path):
    import torchvision

    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(full.state_dict(), path)  # includes fc.*
    net, _, _ = build_backbone("resnet18", pretrained=path, in_channels=1)
    assert torch.allclose(net.body.conv1.weight, full.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(net.body.layer4[0].conv1.weight, full.layer4[0].conv1.weight)


def test_weights_mismatch_names_file(tmp_path):
    other, _, _ = build_backbone("resnet10t")
    path = tmp_path / "other.pth"
    torch.save(other.body.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"other\.pth.*(missing|shape)"):
        build_backbone(TINY, pretrained=path)
    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone(TINY, pretrained=tmp_path / "nope.pth")


def test_unfreezer_groups_and_lr(models):
    model = copy.deepcopy(models[("heatmap", 2)])
    unfreezer = BackboneUnfreezer(unfreezing_epoch=2, backbone_lr_factor=0.1, ramp=1.5)
    groups = unfreezer.param_groups(model, lr=1e-3)
    assert [g["name"] for g in groups] == ["head", "backbone"]
    n_backbone = len(list(model.backbone.parameters()))
    assert len(groups[1]["params"]) == n_backbone
    assert len(groups[0]["params"]) == len(list(model.parameters())) - n_backbone
    opt = torch.optim.Adam(groups)
    lrs = []
    for epoch in range(6):
        trainable = unfreezer.apply(model, opt, epoch)
        lrs.append(opt.param_groups[1]["lr"])
        assert trainable == (epoch >= 2)
        assert all(p.requires_grad == trainable for p in model.backbone.parameters())
    assert lrs == pytest.approx([0, 0, 1e-4, 1.5e-4, 2.25e-4, 3.375e-4])
    assert BackboneUnfreezer(0, 0.5, 2.0).lr_scale(5) == 1.0  # capped at the head lr
    with pytest.raises(ConfigError, match="unfreezing_epoch must be an integer"):
        BackboneUnfreezer(-1)


def test_frozen_backbone_does_not_move():
    model = build_lp_model("heatmap", TINY, K, 3)
    unfreezer = BackboneUnfreezer(unfreezing_epoch=1)
    opt = torch.optim.Adam(unfreezer.param_groups(model, 1e-2))
    unfreezer.apply(model, opt, 0)
    before = [p.clone() for p in model.backbone.parameters()]
    head_before = model.head.layers[-1].weight.clone()
    model(torch.randn(2, 3, 64, 64))["heatmaps"].mean().backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    assert not torch.equal(head_before, model.head.layers[-1].weight)
    unfreeze(freeze(model.backbone))
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_head_init_deterministic_by_seed(models):
    a = copy.deepcopy(models[("heatmap_mhcrnn", 2)])
    b = copy.deepcopy(a)
    torch.manual_seed(123)
    init_heads(a, seed=7)
    torch.manual_seed(999)  # the global RNG must not matter
    init_heads(b, seed=7)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name
    init_heads(b, seed=8)
    assert not torch.equal(a.head_mf.layers[-1].weight, b.head_mf.layers[-1].weight)
    assert torch.equal(next(a.backbone.parameters()), next(b.backbone.parameters()))


def test_mhcrnn_sequence_forward_equals_windowed_forward():
    import torch

    from bioloop.tasks.pose.models import build_lp_model

    torch.manual_seed(0)
    model = build_lp_model("heatmap_mhcrnn", "test_resnet", 3, downsample_factor=2).eval()
    frames = torch.randn(7, 3, 32, 48)
    windows = torch.stack([frames[t - 2:t + 3] for t in range(2, 5)])
    with torch.no_grad():
        seq, win = model.forward_sequence(frames), model(windows)
    for key in ("heatmaps_sf", "heatmaps_mf"):
        assert seq[key].shape == win[key].shape == (3, 3, 8, 12)
        assert torch.allclose(seq[key], win[key], atol=1e-5)
