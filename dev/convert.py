#!/usr/bin/python3
"""Convert TARFlow checkpoints between PyTorch state_dicts and biflow safetensors.

  convert.py to-safetensors STATE_DICT.pt OUT.safetensors [--img-size 28 --in-channels 1
      --patch-size 4 --channels 128 --num-blocks 4 --layers-per-block 2 --head-dim 64
      --num-classes 10] [--bound 0]
  convert.py to-torch IN.safetensors OUT.pt

to-safetensors accepts a raw state_dict, or a dict holding it under 'model' or 'state_dict'
(also 'ema' with --ema); strips 'module.' / '_orig_mod.' prefixes (DDP, torch.compile);
drops the constant attn_mask buffers (checked to be lower-triangular ones); writes every other
tensor as F32 in state-dict order, with __metadata__ {format: tarflow, img_size, in_channels,
patch_size, channels, num_blocks, layers_per_block, head_dim, num_classes, bound} as strings.
Config values not given as flags are inferred from the tensor shapes (head_dim cannot be
inferred and defaults to 64; in_channels/patch_size are inferred from D = C*P*P and T when
unambiguous).

to-torch writes a state_dict (with attn_mask and var buffers) that dev/tarflow_torch.py's
Model loads with strict=True, and prints the config (as JSON) to stdout.

Only torch and the standard library are used.
"""
import argparse
import collections
import json
import math
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tarflow_torch as tt  # noqa: E402

def extract_state_dict(obj, use_ema=False):
    """Finds the state_dict inside a loaded .pt object and normalises its keys."""
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ValueError(f'not a state_dict or checkpoint dict: {type(obj)}')
    keys = ['ema', 'model_ema', 'model', 'state_dict'] if use_ema else ['model', 'state_dict']
    for k in keys:
        if k in obj and isinstance(obj[k], (dict, torch.nn.Module)):
            obj = obj[k]
            break
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    sd = collections.OrderedDict()
    for k, v in obj.items():
        if not torch.is_tensor(v):
            continue
        name = k
        while True:
            for p in ('module.', '_orig_mod.'):
                if name.startswith(p):
                    name = name[len(p):]
                    break
            else:
                break
        if name.startswith('model.') and (name[6:].startswith('blocks.') or name[6:] == 'var'):
            name = name[6:]
        sd[name] = v
    if not any(k.startswith('blocks.') for k in sd):
        raise ValueError('no blocks.* tensors found: is this a transformer_flow.Model state_dict?')
    return sd


def infer_config(sd, given):
    """Fills config values missing from `given` (dict, None = not given) from tensor shapes."""
    cfg = dict(given)
    blocks = sorted({int(m.group(1)) for k in sd for m in [re.match(r'blocks\.(\d+)\.', k)] if m})
    nb = len(blocks)
    if blocks != list(range(nb)):
        raise ValueError(f'block indices not contiguous: {blocks}')
    layers = {int(m.group(1)) for k in sd
              for m in [re.match(r'blocks\.0\.attn_blocks\.(\d+)\.', k)] if m}
    W, D = sd['blocks.0.proj_in.weight'].shape
    T = sd['blocks.0.pos_embed'].shape[0]
    ce = sd.get('blocks.0.class_embed')
    inferred = dict(num_blocks=nb, layers_per_block=len(layers), channels=int(W),
                    num_classes=int(ce.shape[0]) if ce is not None else 0)
    for k, v in inferred.items():
        if cfg.get(k) is None:
            cfg[k] = v
        elif cfg[k] != v:
            raise ValueError(f'--{k.replace("_", "-")} {cfg[k]} contradicts the tensors ({v})')
    side = int(round(math.sqrt(T)))
    if side * side != T:
        raise ValueError(f'T = {T} tokens is not a square number')
    C, P, H = cfg.get('in_channels'), cfg.get('patch_size'), cfg.get('img_size')
    if P is None and H is not None:
        P = H // side
    if P is None and C is not None:
        P = int(round(math.sqrt(D // C)))
    if C is None and P is not None:
        C = D // (P * P)
    if C is None and P is None:
        cands = [(c, int(round(math.sqrt(D // c)))) for c in (1, 3, 2, 4)
                 if D % c == 0 and int(round(math.sqrt(D // c))) ** 2 == D // c]
        if not cands:
            raise ValueError(f'cannot infer in_channels/patch_size from D = {D}: give them')
        C, P = cands[0]
        if len(cands) > 1:
            print(f'warning: D = {D} is ambiguous {cands}; assuming in_channels={C}, '
                  f'patch_size={P} (give --in-channels/--patch-size)', file=sys.stderr)
    if H is None:
        H = side * P
    if C * P * P != D:
        raise ValueError(f'in_channels {C} * patch_size {P}^2 != token dim {D}')
    if (H // P) ** 2 != T or H % P:
        raise ValueError(f'img_size {H} / patch_size {P} does not give T = {T} tokens')
    cfg.update(in_channels=C, patch_size=P, img_size=H)
    if cfg.get('head_dim') is None:
        cfg['head_dim'] = 64 if W % 64 == 0 else W
        print(f'warning: head_dim cannot be inferred from shapes; assuming {cfg["head_dim"]} '
              f'(give --head-dim)', file=sys.stderr)
    if W % cfg['head_dim']:
        raise ValueError(f'channels {W} not divisible by head_dim {cfg["head_dim"]}')
    if cfg.get('bound') is None:
        cfg['bound'] = 0.0
    return cfg


def state_dict_to_safetensors(sd, out_path, cfg):
    """Checks sd against a Model built from cfg (strict), then writes it. Returns the tensor
    dict written."""
    model = tt.build_model(cfg)
    ref = model.state_dict()
    full = tt.add_buffers(sd, model)
    missing = [k for k in ref if k not in full]
    extra = [k for k in full if k not in ref]
    if missing or extra:
        raise ValueError(f'state_dict does not match the config: missing {missing[:8]}, '
                         f'unexpected {extra[:8]}')
    for k, v in ref.items():
        if tuple(full[k].shape) != tuple(v.shape):
            raise ValueError(f'{k}: shape {tuple(full[k].shape)}, config wants {tuple(v.shape)}')
    out = collections.OrderedDict()
    for k, v in sd.items():
        if k.endswith('attn_mask'):
            if not torch.equal(v.float(), torch.tril(torch.ones_like(v.float()))):
                raise ValueError(f'{k} is not lower-triangular ones')
            continue
        out[k] = v.detach().to(torch.float32).contiguous()
    if 'var' not in out:
        out['var'] = ref['var'].clone()
    elif not torch.allclose(out['var'], torch.ones_like(out['var'])):
        print('warning: var is not all ones (VP prior); written as is', file=sys.stderr)
    tt.st_save(out_path, out, tt.config_to_metadata(cfg))
    return out


def safetensors_to_state_dict(path):
    """Returns (state_dict loadable by Model(strict=True), cfg)."""
    tensors, meta = tt.st_load(path)
    cfg = tt.config_from_metadata(meta)
    model = tt.build_model(cfg)
    sd = tt.add_buffers({k: v.float() for k, v in tensors.items()}, model)
    model.load_state_dict(sd, strict=True)   # raises with the names on mismatch
    return model.state_dict(), cfg


def convert_pt_to_safetensors(pt_path, out_path, given=None, use_ema=False):
    obj = torch.load(pt_path, map_location='cpu')
    sd = extract_state_dict(obj, use_ema=use_ema)
    cfg = infer_config(sd, given or {})
    state_dict_to_safetensors(sd, out_path, cfg)
    return cfg


def main():
    ap = argparse.ArgumentParser(description='TARFlow checkpoint converter',
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    sub = ap.add_subparsers(dest='cmd', required=True)
    a = sub.add_parser('to-safetensors', help='PyTorch state_dict .pt -> biflow safetensors')
    a.add_argument('inp')
    a.add_argument('out')
    for k in tt.CONFIG_KEYS:
        a.add_argument('--' + k.replace('_', '-'), type=int, default=None)
    a.add_argument('--bound', type=float, default=None, help='c of c*tanh(v/c); 0 = off')
    a.add_argument('--ema', action='store_true', help="prefer an 'ema' entry of the checkpoint")
    b = sub.add_parser('to-torch', help='biflow safetensors -> PyTorch state_dict .pt')
    b.add_argument('inp')
    b.add_argument('out')
    args = ap.parse_args()
    if args.cmd == 'to-safetensors':
        given = {k: getattr(args, k) for k in tt.CONFIG_KEYS}
        given['bound'] = args.bound
        cfg = convert_pt_to_safetensors(args.inp, args.out, given, use_ema=args.ema)
        print(json.dumps(cfg))
    else:
        sd, cfg = safetensors_to_state_dict(args.inp)
        torch.save(sd, args.out)
        print(json.dumps(cfg))
    return 0


if __name__ == '__main__':
    sys.exit(main())
