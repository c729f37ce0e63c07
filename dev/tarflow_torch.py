#!/usr/bin/python3
"""A faithful PyTorch re-implementation of the public Apple TARFlow `transformer_flow.Model`
(github.com/apple/ml-tarflow), for cross-checking the C implementation of biflow.

Tensor names, shapes and numerics follow the public code:
  blocks.{b}.proj_in.{weight,bias}          Linear(D, W)
  blocks.{b}.pos_embed                      (T, W), permuted together with the tokens
  blocks.{b}.class_embed                    (num_classes, 1, W); label < 0 or None -> mean
  blocks.{b}.attn_blocks.{l}.attention.{norm,qkv,proj}.{weight,bias}
  blocks.{b}.attn_blocks.{l}.mlp.norm.{weight,bias}, ...mlp.main.{0,2}.{weight,bias}
  blocks.{b}.proj_out.{weight,bias}         Linear(W, 2D), weight zero at init
  blocks.{b}.attn_mask                      (T, T) lower-triangular ones (persistent buffer,
                                            as in the public code; not stored in safetensors)
  var                                       (T, D) ones (prior variance buffer)

One extension (off by default, as in the public code): `bound` c > 0 replaces alpha and mu by
c * tanh(v / c) after the shift (biflow's "norm control", metadata key "bound").

Differences from the public code, all numerically neutral for the fixture:
  * PyTorch 1.13 has no F.scaled_dot_product_attention, so attention is written out
    (softmax(q k^T / sqrt(hd)) v, causal mask), the same maths as the public forward_base.
  * In reverse_step a label < 0 means "unconditional" (mean class embedding), as in forward;
    the public reverse_step indexes class_embed[y] directly (so -1 would pick the last class).
    For labels >= 0 and y=None both agree exactly.
  * reverse() also has a no-cache path (use_cache=False) that recomputes the prefix each step.

Also: a minimal safetensors reader/writer (struct + json, no safetensors package) and helpers
to build a Model from a safetensors file with a tarflow __metadata__ header.

Run `/usr/bin/python3 dev/tarflow_torch.py [--fixture DIR]` to verify against the shared
fixture (/work/shared/fixtures/tarflow-ref by default).
"""
import argparse
import collections
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------- safetensors

_ST_DTYPES = {
    'F64': torch.float64, 'F32': torch.float32, 'F16': torch.float16, 'BF16': torch.bfloat16,
    'I64': torch.int64, 'I32': torch.int32, 'I16': torch.int16, 'I8': torch.int8,
    'U8': torch.uint8, 'BOOL': torch.bool,
}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def st_load(path):
    """Reads a safetensors file. Returns (OrderedDict name -> tensor in file order, metadata)."""
    with open(path, 'rb') as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f'{path}: too short for a safetensors file')
    (n,) = struct.unpack('<Q', buf[:8])
    if n > len(buf) - 8:
        raise ValueError(f'{path}: header length {n} beyond end of file')
    header = json.loads(buf[8:8 + n].decode('utf-8'))
    meta = header.pop('__metadata__', None) or {}
    base = 8 + n
    items = sorted(header.items(), key=lambda kv: kv[1]['data_offsets'][0])
    out = collections.OrderedDict()
    for name, info in items:
        dt = _ST_DTYPES[info['dtype']]
        s, e = info['data_offsets']
        shape = list(info['shape'])
        raw = bytearray(buf[base + s:base + e])
        numel = 1
        for d in shape:
            numel *= d
        if numel == 0:
            t = torch.empty(shape, dtype=dt)
        else:
            t = torch.frombuffer(raw, dtype=dt).reshape(shape).clone()
        if t.numel() * t.element_size() != e - s:
            raise ValueError(f'{path}: tensor {name} size mismatch')
        out[name] = t
    return out, meta


def st_save(path, tensors, metadata=None):
    """Writes tensors (ordered mapping name -> tensor) in the given order, little-endian,
    C-contiguous, 8-byte aligned header. Metadata values are converted to strings."""
    header = {}
    if metadata:
        header['__metadata__'] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    off = 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in _ST_NAMES:
            raise ValueError(f'unsupported dtype {t.dtype} for {name}')
        if t.dtype == torch.bfloat16:
            b = t.view(torch.int16).numpy().tobytes()
        else:
            b = t.numpy().tobytes()
        header[name] = {'dtype': _ST_NAMES[t.dtype], 'shape': list(t.shape),
                        'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hb = json.dumps(header, separators=(',', ':')).encode('utf-8')
    hb += b' ' * ((8 - len(hb) % 8) % 8)
    tmp = f'{path}.tmp.{os.getpid()}'
    with open(tmp, 'wb') as f:
        f.write(struct.pack('<Q', len(hb)))
        f.write(hb)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- model


class Permutation(torch.nn.Module):
    def __init__(self, seq_length: int):
        super().__init__()
        self.seq_length = seq_length

    def forward(self, x, dim=1, inverse=False):
        raise NotImplementedError


class PermutationIdentity(Permutation):
    def forward(self, x, dim=1, inverse=False):
        return x


class PermutationFlip(Permutation):
    def forward(self, x, dim=1, inverse=False):
        return x.flip(dims=[dim])


class Attention(torch.nn.Module):
    def __init__(self, in_channels: int, head_channels: int):
        assert in_channels % head_channels == 0
        super().__init__()
        self.norm = torch.nn.LayerNorm(in_channels)
        self.qkv = torch.nn.Linear(in_channels, in_channels * 3)
        self.proj = torch.nn.Linear(in_channels, in_channels)
        self.num_heads = in_channels // head_channels
        self.sqrt_scale = head_channels ** (-0.25)
        self.sample = False
        self.k_cache = {'cond': [], 'uncond': []}
        self.v_cache = {'cond': [], 'uncond': []}

    def forward(self, x, mask=None, temp=1.0, which_cache='cond'):
        B, T, C = x.size()
        x = self.norm(x.float()).type(x.dtype)
        # (B, T, 3H, hd) -> (B, 3H, T, hd) -> q, k, v each (B, H, T, hd): per token the
        # qkv output rows are all q heads, then all k heads, then all v heads.
        q, k, v = self.qkv(x).reshape(B, T, 3 * self.num_heads, -1).transpose(1, 2).chunk(3, dim=1)
        if self.sample:
            self.k_cache[which_cache].append(k)
            self.v_cache[which_cache].append(v)
            k = torch.cat(self.k_cache[which_cache], dim=2)
            v = torch.cat(self.v_cache[which_cache], dim=2)
        scale = self.sqrt_scale ** 2 / temp
        att = torch.matmul(q, k.transpose(-2, -1)) * scale          # (B, H, T, S)
        if mask is not None:
            att = att.masked_fill(mask.bool().logical_not(), float('-inf'))
        att = att.float().softmax(dim=-1).type(att.dtype)
        x = torch.matmul(att, v)                                       # (B, H, T, hd)
        x = x.transpose(1, 2).reshape(B, T, C)
        return self.proj(x)


class MLP(torch.nn.Module):
    def __init__(self, channels: int, expansion: int):
        super().__init__()
        self.norm = torch.nn.LayerNorm(channels)
        self.main = torch.nn.Sequential(
            torch.nn.Linear(channels, channels * expansion),
            torch.nn.GELU(),
            torch.nn.Linear(channels * expansion, channels),
        )

    def forward(self, x):
        return self.main(self.norm(x.float()).type(x.dtype))


class AttentionBlock(torch.nn.Module):
    def __init__(self, channels: int, head_channels: int, expansion: int = 4):
        super().__init__()
        self.attention = Attention(channels, head_channels)
        self.mlp = MLP(channels, expansion)

    def forward(self, x, attn_mask=None, attn_temp=1.0, which_cache='cond'):
        x = x + self.attention(x, attn_mask, attn_temp, which_cache)
        x = x + self.mlp(x)
        return x


class MetaBlock(torch.nn.Module):
    attn_mask: torch.Tensor

    def __init__(self, in_channels, channels, num_patches, permutation, num_layers=1,
                 head_dim=64, expansion=4, nvp=True, num_classes=0, bound=0.0):
        super().__init__()
        self.proj_in = torch.nn.Linear(in_channels, channels)
        self.pos_embed = torch.nn.Parameter(torch.randn(num_patches, channels) * 1e-2)
        if num_classes:
            self.class_embed = torch.nn.Parameter(torch.randn(num_classes, 1, channels) * 1e-2)
        else:
            self.class_embed = None
        self.attn_blocks = torch.nn.ModuleList(
            [AttentionBlock(channels, head_dim, expansion) for _ in range(num_layers)])
        output_dim = in_channels * 2 if nvp else in_channels
        self.nvp = nvp
        self.proj_out = torch.nn.Linear(channels, output_dim)
        self.proj_out.weight.data.fill_(0.0)
        self.permutation = permutation
        self.bound = float(bound)
        self.register_buffer('attn_mask', torch.tril(torch.ones(num_patches, num_patches)))

    def _class_term(self, y):
        if y is None:
            return self.class_embed.mean(dim=0)
        if (y < 0).any():
            m = (y < 0).float().view(-1, 1, 1)
            return (1 - m) * self.class_embed[y] + m * self.class_embed.mean(dim=0)
        return self.class_embed[y]

    def _bound(self, v):
        c = self.bound
        if c > 0:
            return c * torch.tanh(v / c)
        return v

    def _split(self, x):
        if self.nvp:
            xa, xb = x.chunk(2, dim=-1)
        else:
            xb = x
            xa = torch.zeros_like(x)
        return self._bound(xa), self._bound(xb)

    def forward(self, x, y=None):
        x = self.permutation(x)
        pos_embed = self.permutation(self.pos_embed, dim=0)
        x_in = x
        x = self.proj_in(x) + pos_embed
        if self.class_embed is not None:
            x = x + self._class_term(y)
        for block in self.attn_blocks:
            x = block(x, self.attn_mask)
        x = self.proj_out(x)
        x = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1)
        xa, xb = self._split(x)
        scale = (-xa.float()).exp().type(xa.dtype)
        return self.permutation((x_in - xb) * scale, inverse=True), -xa.mean(dim=[1, 2])

    def reverse_step(self, x, pos_embed, i, y, attn_temp=1.0, which_cache='cond'):
        """KV-cached step (public code): feeds token i only; returns (alpha, mu) of token i+1,
        each (B, 1, D)."""
        x_in = x[:, i:i + 1]
        x = self.proj_in(x_in) + pos_embed[i:i + 1]
        if self.class_embed is not None:
            x = x + self._class_term(y)
        for block in self.attn_blocks:
            x = block(x, attn_temp=attn_temp, which_cache=which_cache)
        x = self.proj_out(x)
        return self._split(x)

    def reverse_step_nocache(self, x, pos_embed, i, y, attn_temp=1.0):
        """Same result as reverse_step, recomputing the whole prefix 0..i with a causal mask."""
        h = self.proj_in(x[:, :i + 1]) + pos_embed[:i + 1]
        if self.class_embed is not None:
            h = h + self._class_term(y)
        mask = self.attn_mask[:i + 1, :i + 1]
        for block in self.attn_blocks:
            h = block(h, mask, attn_temp=attn_temp)
        h = self.proj_out(h[:, i:i + 1])
        return self._split(h)

    def set_sample_mode(self, flag=True):
        for m in self.modules():
            if isinstance(m, Attention):
                m.sample = flag
                m.k_cache = {'cond': [], 'uncond': []}
                m.v_cache = {'cond': [], 'uncond': []}

    def reverse(self, x, y=None, guidance=0, guide_what='ab', attn_temp=1.0,
                annealed_guidance=False, use_cache=True):
        x = self.permutation(x)
        pos_embed = self.permutation(self.pos_embed, dim=0)
        if use_cache:
            self.set_sample_mode(True)
        T = x.size(1)
        try:
            for i in range(x.size(1) - 1):
                if use_cache:
                    za, zb = self.reverse_step(x, pos_embed, i, y, which_cache='cond')
                else:
                    za, zb = self.reverse_step_nocache(x, pos_embed, i, y)
                if guidance > 0 and guide_what:
                    if use_cache:
                        za_u, zb_u = self.reverse_step(x, pos_embed, i, None, attn_temp=attn_temp,
                                                       which_cache='uncond')
                    else:
                        za_u, zb_u = self.reverse_step_nocache(x, pos_embed, i, None,
                                                               attn_temp=attn_temp)
                    if annealed_guidance:
                        g = (i + 1) / (T - 1) * guidance
                    else:
                        g = guidance
                    if 'a' in guide_what:
                        za = za + g * (za - za_u)
                    if 'b' in guide_what:
                        zb = zb + g * (zb - zb_u)
                scale = za[:, 0].float().exp().type(za.dtype)
                x[:, i + 1] = x[:, i + 1] * scale + zb[:, 0]
        finally:
            if use_cache:
                self.set_sample_mode(False)
        return self.permutation(x, inverse=True)


class Model(torch.nn.Module):
    VAR_LR: float = 0.1
    var: torch.Tensor

    def __init__(self, in_channels, img_size, patch_size, channels, num_blocks, layers_per_block,
                 head_dim=64, expansion=4, nvp=True, num_classes=0, bound=0.0):
        super().__init__()
        self.in_channels = in_channels
        self.img_size = img_size
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.config = dict(img_size=img_size, in_channels=in_channels, patch_size=patch_size,
                           channels=channels, num_blocks=num_blocks,
                           layers_per_block=layers_per_block, head_dim=head_dim,
                           num_classes=num_classes, bound=float(bound))
        permutations = [PermutationIdentity(self.num_patches), PermutationFlip(self.num_patches)]
        blocks = []
        for i in range(num_blocks):
            blocks.append(MetaBlock(in_channels * patch_size ** 2, channels, self.num_patches,
                                    permutations[i % 2], layers_per_block, head_dim=head_dim,
                                    expansion=expansion, nvp=nvp, num_classes=num_classes,
                                    bound=bound))
        self.blocks = torch.nn.ModuleList(blocks)
        self.register_buffer('var', torch.ones(self.num_patches, in_channels * patch_size ** 2))

    def patchify(self, x):
        u = F.unfold(x, self.patch_size, stride=self.patch_size)
        return u.transpose(1, 2)

    def unpatchify(self, x):
        u = x.transpose(1, 2)
        return F.fold(u, (self.img_size, self.img_size), self.patch_size, stride=self.patch_size)

    def forward(self, x, y=None):
        x = self.patchify(x)
        outputs = []
        logdets = torch.zeros((), device=x.device)
        for block in self.blocks:
            x, logdet = block(x, y)
            logdets = logdets + logdet
            outputs.append(x)
        return x, outputs, logdets

    def update_prior(self, z):
        z2 = (z ** 2).mean(dim=0)
        self.var.lerp_(z2.detach(), weight=self.VAR_LR)

    def get_loss(self, z, logdets):
        return 0.5 * z.pow(2).mean() - logdets.mean()

    def reverse(self, x, y=None, guidance=0, guide_what='ab', attn_temp=1.0,
                annealed_guidance=False, return_sequence=False, use_cache=True,
                return_tokens=False):
        """x: (n, T, D) noise tokens. Returns images (n, C, H, W) (or tokens with
        return_tokens=True; or the list of intermediate images with return_sequence)."""
        seq = [self.unpatchify(x)]
        x = x * self.var.sqrt()
        for block in reversed(self.blocks):
            x = block.reverse(x, y, guidance, guide_what, attn_temp, annealed_guidance,
                              use_cache=use_cache)
            seq.append(self.unpatchify(x))
        if return_sequence:
            return seq
        if return_tokens:
            return x
        return self.unpatchify(x)


# ----------------------------------------------------------------------------- config helpers

CONFIG_KEYS = ('img_size', 'in_channels', 'patch_size', 'channels', 'num_blocks',
               'layers_per_block', 'head_dim', 'num_classes')

NAMED_CONFIGS = {
    'fmnist-small': dict(img_size=28, in_channels=1, patch_size=4, channels=128, num_blocks=4,
                         layers_per_block=2, head_dim=64, num_classes=10, bound=0.0),
}


def config_from_metadata(meta):
    if meta.get('format', 'tarflow') != 'tarflow':
        print(f"warning: metadata format is {meta.get('format')!r}, expected 'tarflow'",
              file=sys.stderr)
    cfg = {}
    for k in CONFIG_KEYS:
        if k not in meta:
            raise KeyError(f'metadata lacks {k!r}')
        cfg[k] = int(meta[k])
    cfg['bound'] = float(meta.get('bound', 0) or 0)
    return cfg


def config_to_metadata(cfg):
    meta = {'format': 'tarflow'}
    for k in CONFIG_KEYS:
        meta[k] = str(int(cfg[k]))
    meta['bound'] = repr(float(cfg.get('bound', 0.0)))
    return meta


def build_model(cfg):
    return Model(in_channels=cfg['in_channels'], img_size=cfg['img_size'],
                 patch_size=cfg['patch_size'], channels=cfg['channels'],
                 num_blocks=cfg['num_blocks'], layers_per_block=cfg['layers_per_block'],
                 head_dim=cfg['head_dim'], num_classes=cfg['num_classes'],
                 bound=cfg.get('bound', 0.0))


def add_buffers(sd, model):
    """Adds the constant buffers (attn_mask, and var if absent) that safetensors files of this
    project do not carry, so that load_state_dict(strict=True) works."""
    sd = collections.OrderedDict(sd)
    ref = model.state_dict()
    for k, v in ref.items():
        if k not in sd and (k.endswith('attn_mask') or k == 'var'):
            sd[k] = v.clone()
    return sd


def load_safetensors_model(path, bound=None):
    """Builds a Model from a tarflow safetensors checkpoint; returns (model, cfg)."""
    tensors, meta = st_load(path)
    cfg = config_from_metadata(meta)
    if bound is not None:
        cfg['bound'] = float(bound)
    model = build_model(cfg)
    sd = add_buffers({k: v.float() for k, v in tensors.items()}, model)
    model.load_state_dict(sd, strict=True)
    model.eval()
    return model, cfg


# ----------------------------------------------------------------------------- fixture check


def check_fixture(fixture_dir, verbose=True):
    torch.set_grad_enabled(True)
    model, cfg = load_safetensors_model(os.path.join(fixture_dir, 'model.safetensors'))
    io, _ = st_load(os.path.join(fixture_dir, 'io.safetensors'))
    errs = {}

    def err(a, b):
        return (a.detach().double() - b.double()).abs().max().item()

    with torch.no_grad():
        z, _, logdet = model(io['x'], io['y'])
        loss = model.get_loss(z, logdet)
    errs['z'] = err(z, io['z'])
    errs['logdet'] = err(logdet, io['logdet'])
    errs['loss'] = err(loss.reshape(1), io['loss'])

    if 'x_grad' in io:
        x = io['x'].clone().requires_grad_(True)
        z, _, logdet = model(x, io['x_grad_labels'])
        gl = model.get_loss(z, logdet)
        gl.backward()
        errs['x_grad_loss'] = err(gl.reshape(1), io['x_grad_loss'])
        errs['x_grad'] = err(x.grad, io['x_grad'])
        errs['x_grad_rel'] = errs['x_grad'] / io['x_grad'].abs().max().item()

    if 'reverse_z' in io:
        with torch.no_grad():
            for name, g in (('reverse_cfg0', 0.0), ('reverse_cfg2', 2.0)):
                if name not in io:
                    continue
                for cache in (True, False):
                    out = model.reverse(io['reverse_z'].clone(), io['reverse_y'], guidance=g,
                                        use_cache=cache, return_tokens=True)
                    errs[name + ('' if cache else '_nocache')] = err(out, io[name])
            # round trip: F(F^-1(z)) = z
            xr = model.reverse(io['reverse_z'].clone(), io['reverse_y'])
            zr, _, _ = model(xr, io['reverse_y'])
            errs['roundtrip_z'] = err(zr, io['reverse_z'])
    if verbose:
        print(f'config: {cfg}')
        for k, v in errs.items():
            print(f'  max abs err {k:22s} {v:.3e}')
    return errs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--fixture', default='/work/shared/fixtures/tarflow-ref')
    args = ap.parse_args()
    torch.manual_seed(0)
    errs = check_fixture(args.fixture)
    tol = {'z': 1e-4, 'logdet': 1e-5, 'loss': 1e-5, 'x_grad_rel': 1e-3,
           'reverse_cfg0': 1e-3, 'reverse_cfg2': 1e-3}
    bad = [k for k, t in tol.items() if k in errs and not errs[k] <= t]
    print(json.dumps({'fixture': args.fixture, 'max_abs_err': errs, 'ok': not bad}))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
