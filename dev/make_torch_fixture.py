#!/usr/bin/python3
"""Builds tests/fixtures/torch-small/{model,io}.safetensors: a small Fashion-MNIST-shaped TARFlow
with random, NON-trivial weights, and the PyTorch (dev/tarflow_torch.py) outputs for it.

  /usr/bin/python3 dev/make_torch_fixture.py [--out tests/fixtures/torch-small] [--seed 1234]

Model (deterministic, seed 1234): 28x28x1 images, P=4 (T=49 tokens, D=16), W=32, head_dim 16
(2 heads), B=3 blocks (identity, flip, identity), L=1 layer per block, 10 classes, bound 0.
Unlike a fresh public initialisation (proj_out weight zero, LayerNorm 1/0), every tensor is
random: proj_out weight N(0, 0.03^2) and bias N(0, 0.02^2) so alpha and mu are non-zero but the
inverse is stable; LayerNorm weight 1 + N(0, 0.1^2), bias N(0, 0.1^2); class_embed N(0, 0.3^2)
so the label matters (guidance is visible); pos_embed N(0, 0.1^2).

The state_dict is saved to a temporary .pt and converted with dev/convert.py's functions
(the same path as `convert.py to-safetensors`), and io is computed from the model loaded back
from that safetensors file.

io.safetensors (all F32 unless said):
  x (4,1,28,28) deterministic pseudo-images on the pixel grid p/127.5 - 1; y (4,) I64 with a -1
  z (4,49,16), logdet (4,) [sum over blocks of -mean(alpha)], loss (1,) = 0.5 mean z^2 - mean logdet
  reverse_z (4,49,16) N(0,1), reverse_y (4,) I64 (all >= 0)
  reverse_cfg0, reverse_cfg2 (4,49,16): exact inverse in patch tokens, guidance 0 / 2
      (constant weight, alpha and mu guided: a + w (a_cond - a_uncond))
  reverse_cfg2_annealed (4,49,16): guidance 2 annealed, token t uses w * t / (T-1)
  bound (1,): a bound c, and z_bound (4,49,16), logdet_bound (4,): the forward pass of the same
      weights with alpha, mu -> c tanh(v / c) (biflow's norm control; metadata "bound")
"""
import argparse
import collections
import json
import math
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert  # noqa: E402
import tarflow_torch as tt  # noqa: E402

CFG = dict(img_size=28, in_channels=1, patch_size=4, channels=32, num_blocks=3,
           layers_per_block=1, head_dim=16, num_classes=10, bound=0.0)
BOUND_C = 0.25


def pseudo_images(n, c, h, w):
    """Deterministic smooth patterns with edges, quantised to the uint8 pixel grid."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64),
                            torch.arange(w, dtype=torch.float64), indexing='ij')
    imgs = []
    for i in range(n):
        for ch in range(c):
            k = i * c + ch
            cy, cx = 8 + 3 * (k % 4), 10 + 2 * (k % 5)
            r = torch.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            v = torch.sin(0.35 * (k + 1) * xx / 3 + 0.5 * k) * torch.cos(0.27 * yy + 0.3 * k)
            v = 0.6 * v + 0.8 * torch.tanh((9 - r) / 2) - 0.3
            if k % 2:
                v = torch.where(xx > 14 + k, -1.0 + 0 * v, v)     # a flat dark region
            imgs.append(v)
    x = torch.stack(imgs).reshape(n, c, h, w).clamp(-1, 1)
    p = torch.round((x + 1) * 127.5)
    return (p / 127.5 - 1).float()


def random_model(seed):
    torch.manual_seed(seed)
    model = tt.build_model(CFG)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('proj_out.weight'):
                p.normal_(0, 0.03)
            elif name.endswith('proj_out.bias'):
                p.normal_(0, 0.02)
            elif '.norm.weight' in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif '.norm.bias' in name:
                p.normal_(0, 0.1)
            elif name.endswith('class_embed'):
                p.normal_(0, 0.3)
            elif name.endswith('pos_embed'):
                p.normal_(0, 0.1)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  '..', 'tests', 'fixtures', 'torch-small'))
    ap.add_argument('--seed', type=int, default=1234)
    args = ap.parse_args()
    out = os.path.normpath(args.out)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)          # deterministic reductions

    model = random_model(args.seed)
    model_path = os.path.join(out, 'model.safetensors')
    with tempfile.TemporaryDirectory() as td:
        pt = os.path.join(td, 'state_dict.pt')
        torch.save(model.state_dict(), pt)
        cfg = convert.convert_pt_to_safetensors(pt, model_path, dict(CFG))
    model, cfg2 = tt.load_safetensors_model(model_path)
    assert cfg2 == cfg, (cfg, cfg2)

    n = 4
    x = pseudo_images(n, CFG['in_channels'], CFG['img_size'], CFG['img_size'])
    y = torch.tensor([0, 3, -1, 9], dtype=torch.int64)
    T = model.num_patches
    D = CFG['in_channels'] * CFG['patch_size'] ** 2
    g = torch.Generator().manual_seed(args.seed + 1)
    rz = torch.randn(n, T, D, generator=g)
    ry = torch.tensor([1, 2, 5, 8], dtype=torch.int64)

    io = collections.OrderedDict()
    with torch.no_grad():
        z, outputs, logdet = model(x, y)
        loss = model.get_loss(z, logdet)
        io['x'], io['y'], io['z'], io['logdet'] = x, y, z, logdet
        io['loss'] = loss.reshape(1)
        io['reverse_z'], io['reverse_y'] = rz, ry
        io['reverse_cfg0'] = model.reverse(rz.clone(), ry, guidance=0, return_tokens=True)
        io['reverse_cfg2'] = model.reverse(rz.clone(), ry, guidance=2, return_tokens=True)
        io['reverse_cfg2_annealed'] = model.reverse(rz.clone(), ry, guidance=2,
                                                    annealed_guidance=True, return_tokens=True)
        # the no-cache decoder must agree with the cached one
        nc = model.reverse(rz.clone(), ry, guidance=2, return_tokens=True, use_cache=False)
        err_nc = (nc - io['reverse_cfg2']).abs().max().item()
        # same weights, bounded
        mb, _ = tt.load_safetensors_model(model_path, bound=BOUND_C)
        zb, _, ldb = mb(x, y)
        io['bound'] = torch.tensor([BOUND_C], dtype=torch.float32)
        io['z_bound'], io['logdet_bound'] = zb, ldb

        # statistics and self-checks
        xr = model.reverse(rz.clone(), ry, guidance=0)
        zr, _, _ = model(xr, ry)
        err_rt = (zr - rz).abs().max().item()
        xb_rt = mb.reverse(zb.clone(), y)
        err_rt_b = (xb_rt - x).abs().max().item()
        x_rt = model.reverse(z.clone(), y)
        err_rt_x = (x_rt - x).abs().max().item()

    # alpha magnitudes, for the record
    stats = {}
    with torch.no_grad():
        h = model.patchify(x)
        for bi, blk in enumerate(model.blocks):
            u = blk.permutation(h)
            e = blk.proj_in(u) + blk.permutation(blk.pos_embed, dim=0) + blk._class_term(y)
            for ab in blk.attn_blocks:
                e = ab(e, blk.attn_mask)
            o = blk.proj_out(e)
            a, m = o[:, :-1].chunk(2, dim=-1)
            stats[f'block{bi}'] = {'alpha_absmax': round(a.abs().max().item(), 4),
                                   'alpha_std': round(a.std().item(), 4),
                                   'mu_absmax': round(m.abs().max().item(), 4)}
            h, _ = blk(h, y)

    meta = {'note': 'made by dev/make_torch_fixture.py from model.safetensors next to it; '
                    'see that script for the meaning of each tensor',
            'seed': str(args.seed), 'bound_c': repr(BOUND_C)}
    io_path = os.path.join(out, 'io.safetensors')
    tt.st_save(io_path, io, meta)
    sizes = {p: os.path.getsize(os.path.join(out, p)) for p in ('model.safetensors', 'io.safetensors')}
    report = {'config': cfg, 'params': sum(p.numel() for p in model.parameters()),
              'files': sizes, 'total_bytes': sum(sizes.values()),
              'loss': loss.item(), 'logdet': logdet.tolist(),
              'z_absmax': z.abs().max().item(),
              'reverse_cfg2_absmax': io['reverse_cfg2'].abs().max().item(),
              'cfg2_minus_cfg0_absmax': (io['reverse_cfg2'] - io['reverse_cfg0']).abs().max().item(),
              'annealed_minus_cfg2_absmax': (io['reverse_cfg2_annealed'] - io['reverse_cfg2']).abs().max().item(),
              'z_bound_minus_z_absmax': (zb - z).abs().max().item(),
              'err_nocache_vs_cache': err_nc, 'err_roundtrip_F_Finv_z': err_rt,
              'err_roundtrip_Finv_F_x': err_rt_x, 'err_roundtrip_Finv_F_x_bound': err_rt_b,
              'alpha_stats': stats}
    print(json.dumps(report, indent=1))
    assert report['total_bytes'] < 300_000, 'fixture too large'
    assert max(err_nc, err_rt, err_rt_x, err_rt_b) < 1e-4, 'self-checks failed'
    return 0


if __name__ == '__main__':
    sys.exit(main())
