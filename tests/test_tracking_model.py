"""The global tracking transformer: visual encoder, embeddings, transformer, attention head."""

import math

import pytest
import timm
import torch

from bioloop.errors import CheckpointError, ConfigError, DataError
from bioloop.tasks.tracking.embedding import Embedding
from bioloop.tasks.tracking.loss import AssociationLoss
from bioloop.tasks.tracking.model import GlobalTrackingTransformer, VisualEncoder

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(encoder_cfg={"model_name": "test_resnet"}, d_model=16, nhead=2,
            num_encoder_layers=1, num_decoder_layers=1, dropout=0.0, dropout_attn_head=0.0)
META = {"pos": {"mode": "fixed"}, "temp": {"mode": "learned"}}


def _window(n_frames=3, per_frame=2, seed=0, chans=3, size=16):
    gen = torch.Generator().manual_seed(seed)
    n = n_frames * per_frame
    crops = torch.rand(n, chans, size, size, generator=gen)
    xy = torch.rand(n, 2, generator=gen) * 0.8
    boxes = torch.cat([xy, xy + 0.1], dim=1)
    times = torch.arange(n_frames).repeat_interleave(per_frame) + 10
    return crops, boxes, times


def _model(**kw):
    torch.manual_seed(0)
    return GlobalTrackingTransformer(**{**TINY, "embedding_meta": META, **kw}).eval()


# ---------------------------------------------------------------- embeddings

def test_fixed_embeddings_golden_values():
    temp = Embedding("temp", "fixed", 4)
    # t=0 -> (sin 0, cos 0, sin 0, cos 0); t=1 -> (sin 1, cos 1, sin 0.01, cos 0.01)
    want = torch.tensor([[0, 1, 0, 1], [math.sin(1), math.cos(1), math.sin(.01), math.cos(.01)]])
    assert torch.allclose(temp(torch.tensor([0, 1])), want.float(), atol=1e-6)
    pos = Embedding("pos", "fixed", 4)  # cx * 1000 and cy * 1000, d_model/2 dims each
    box = torch.tensor([[0.0, 0.0, 0.002, 0.0]])  # centre (0.001, 0)
    assert torch.allclose(pos(box), torch.tensor([[math.sin(1), math.cos(1), 0, 1]]), atol=1e-6)
    wide = Embedding("pos", "fixed", 8, over_boxes=True)(box)  # cx, cy, w, h
    assert torch.allclose(wide[0, 4:6], torch.tensor([math.sin(2), math.cos(2)]), atol=1e-6)


def test_learned_temporal_embedding_tells_every_frame_apart_at_init():
    torch.manual_seed(0)
    emb = Embedding("temp", "learned", 16, emb_num=8)
    vectors = emb(torch.arange(8))
    dists = torch.cdist(vectors, vectors)
    assert (dists + torch.eye(8) * 1e3).min() > 0.5  # pairwise different, none zero
    with pytest.raises(DataError, match="emb_num"):
        emb(torch.tensor([0, 8]))


def test_learned_spatial_embedding_interpolates_between_bins():
    torch.manual_seed(0)
    emb = Embedding("pos", "learned", 8, emb_num=5)
    def at(x, y):
        return emb(torch.tensor([[x, y, x, y]]))[0]
    # a centre exactly on bins (1, 2) of 0..4 is the sum of those two table rows
    assert torch.allclose(at(0.25, 0.5), emb.table.weight[1] + emb.table.weight[5 + 2])
    assert torch.allclose(at(0.375, 0.5), (at(0.25, 0.5) + at(0.5, 0.5)) / 2, atol=1e-6)
    assert not torch.allclose(at(0.1, 0.5), at(0.9, 0.5))


@pytest.mark.parametrize("mode", [None, "None", "none"])
def test_no_embedding_is_zeros(mode):
    assert torch.equal(Embedding("pos", mode, 6)(torch.rand(3, 4)), torch.zeros(3, 6))
    assert torch.equal(Embedding("temp", mode, 6)(torch.arange(3)), torch.zeros(3, 6))


def test_embedding_setting_errors():
    with pytest.raises(ConfigError, match=r"embedding_meta\.temp\.n_bins.*accepted settings: "
                                          r"emb_num"):
        Embedding("temp", "learned", 16, n_bins=4)
    with pytest.raises(ConfigError, match="did you mean 'learned'"):
        Embedding("pos", "learnd", 16)
    with pytest.raises(ConfigError, match="divisible by 4"):
        Embedding("pos", "fixed", 6)
    with pytest.raises(ConfigError, match="unknown embedding kind"):
        Embedding("space", "fixed", 16)
    with pytest.raises(ConfigError, match="emb_num is too small"):
        Embedding("pos", "learned", 16, emb_num=1)


# ---------------------------------------------------------------- visual encoder

def test_visual_encoder_backends_and_in_chans():
    timm_enc = VisualEncoder("test_resnet", "timm", in_chans=2, d_model=16)
    assert timm_enc(torch.rand(3, 2, 16, 16)).shape == (3, 16)
    tv = VisualEncoder("resnet18", "torchvision", in_chans=1, d_model=16).eval()
    assert tv(torch.rand(2, 1, 16, 16)).shape == (2, 16)
    assert tv(torch.rand(0, 1, 16, 16)).shape == (0, 16)
    with pytest.raises(DataError, match=r"crops must be \(N, 1, H, W\)"):
        tv(torch.rand(2, 3, 16, 16))


@pytest.mark.parametrize("name, kwargs", [
    ("test_resnet", {}),
    ("test_efficientnet", {}),
    ("mobilenetv3_small_050", {}),  # pooled 1024 wide, num_features 288: the case that used to fail
    ("efficientvit_b0", {}),  # pooled 1280, num_features 128
    ("test_convnext", {}),
    ("test_vit", {"img_size": 32}),
])
def test_every_timm_family_trains_through_the_tracker(name, kwargs):
    """The projection is sized from the pooled output, so a forward and a backward go through."""
    torch.manual_seed(0)
    model = GlobalTrackingTransformer(**{**TINY, "encoder_cfg": {"model_name": name, **kwargs}}).train()
    crops, boxes, times = _window(n_frames=2, per_frame=2, size=32)  # ConvNeXt downsamples 32x
    out = model(crops, boxes, times, torch.arange(2, 4))["logits"][-1]
    assert out.shape == (2, 4) and torch.isfinite(out).all()
    AssociationLoss()([out], torch.tensor([0, 1, 0, 1]), times, torch.arange(2, 4)).backward()
    assert model.visual_encoder.out_layer.weight.grad.abs().sum() > 0


def test_an_encoder_without_pooling_says_so():
    enc = VisualEncoder("test_resnet", d_model=8, global_pool="")
    with pytest.raises(DataError, match="pooled output does not have the width"):
        enc(torch.rand(2, 3, 16, 16))


def test_local_weights_load_and_first_conv_is_adapted(tmp_path):
    torch.manual_seed(1)
    src = timm.create_model("test_resnet", pretrained=False)  # with its classifier
    path = tmp_path / "test_resnet.pth"
    torch.save(src.state_dict(), path)
    enc = VisualEncoder("test_resnet", in_chans=3, d_model=8, pretrained=str(path))
    for key, value in enc.backbone.state_dict().items():
        assert torch.equal(value, src.state_dict()[key]), key
    import torchvision
    rgb = torchvision.models.resnet18(weights=None)
    torch.save(rgb.state_dict(), tmp_path / "r18.pth")
    grey = VisualEncoder("resnet18", "torchvision", in_chans=1, d_model=8,
                         pretrained=tmp_path / "r18.pth")
    assert torch.allclose(grey.backbone.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    with pytest.raises(CheckpointError, match="does not exist"):
        VisualEncoder("test_resnet", pretrained=str(tmp_path / "missing.pth"))


@pytest.mark.parametrize("kwargs, message", [
    ({"pretrained": True}, "would download weights"),
    ({"pretrained": 3}, "pretrained must be False or the path"),
    ({"model_name": "test_resnat"}, "did you mean 'test_resnet'"),
    ({"backend": "keras"}, "unknown backend"),
    ({"in_chans": 0}, "in_chans must be a positive integer"),
    ({"bogus_option": 1}, "timm cannot build"),
    ({"model_name": "vgg16", "backend": "torchvision"}, "ResNets only"),
    ({"model_name": "resnet18", "backend": "torchvision", "bogus": 1}, "torchvision cannot build"),
])
def test_visual_encoder_setting_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        VisualEncoder(**{"model_name": "test_resnet", "d_model": 8, **kwargs})


# ---------------------------------------------------------------- transformer

def test_forward_shapes_and_embeddings():
    model = _model(return_embedding=True)
    crops, boxes, times = _window()
    out = model(crops, boxes, times, torch.tensor([4, 5]))
    assert len(out["logits"]) == 1 and out["logits"][0].shape == (2, 6)
    assert out["embeddings"]["pos"].shape == out["embeddings"]["temp"].shape == (6, 16)
    # temporal offsets are taken from the window's first frame (10): frames 10 and 11 differ
    assert not torch.allclose(out["embeddings"]["temp"][0], out["embeddings"]["temp"][2])
    empty = model(crops, boxes, times, torch.tensor([], dtype=torch.long))
    assert empty["logits"][0].shape == (0, 6)


def test_intermediate_decoder_outputs_norm_glu_and_self_attention():
    model = _model(num_decoder_layers=3, return_intermediate_dec=True, norm=True,
                   activation="glu", decoder_self_attn=True)
    crops, boxes, times = _window()
    logits = model(crops, boxes, times, torch.arange(6))["logits"]
    assert len(logits) == 3 and all(x.shape == (6, 6) for x in logits)
    assert not torch.allclose(logits[0], logits[-1])
    assert isinstance(model.encoder.norm, torch.nn.LayerNorm)
    assert model.decoder.layers[0].self_attn is not None
    assert model.decoder.layers[0].ffn.linear1.out_features == 2 * 16  # GLU doubles the width
    assert _model().decoder.layers[0].self_attn is None
    assert isinstance(_model().encoder.norm, torch.nn.Identity)
    assert len(_model(num_decoder_layers=3)(crops, boxes, times, torch.arange(6))["logits"]) == 1


def test_logits_do_not_depend_on_instance_order():
    model = _model(num_encoder_layers=2, num_decoder_layers=2, decoder_self_attn=True)
    crops, boxes, times = _window(n_frames=3, per_frame=3)
    queries = torch.tensor([6, 7, 8])
    base = model(crops, boxes, times, queries)["logits"][0]
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(3))
    inverse = torch.argsort(perm)
    qperm = torch.tensor([2, 0, 1])
    out = model(crops[perm], boxes[perm], times[perm], inverse[queries[qperm]])["logits"][0]
    assert torch.allclose(out, base[qperm][:, perm], atol=1e-5)


def test_cached_features_skip_the_visual_encoder():
    model = _model()
    crops, boxes, times = _window()
    with torch.no_grad():
        direct = model(crops, boxes, times, torch.arange(6))["logits"][0]
        feats = torch.cat([model.encode_crops(crops[:4]), model.encode_crops(crops[4:])])
        cached = model(None, boxes, times, torch.arange(6), ref_features=feats)["logits"][0]
    assert feats.shape == (6, 16)
    assert torch.allclose(direct, cached, atol=1e-5)


def test_model_and_loss_learn_a_window():
    torch.manual_seed(0)
    model = GlobalTrackingTransformer(**{**TINY, "embedding_meta": META}).train()
    crops, boxes, times = _window(n_frames=3, per_frame=3, seed=1)
    ids = torch.tensor([0, 1, 2] * 3)
    loss_fn = AssociationLoss()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = loss_fn(model(crops, boxes, times, torch.arange(9))["logits"], ids, times,
                       torch.arange(9))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model.visual_encoder.out_layer.weight.grad is not None


@pytest.mark.parametrize("kwargs, message", [
    ({"nhead": 3}, "must be divisible by nhead"),
    ({"activation": "tanh"}, "unknown activation"),
    ({"num_decoder_layers": 0}, "num_decoder_layers must be an integer >= 1"),
    ({"dropout": 1.5}, "dropout must be a probability"),
    ({"embedding_meta": {"position": {"mode": "fixed"}}}, "takes the keys 'pos' and 'temp'"),
    ({"embedding_meta": {"pos": {"temperature": 10}}}, "needs a mode"),
    ({"encoder_cfg": {"model_name": "test_resnet", "d_model": 8}}, "must equal the model's"),
])
def test_model_setting_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GlobalTrackingTransformer(**{**TINY, **kwargs})
