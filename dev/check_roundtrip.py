#!/usr/bin/python3
"""Checks that a biflow checkpoint loads back into the PyTorch TARFlow (dev/tarflow_torch.py)
and gives the same forward pass as the C code.

  /usr/bin/python3 dev/check_roundtrip.py CHECKPOINT.safetensors IO.safetensors [--tol 1e-4]
      [--ema] [--bound C]

CHECKPOINT: a tarflow safetensors file (as written by bf_flow_save or dev/convert.py);
  __metadata__ gives the config (img_size, in_channels, patch_size, channels, num_blocks,
  layers_per_block, head_dim, num_classes, optional bound). If the file holds several weight
  sets under a prefix (e.g. "ema.blocks..." and "params.blocks..."), --ema picks the EMA one.
  Tensors the model does not use are reported and ignored; missing ones are an error.
IO: x (n,C,H,W), y (n,) [I64 or I32; -1 = unconditional; optional: all unconditional], z (n,T,D),
  logdet (n,) computed by the C code (logdet = sum over blocks of -mean(alpha)).
  Optional extras, checked when present: loss (1,); reverse_z/reverse_y with reverse_cfg0,
  reverse_cfg2, reverse_cfg2_annealed (exact inverse in tokens, guidance 0, 2, 2 annealed).

The weights go through dev/convert.py's safetensors -> state_dict path and are loaded with
load_state_dict(strict=True). Prints a JSON line; exit status 0 when z and logdet (and extras)
agree within --tol (max abs error), 1 otherwise.

Example (the shared reference fixture):
  /usr/bin/python3 dev/check_roundtrip.py /work/shared/fixtures/tarflow-ref/model.safetensors \\
      /work/shared/fixtures/tarflow-ref/io.safetensors
"""
import argparse
import collections
import json
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert  # noqa: E402
import tarflow_torch as tt  # noqa: E402


def select_weights(tensors, use_ema):
    """Picks one weight set out of a checkpoint that may hold several under prefixes."""
    names = list(tensors)
    if any(k.startswith('blocks.') for k in names) and not use_ema:
        return collections.OrderedDict((k, v) for k, v in tensors.items()
                                       if k.startswith('blocks.') or k == 'var'), ''
    prefixes = ['ema.', 'ema_params.', 'model_ema.'] if use_ema else []
    prefixes += ['params.', 'model.', 'module.', '']
    for p in prefixes:
        sel = collections.OrderedDict((k[len(p):], v) for k, v in tensors.items()
                                      if k.startswith(p + 'blocks.') or k == p + 'var')
        if sel:
            return sel, p
    raise ValueError('no blocks.* tensors in the checkpoint')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('checkpoint')
    ap.add_argument('io')
    ap.add_argument('--tol', type=float, default=1e-4, help='max abs error allowed (z, logdet)')
    ap.add_argument('--reverse-tol', type=float, default=1e-3,
                    help='max abs error allowed for the optional reverse_* checks')
    ap.add_argument('--ema', action='store_true', help='use the EMA weights if the file has them')
    ap.add_argument('--bound', type=float, default=None, help='override the bound from metadata')
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    tensors, meta = tt.st_load(args.checkpoint)
    cfg = tt.config_from_metadata(meta)
    if args.bound is not None:
        cfg['bound'] = args.bound
    weights, prefix = select_weights(tensors, args.ema)
    model = tt.build_model(cfg)
    expected = set(model.state_dict())
    ignored = [k for k in tensors if not (k.startswith(prefix) and k[len(prefix):] in expected)]
    if ignored:
        print(f'note: ignoring {len(ignored)} tensors not used by the model: {ignored[:6]}'
              f'{" ..." if len(ignored) > 6 else ""}', file=sys.stderr)

    # Through the converter: write the chosen weights as a plain tarflow safetensors, convert
    # that to a PyTorch state_dict, and load it with strict=True.
    with tempfile.TemporaryDirectory() as td:
        plain = os.path.join(td, 'weights.safetensors')
        tt.st_save(plain, collections.OrderedDict(
            (k, v.float()) for k, v in weights.items() if k in expected), tt.config_to_metadata(cfg))
        sd, cfg_conv = convert.safetensors_to_state_dict(plain)
    assert cfg_conv == cfg, (cfg_conv, cfg)
    model.load_state_dict(sd, strict=True)
    model.eval()

    io, _ = tt.st_load(args.io)
    for k in ('x', 'z', 'logdet'):
        if k not in io:
            raise SystemExit(f'{args.io}: lacks {k!r}')
    x = io['x'].float()
    y = io['y'].long() if 'y' in io else None
    if cfg['num_classes'] == 0:
        y = None

    res = {'checkpoint': args.checkpoint, 'io': args.io, 'config': cfg, 'n': int(x.shape[0])}
    errs = {}
    with torch.no_grad():
        z, _, logdet = model(x, y)
        errs['z'] = (z.double() - io['z'].double()).abs().max().item()
        errs['logdet'] = (logdet.double() - io['logdet'].double().reshape(-1)).abs().max().item()
        if 'loss' in io:
            loss = model.get_loss(z, logdet)
            errs['loss'] = abs(loss.item() - io['loss'].double().reshape(-1)[0].item())
        res['nonfinite_z_torch'] = int((~torch.isfinite(z)).sum())
        rev = {}
        if 'reverse_z' in io:
            rz = io['reverse_z'].float()
            ry = io['reverse_y'].long() if 'reverse_y' in io and cfg['num_classes'] else None
            for name, g, ann in (('reverse_cfg0', 0.0, False), ('reverse_cfg2', 2.0, False),
                                 ('reverse_cfg2_annealed', 2.0, True)):
                if name in io:
                    out = model.reverse(rz.clone(), ry, guidance=g, annealed_guidance=ann,
                                        return_tokens=True)
                    rev[name] = (out.double() - io[name].double()).abs().max().item()
        errs.update(rev)
    res['max_abs_err'] = errs
    fails = [k for k in ('z', 'logdet', 'loss') if k in errs and not errs[k] <= args.tol]
    fails += [k for k in rev if not rev[k] <= args.reverse_tol]
    res['ok'] = not fails
    if fails:
        res['failed'] = fails
    print(json.dumps(res))
    return 0 if not fails else 1


if __name__ == '__main__':
    sys.exit(main())
