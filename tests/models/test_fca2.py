"""FCA2 (arXiv:2506.11545 Sec. III-IV): grouping, frame averaging, eq. 4, sizes, switches, training modes, and
user models by import path; plus the BasicVSR / BasicVSR++ / SpyNet parts it is built from."""

from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from fedvsr.config import ConfigError, load_config
from fedvsr.models import build_model, count_params
from fedvsr.models.base import StepHooks
from fedvsr.models.basicvsrpp import modulated_deform_conv2d
from fedvsr.models.fca2_blocks import FrameAutoencoder, channel_counts, color_correct, group_channels
from fedvsr.models.registry import ModelImportError, get_entry
from fedvsr.models.spynet import SpyNet


def meta(name: str, preset: str, **options):
    with torch.device("meta"):
        return build_model(name, preset, options)


def plain_hooks() -> StepHooks:
    def apply(loss, opt, zero_grad=True):
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return StepHooks(objective=lambda loss, sr, target: loss, apply=apply)


def fca2_overrides(*extra: str) -> list[str]:
    return ["model.name=fca2", "model.preset=tiny", "model.options.mode=joint", "data.frames=7", *extra]


# ---------------------------------------------------------------- grouping, averaging, eq. 4
def test_paper_grouping_of_seven_rgb_frames():
    # 21 channels, S = 9, O = 3: K = ceil((21 - 3) / 6) = 3 groups with stride 6
    assert group_channels(21, 9, 3) == [(0, 9), (6, 15), (12, 21)]


@pytest.mark.parametrize(
    ("s", "o", "groups"),
    [
        # K = ceil(17 / 8) = 3: the third group would be [16, 28), shifted back to end at channel 21
        (12, 4, [(0, 12), (8, 20), (9, 21)]),
        # K = ceil(21 / 6) = 4: [18, 24) shifted back to [15, 21)
        (6, 0, [(0, 6), (6, 12), (12, 18), (15, 21)]),
        # K = ceil(13 / 10) = 2: [10, 28) -> [3, 21)
        (18, 8, [(0, 18), (3, 21)]),
        (6, 2, [(0, 6), (4, 10), (8, 14), (12, 18), (15, 21)]),
    ],
)
def test_uneven_grouping_shifts_the_last_group_back(s, o, groups):
    got = group_channels(21, s, o, fit="shift")
    assert got == groups and len(got) == math.ceil((21 - o) / (s - o))
    assert all(e - b == s for b, e in got)


@pytest.mark.parametrize(
    ("s", "o", "groups"),
    [
        # eq. (3) literally: group g starts at g (S - O); the last runs past channel 21 into zero channels
        (6, 0, [(0, 6), (6, 12), (12, 18), (18, 24)]),
        (9, 0, [(0, 9), (9, 18), (18, 27)]),
        (6, 2, [(0, 6), (4, 10), (8, 14), (12, 18), (16, 22)]),
        (9, 3, [(0, 9), (6, 15), (12, 21)]),  # the exact fit: no pad, the same as shift
        (12, 4, [(0, 12), (8, 20), (16, 28)]),
        (18, 8, [(0, 18), (10, 28)]),
    ],
)
def test_pad_grouping_shares_exactly_o_channels(s, o, groups):
    got = group_channels(21, s, o)
    assert got == groups and len(got) == math.ceil((21 - o) / (s - o))
    assert all(e - b == s for b, e in got)
    assert all(got[g][1] - got[g + 1][0] == o for g in range(len(got) - 1))  # O = 0: no channel shared
    assert got[-1][1] == len(got) * (s - o) + o


def test_unknown_group_fit_is_refused():
    with pytest.raises(ValueError, match="group_fit must be one of pad, shift, got 'wrap'"):
        group_channels(21, 6, 0, fit="wrap")
    with pytest.raises(ConfigError, match="group_fit must be one of pad, shift, got 'wrap'"):
        load_config(None, fca2_overrides("model.options.group_fit=wrap"))


def test_channel_counts_of_the_paper_grouping():
    counts = channel_counts(group_channels(21, 9, 3), 21)
    assert counts.tolist() == [1] * 6 + [2] * 3 + [1] * 3 + [2] * 3 + [1] * 6


class GroupIndex(torch.nn.Module):
    """A stand-in decoder that outputs, for the g-th compressed frame of a batch, the value g + 1 on all S channels."""

    def __init__(self, s: int, k: int) -> None:
        super().__init__()
        self.s, self.k = s, k

    def forward(self, z):
        n, _, h, w = z.shape
        g = (torch.arange(n) % self.k + 1).float().view(n, 1, 1, 1)
        return g.expand(n, self.s, h, w)


def test_decoder_divides_each_channel_by_the_groups_that_encoded_it():
    ae = FrameAutoencoder(
        7, 3, 9, 3, features=4, blocks=0, flow_blocks=0, refine_features=0, flow_guidance=False, color_correction="none"
    )
    ae.decoder = GroupIndex(9, 3)
    out = ae.decode(torch.zeros(2, 3, 3, 4, 4), torch.zeros(2, 7, 3, 2, 2))
    assert out.shape == (2, 7, 3, 4, 4)
    per_channel = out.reshape(2, 21, 16)[0, :, 0].tolist()
    # channels 6-8 are in groups 1 and 2, 12-14 in groups 2 and 3: their decodings are averaged
    assert per_channel == [1] * 6 + [1.5] * 3 + [2] * 3 + [2.5] * 3 + [3] * 6


class Recorder(torch.nn.Module):
    """A stand-in encoder that records its inputs and returns their first C channels."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.c, self.seen = c, []

    def forward(self, x):
        self.seen.append(x.clone())
        return x[:, : self.c]


def test_pad_grouping_encodes_zeros_past_the_channels_and_decodes_without_them():
    # S = 6, O = 0 on 7 RGB frames: groups [0, 6), [6, 12), [12, 18), [18, 24); channels 21-23 are zeros
    ae = FrameAutoencoder(
        7, 3, 6, 0, features=4, blocks=0, flow_blocks=0, refine_features=0, flow_guidance=False, color_correction="none"
    )
    ae.encoder = Recorder(3)
    x = torch.arange(1, 22, dtype=torch.float32).view(1, 7, 3, 1, 1).expand(1, 7, 3, 2, 2)
    assert ae.encode(x).shape == (1, 4, 3, 2, 2)
    assert ae.encoder.seen[-1][0, :, 0, 0].tolist() == [19, 20, 21, 0, 0, 0]
    assert ae.encoder.seen[2][0, :, 0, 0].tolist() == [13, 14, 15, 16, 17, 18]
    ae.decoder = GroupIndex(6, 4)
    per_channel = ae.decode(torch.zeros(2, 4, 3, 4, 4), x).reshape(2, 21, 16)[0, :, 0].tolist()
    assert per_channel == [1] * 6 + [2] * 6 + [3] * 6 + [4] * 3  # each channel decoded once: nothing averaged
    shift = FrameAutoencoder(
        7,
        3,
        6,
        0,
        features=4,
        blocks=0,
        flow_blocks=0,
        refine_features=0,
        flow_guidance=False,
        color_correction="none",
        group_fit="shift",
    )
    shift.decoder = GroupIndex(6, 4)
    per_channel = shift.decode(torch.zeros(2, 4, 3, 4, 4), x).reshape(2, 21, 16)[0, :, 0].tolist()
    assert per_channel == [1] * 6 + [2] * 6 + [3] * 3 + [3.5] * 3 + [4] * 3  # [15, 21) overlaps [12, 18)


def test_color_correction_equation_4_numbers():
    out = torch.tensor([[[0.0, 2.0], [4.0, 6.0]]])  # mean 3, std sqrt(5)
    ref = torch.tensor([[[1.0, 1.0, 3.0, 3.0]]]).view(1, 1, 2, 2)  # mean 2, std 1 (another size is fine too)
    got = color_correct(out, ref)
    want = (out - 3) / math.sqrt(5) * 1 + 2
    assert torch.allclose(got, want, atol=1e-6)
    # a flat output: its std is clamped, not divided by zero; the result is the reference mean
    flat = color_correct(torch.full((1, 2, 2), 0.7), ref)
    assert torch.isfinite(flat).all() and torch.allclose(flat, torch.full((1, 2, 2), 2.0))


# ---------------------------------------------------------------- config validation of (S, O)
@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["model.options.overlap=9"], "overlap = 9 must be smaller than group_size = 9: allowed 0 <= overlap <= 8"),
        (
            ["model.options.group_size=6", "model.options.overlap=7"],
            "overlap = 7 must be smaller than group_size = 6: allowed 0 <= overlap <= 5",
        ),
        (
            ["model.options.group_size=22"],
            "group_size = 22 is larger than the 21 stacked channels (in_channels x num_frames); "
            "allowed: 1 <= group_size <= 21",
        ),
        (["model.options.overlap=-1"], "overlap = -1 must be >= 0"),
        (["model.options.group_size=0"], "group_size = 0 must be >= 1"),
        (["model.options.mode=warm"], "mode must be one of frozen, joint, pretrain, got 'warm'"),
        (["model.options.color_correction=middle"], "color_correction must be one of decoder, encoder, both, none"),
    ],
)
def test_invalid_group_overlap_is_a_config_error(sets, message):
    with pytest.raises(ConfigError, match="model.options") as err:
        load_config(None, fca2_overrides(*sets))
    assert message in str(err.value)


def test_valid_table_vi_pairs_pass_config_validation():
    for s, o in ((6, 0), (6, 2), (9, 0), (9, 3), (12, 4), (18, 8)):
        cfg = load_config(None, fca2_overrides(f"model.options.group_size={s}", f"model.options.overlap={o}"))
        assert cfg.model.options["group_size"] == s


def test_frozen_mode_needs_a_checkpoint_and_pretrain_needs_scale_1():
    with pytest.raises(ConfigError, match="mode = 'frozen' .* needs autoencoder_checkpoint"):
        load_config(None, ["model.name=fca2", "model.preset=tiny", "data.frames=7"])
    with pytest.raises(ConfigError, match=r"set data.scale = 1 \(got data.scale = 4\)"):
        load_config(None, fca2_overrides("model.options.mode=pretrain"))
    cfg = load_config(None, fca2_overrides("model.options.mode=pretrain", "data.scale=1", "data.patch=16"))
    assert cfg.data.scale == 1
    # data.scale = 1 is only for a model that upscales x1
    with pytest.raises(ConfigError, match="data.scale = 1 does not match fca2/tiny, which upscales x4"):
        load_config(None, fca2_overrides("data.scale=1", "data.patch=16"))


# ---------------------------------------------------------------- sizes (Table I)
SPYNET = 6 * sum(cin * cout * 49 + cout for cin, cout in ((8, 32), (32, 64), (64, 32), (32, 16), (16, 2)))


@pytest.mark.parametrize(
    ("name", "preset", "paper_m"),
    [
        ("basicvsr", "paper", 5.9),
        ("basicvsr++", "paper", 7.3),
        ("fca2", "paper", 9.2),
        ("fca2", "paper-basicvsr++", 10.6),
    ],
)
def test_paper_sizes_within_10_percent_of_table_i(name, preset, paper_m):
    params = count_params(meta(name, preset, mode="joint") if name == "fca2" else meta(name, preset))
    assert abs(params / 1e6 - paper_m) / paper_m < 0.10


def test_size_breakdown_by_hand():
    assert SPYNET == 1_440_300
    assert sum(p.numel() for p in SpyNet().parameters()) == SPYNET
    # BasicVSR: SpyNet + 2 trunks (conv 67 -> 64 and 30 residual blocks) + fusion + x4 upsampler + conv_hr/last
    block = 2 * (64 * 64 * 9 + 64)
    trunk = 67 * 64 * 9 + 64 + 30 * block
    tail = 2 * (64 * 256 * 9 + 256) + (64 * 64 * 9 + 64) + (64 * 3 * 9 + 3)
    assert count_params(meta("basicvsr", "paper")) == SPYNET + 2 * trunk + (128 * 64 + 64) + tail == 6_291_311
    m = meta("fca2", "paper", mode="joint")
    parts = {k: count_params(getattr(m, k)) for k in ("autoencoder", "cleaning", "backbone")}
    assert parts["backbone"] == 6_291_311 and count_params(m) == sum(parts.values())
    # cleaning: conv 3 -> 64, 20 residual blocks, conv 64 -> 3
    assert parts["cleaning"] == (3 * 64 * 9 + 64) + 20 * block + (64 * 3 * 9 + 3)
    # FCA2 adds ~3.3 M to a backbone in Table I (9.2 - 5.9 = 10.6 - 7.3)
    assert 3.0e6 < parts["autoencoder"] + parts["cleaning"] < 3.6e6


def test_switches_change_the_parameter_counts_by_hand():
    f = 8  # tiny features
    base = count_params(meta("fca2", "tiny", mode="joint"))
    # grouping off: encoder 21 -> 9 channels instead of 9 -> 3, decoder 9 -> 21 instead of 3 -> 9
    head, tail = f * 9, f * 9 + 1
    diff = (21 - 9) * head + (9 - 3) * tail + (9 - 3) * head + (21 - 9) * tail
    assert count_params(meta("fca2", "tiny", mode="joint", grouping=False)) - base == diff
    # flow guidance off: no SpyNet, no fusion (conv 6 -> 3 and one residual block of 3 channels)
    m = meta("fca2", "tiny", mode="joint")
    flow = count_params(m.autoencoder.flow.spynet) + (6 * 3 * 9 + 3) + 2 * (3 * 3 * 9 + 3)
    assert base - count_params(meta("fca2", "tiny", mode="joint", flow_guidance=False)) == flow
    # cleaning off
    assert base - count_params(meta("fca2", "tiny", mode="joint", cleaning=False)) == count_params(m.cleaning)
    # colour correction has no parameters; pretrain mode is the autoencoder alone
    assert count_params(meta("fca2", "tiny", mode="joint", color_correction="none")) == base
    assert count_params(meta("fca2", "tiny", mode="pretrain")) == count_params(m.autoencoder)


def test_paper_light_cleaning_fits_table_iv_budget():
    from torch.utils.flop_counter import FlopCounterMode

    light, paper = meta("fca2", "paper-light", mode="joint"), meta("fca2", "paper", mode="joint")
    # 3x3 head 3 -> 32, 12 residual blocks of two 3x3 32 -> 32 convs, 3x3 tail 32 -> 3 (biases everywhere)
    cleaning = (3 * 32 * 9 + 32) + 12 * 2 * (32 * 32 * 9 + 32) + (32 * 3 * 9 + 3)
    assert count_params(light.cleaning) == cleaning == 223_715
    assert count_params(paper) - count_params(light) == count_params(paper.cleaning) - cleaning
    assert light.cleaning.passes == 3
    # Table IV: cleaning adds 7 ms to FCA2's 50 (57 ms): 12 % of the pipeline; here 11 % of its FLOPs
    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        light.eval()(torch.rand(1, 7, 3, 32, 32))
    share = sum(counter.get_flop_counts()["FCA2.cleaning"].values()) / counter.get_total_flops()
    assert 0.10 < share < 0.13


# ---------------------------------------------------------------- behaviour
def test_shapes_in_every_mode_and_long_clips_in_chunks():
    torch.manual_seed(0)
    lr = torch.rand(1, 7, 3, 8, 8)
    assert build_model("fca2", "tiny", {"mode": "joint"})(lr).shape == (1, 7, 3, 32, 32)
    assert build_model("fca2", "tiny", {"mode": "pretrain"})(lr).shape == (1, 7, 3, 8, 8)
    with torch.no_grad():  # 10 frames: two chunks of 7 (the last padded), 6 compressed frames in the backbone
        assert build_model("fca2", "tiny", {"mode": "joint"}).eval()(torch.rand(1, 10, 3, 8, 8)).shape == (
            1,
            10,
            3,
            32,
            32,
        )


def test_decoder_color_correction_matches_each_frame_to_its_lr_statistics():
    torch.manual_seed(0)
    lr = torch.rand(1, 7, 3, 8, 8)
    with torch.no_grad():
        out = build_model("fca2", "tiny", {"mode": "joint", "cleaning": False})(lr)
    assert torch.allclose(out.mean(dim=(-2, -1)), lr.mean(dim=(-2, -1)), atol=1e-5)
    assert torch.allclose(out.std(dim=(-2, -1), unbiased=False), lr.std(dim=(-2, -1), unbiased=False), atol=1e-4)
    # encoder placement: each compressed frame takes the statistics of the LR frame at its group's centre
    ae = build_model("fca2", "tiny", {"mode": "pretrain", "color_correction": "encoder"}).autoencoder
    with torch.no_grad():
        z = ae.encode(lr)
    centre = lr[:, [1, 3, 5]]  # groups [0, 9), [6, 15), [12, 21): centre channels 4, 10, 16 -> frames 1, 3, 5
    assert torch.allclose(z.mean(dim=(-2, -1)), centre.mean(dim=(-2, -1)), atol=1e-5)


def save_pretrained(path, **options):
    torch.manual_seed(1)
    ae_model = build_model("fca2", "tiny", {"mode": "pretrain", **options})
    save_file({k: v.contiguous() for k, v in ae_model.state_dict().items()}, str(path))
    return ae_model


def test_frozen_autoencoder_is_loaded_and_receives_no_update(tmp_path):
    pre = save_pretrained(tmp_path / "model.safetensors")
    torch.manual_seed(2)
    m = build_model("fca2", "tiny", {"autoencoder_checkpoint": str(tmp_path)})  # a run folder
    ae_before = {k: v.clone() for k, v in m.autoencoder.state_dict().items()}
    for k, v in pre.autoencoder.state_dict().items():
        assert torch.equal(ae_before[k], v)
    groups = m.optimizer_groups()
    ae_ids = {id(p) for p in m.autoencoder.parameters()}
    assert not ae_ids & {id(p) for p in groups["model"]}
    assert len(groups["model"]) == len([p for n, p in m.named_parameters() if not n.startswith("autoencoder.")])
    other_before = {n: p.detach().clone() for n, p in m.named_parameters() if not n.startswith("autoencoder.")}
    opt = {"model": torch.optim.Adam(groups["model"], lr=1e-2)}
    lr, hr = torch.rand(2, 7, 3, 8, 8), torch.rand(2, 7, 3, 32, 32)
    loss = m.training_step((lr, hr), opt, plain_hooks())
    assert loss > 0 and m.iteration.item() == 1 and m.backbone.iteration.item() == 1
    for k, v in m.autoencoder.state_dict().items():
        assert torch.equal(v, ae_before[k]), k
    assert all(p.grad is None for p in m.autoencoder.parameters())
    changed = [n for n, p in m.named_parameters() if n in other_before and not torch.equal(p, other_before[n])]
    assert any(n.startswith("backbone.") for n in changed) and any(n.startswith("cleaning.") for n in changed)


def test_a_checkpoint_of_another_grouping_is_a_config_error(tmp_path):
    save_pretrained(tmp_path / "model.safetensors", group_size=6, overlap=2)
    ckpt = f"model.options.autoencoder_checkpoint={tmp_path}"
    # checked on the meta device from the safetensors header: nothing is loaded
    with pytest.raises(ConfigError, match="does not fit this autoencoder"):
        load_config(None, fca2_overrides(ckpt, "model.options.mode=frozen"))
    ok = load_config(
        None, fca2_overrides(ckpt, "model.options.mode=frozen", "model.options.group_size=6", "model.options.overlap=2")
    )
    assert ok.model.options["mode"] == "frozen"
    with pytest.raises(ConfigError, match="is neither a weights file nor a run folder"):
        load_config(None, fca2_overrides(f"model.options.autoencoder_checkpoint={tmp_path / 'nope'}"))


def test_pretrain_step_trains_gt_to_gt():
    torch.manual_seed(0)
    m = build_model("fca2", "tiny", {"mode": "pretrain", "spynet_frozen_iters": 0})
    hr = torch.rand(2, 7, 3, 8, 8)
    lr = torch.zeros(2, 7, 3, 2, 2)  # ignored in pretrain mode: the input is the HR clip
    opt = {"model": torch.optim.Adam(m.optimizer_groups()["model"], lr=1e-3)}
    loss = m.training_step((lr, hr), opt, plain_hooks())
    assert 0 < loss < 1
    assert all(p.grad is not None for p in m.autoencoder.flow.spynet.parameters())


def test_spynet_gets_no_gradient_while_frozen():
    torch.manual_seed(0)
    m = build_model("basicvsr", "tiny", {"spynet_frozen_iters": 2})
    opt = {"model": torch.optim.SGD(m.optimizer_groups()["model"], lr=0.0)}
    batch = (torch.rand(1, 3, 3, 8, 8), torch.rand(1, 3, 3, 32, 32))
    for it in range(3):
        for p in m.parameters():
            p.grad = None
        m.training_step(batch, opt, plain_hooks())
        frozen = all(p.grad is None for p in m.spynet.parameters())
        assert frozen == (it < 2), it
    assert m.iteration.item() == 3


def test_spynet_loads_a_local_basicsr_file(tmp_path):
    torch.manual_seed(3)
    src = SpyNet()
    state = {"params": {**src.state_dict(), "mean": torch.zeros(1, 3, 1, 1), "std": torch.ones(1, 3, 1, 1)}}
    torch.save(state, tmp_path / "spynet.pth")
    m = build_model("basicvsr", "small", {"spynet_weights": str(tmp_path / "spynet.pth")})
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in m.spynet.state_dict().items())
    with pytest.raises(ValueError, match="is not a file"):
        build_model("basicvsr", "small", {"spynet_weights": str(tmp_path / "none.pth")})


def test_deformable_conv_with_zero_offsets_and_unit_mask_is_a_convolution():
    torch.manual_seed(0)
    x, w, b = torch.rand(2, 8, 6, 5), torch.rand(4, 8, 3, 3), torch.rand(4)
    off, mask = torch.zeros(2, 2 * 2 * 9, 6, 5), torch.ones(2, 2 * 9, 6, 5)
    assert torch.allclose(modulated_deform_conv2d(x, off, mask, w, b, 2), F.conv2d(x, w, b, padding=1), atol=1e-5)
    # a whole-pixel offset of +1 in x for every tap equals convolving the input shifted left by one (away from
    # the first column, where the deformable taps still see column 0 and the shifted input its zero padding)
    off[:, 1::2] = 1.0
    shifted = torch.cat([x[..., 1:], torch.zeros(2, 8, 6, 1)], dim=-1)
    got = modulated_deform_conv2d(x, off, mask, w, b, 2)
    assert torch.allclose(got[..., 1:], F.conv2d(shifted, w, b, padding=1)[..., 1:], atol=1e-5)
    # the mask scales each tap: a mask of 0.5 halves the convolution (bias apart)
    half = modulated_deform_conv2d(x, torch.zeros_like(off), mask * 0.5, w, None, 2)
    assert torch.allclose(half, 0.5 * F.conv2d(x, w, None, padding=1), atol=1e-5)


def test_any_registered_backbone_that_restores_every_frame():
    torch.manual_seed(0)
    m = build_model("fca2", "tiny", {"mode": "joint", "backbone": "vsrgan", "backbone_preset": "tiny"})
    assert m.backbone.num_frames == 3  # K compressed frames of 7
    assert m(torch.rand(1, 7, 3, 8, 8)).shape == (1, 7, 3, 32, 32)
    with pytest.raises(ConfigError, match="backbone = 'efvsr' restores only the centre frame"):
        load_config(None, fca2_overrides("model.options.backbone=efvsr", "model.options.backbone_preset=tiny"))
    with pytest.raises(ConfigError, match="backbone = 'nope': unknown model 'nope'"):
        load_config(None, fca2_overrides("model.options.backbone=nope"))


def test_backbones_restore_every_frame():
    torch.manual_seed(0)
    for name in ("basicvsr", "basicvsr++"):
        out = build_model(name, "tiny")(torch.rand(1, 3, 3, 8, 8))
        assert out.shape == (1, 3, 3, 32, 32)


# ---------------------------------------------------------------- user models by import path
USER_MODULE = '''
import torch
from torch import nn
from fedvsr.models import VSRModel

class TinyUpscaler(VSRModel):
    """A user's network: every frame, nearest upsampling plus a learned 1x1 conv."""
    center_output = False

    def __init__(self, scale: int = 4, num_frames: int = 3, width: int = 3):
        super().__init__()
        self.scale, self.num_frames = scale, num_frames
        self.conv = nn.Conv2d(3, width, 1)

    def forward(self, lr):
        b, t, c, h, w = lr.shape
        x = nn.functional.interpolate(lr.reshape(b * t, c, h, w), scale_factor=self.scale)
        return self.conv(x).view(b, t, -1, h * self.scale, w * self.scale)

class NotAModel:
    pass

class BareModule(nn.Module):
    def forward(self, x):
        return x

def a_function():
    pass
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "fca2_user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fca2_user_models"
    sys.modules.pop("fca2_user_models", None)


def test_user_model_by_import_path_builds_and_validates(user_module):
    cfg = load_config(
        None, [f"model.name={user_module}:TinyUpscaler", "model.options.width=3", "model.options.num_frames=3"]
    )
    m = build_model(cfg.model.name, cfg.model.preset, cfg.model.options)
    assert type(m).__name__ == "TinyUpscaler" and count_params(m) == 3 * 3 + 3
    assert m(torch.rand(1, 3, 3, 4, 4)).shape == (1, 3, 3, 16, 16)
    assert get_entry(f"{user_module}:TinyUpscaler").description.startswith("A user's network")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_module_xyz:Net", "cannot import module 'no_such_module_xyz'"),
        ("{m}:Missing", "module '{m}' has no attribute 'Missing'"),
        ("{m}:a_function", "'a_function' is a function, not a class"),
        ("{m}:NotAModel", "class 'NotAModel' is not a torch.nn.Module subclass"),
        (
            "{m}:BareModule",
            "is not a fedvsr.models.VSRModel and lacks the model contract's target, vsr_loss, "
            "optimizer_groups, training_step",
        ),
    ],
)
def test_user_model_errors_are_clear(user_module, name, message):
    name, message = name.format(m=user_module), message.format(m=user_module)
    with pytest.raises(ModelImportError) as err:
        get_entry(name)
    assert message in str(err.value)
    with pytest.raises(ConfigError) as cerr:
        load_config(None, [f"model.name={name}"])
    assert message in str(cerr.value) and "model.name" in str(cerr.value)


def test_user_model_bad_constructor_arguments_are_a_config_error(user_module):
    with pytest.raises(ConfigError, match="bad constructor arguments"):
        load_config(None, [f"model.name={user_module}:TinyUpscaler", "model.options.depth=3"])


# ---------------------------------------------------------------- the (S, O) sweep
def test_group_overlap_sweep_spec_holds_table_vi_and_rejects_invalid_pairs(tmp_path):
    import yaml

    from fedvsr.sweeps.spec import SPACES_DIR, SpecError, load_spec

    spec = load_spec("fca2-group-overlap")
    pairs = [(p["model.options.group_size"], p["model.options.overlap"]) for p in spec.grid_points()]
    assert pairs == [(6, 0), (6, 2), (9, 0), (9, 3), (12, 4), (18, 8)]
    data = yaml.safe_load((SPACES_DIR / "fca2-group-overlap.yaml").read_text())
    data["params"]["group_overlap"]["grid"].append([9, 9])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(
        SpecError,
        match="group_size=9, model.options.overlap=9 is not a valid experiment: .*"
        "overlap = 9 must be smaller than group_size = 9",
    ):
        load_spec(str(bad))
