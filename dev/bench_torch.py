#!/usr/bin/python3
"""The PyTorch baseline for biflow's speed figures: the same forward model F (TARFlow, tensor
names of the public code), written for speed in eager PyTorch 1.13 on the CPU, timed on the
cases of `biflow bench train` and `biflow bench sample` (exact sampler).

  /usr/bin/python3 dev/bench_torch.py [--config fmnist-small] [--threads 2] [--shards N]
      [--batch 64] [--steps 20] [--warmup 3] [--seconds 2] [--cfg 2] [--skip-train] [--skip-sample]
      [--json-out FILE]
  /usr/bin/python3 dev/bench_torch.py --check [--flow models/flow-fmnist.safetensors]
      [--biflow ./biflow]

Needs Debian's PyTorch (`apt-get install python3-torch`; run with /usr/bin/python3).

What is timed (as the C benchmarks time it; GFLOP/s counted as bf_flow_forward_flops /
bf_flow_train_flops count them, so the two are comparable):
  train   one step = forward + backward + gradient-norm clip (1.0) + AdamW (betas 0.9, 0.95,
          weight decay 1e-4 on the weight matrices only, warm-up/cosine learning rate) + EMA
          of the weights, on a fixed batch of random tokens in [-1, 1] with labels
          i % 10 - (i % 7 == 0) (so every 7th is -1: the unconditional mean embedding);
          `--steps` timed steps after `--warmup` untimed ones.
  sample  exact inverse with a KV cache on N(0,1) tokens, batch 1 and --batch, guidance 0 and
          --cfg (two branches, conditional and unconditional), whole calls repeated for at
          least --seconds per case; random weights with proj_out ~ N(0, 0.02^2) and the
          configuration's bound c (as biflow's bench: bound 2 when the configuration has none).

What makes it fast (all plain eager PyTorch):
  * batch shards on Python threads: with --threads 2 a step (or a sampling call) splits its
    batch in two halves that run at once, each on its own Python thread with one intra-op
    thread (operations release the GIL), their gradients summed; this is what biflow's
    sharded step does, and on two cores it beats OpenMP inside each operation, whose
    fork/join per operation costs most when other processes share the cores. Every case
    is also timed unsharded (every operation over --threads, torch's usual way), and batch 1
    also on one thread; the summary takes the fastest way of each case;
  * OpenBLAS: Debian's OpenBLAS 0.3.21 does not recognise this CPU and falls back to its
    SSE3 "Prescott" kernels; unless OPENBLAS_CORETYPE is set, the script sets it (SkylakeX
    where the CPU has AVX-512, else Haswell) before torch loads OpenBLAS. The line
    "BLAS core" says which kernels ran.
  * every parameter is a view into one flat tensor, every gradient a view into another (autograd
    accumulates into them in place), so clipping, AdamW and the EMA are a few operations on
    two flat tensors (weights that decay, and the rest) instead of loops over 120 tensors;
  * fused qkv projection whose output is permuted once into (3, N*H, T, hd) for batched
    products; causal mask and scale in one baddbmm with a precomputed additive mask;
  * sampling in inference_mode with both guidance branches stacked into one batch (one
    product per layer and step for both), the attention scale and the bound's 1/c folded into
    the weights once per call, and a preallocated cache per layer laid out (3, rows, heads,
    tokens, hd) so that one copy stores q, k, v of a step and every attention product reads
    the cache as a strided view without copying.

--check loads a checkpoint (models/flow-fmnist.safetensors by default) into this
implementation and compares z and the log-determinant with dev/tarflow_torch.py (the reference
PyTorch model) and, with --biflow, with `biflow encode`; then it checks that the exact sampler
inverts the forward pass and agrees with the reference's reverse(). Exit status 1 when a
difference exceeds 1e-4.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor


def _cpu_has(flag):
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('flags'):
                    return flag in line.split()
    except OSError:
        pass
    return False


# Before torch is imported: OpenBLAS picks its kernels when it is loaded.
if 'OPENBLAS_CORETYPE' not in os.environ and '--keep-blas-core' not in sys.argv:
    os.environ['OPENBLAS_CORETYPE'] = 'SkylakeX' if _cpu_has('avx512f') else 'Haswell'

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

#             img C  P  W    B  L  hd  K   bound   (src/flow/flow.c's named configurations)
CONFIGS = {
    'fmnist-tiny': (28, 1, 4, 64, 2, 1, 32, 10, 4.0),
    'fmnist-small': (28, 1, 4, 128, 4, 2, 64, 10, 4.0),
    'fmnist-base': (28, 1, 4, 256, 4, 4, 64, 10, 4.0),
    'cifar-small': (32, 3, 4, 256, 4, 2, 64, 10, 4.0),
}
KEYS = ('img_size', 'in_channels', 'patch_size', 'channels', 'num_blocks', 'layers_per_block',
        'head_dim', 'num_classes', 'bound')


def named_config(name):
    return dict(zip(KEYS, CONFIGS[name]))


def forward_flops(c, n):
    """bf_flow_forward_flops (src/flow/flow.c): the products of a forward pass of n images."""
    T = (c['img_size'] // c['patch_size']) ** 2
    D = c['in_channels'] * c['patch_size'] ** 2
    W = c['channels']
    rows = n * T
    per_layer = 2.0 * rows * W * (3 * W + W + 4 * W + 4 * W) + 2.0 * n * W * T * (T + 1)
    per_block = 2.0 * rows * D * W + 2.0 * rows * W * 2 * D + c['layers_per_block'] * per_layer
    return c['num_blocks'] * per_block


def train_flops(c, n):
    return 3.0 * forward_flops(c, n)


# ----------------------------------------------------------------------------- the model


class Flow:
    """TARFlow F with its parameters as views into one flat tensor (grouped: decayed weight
    matrices first, then biases, norms and embeddings), named as the public state dict."""

    def __init__(self, cfg, seed=0):
        self.cfg = dict(cfg)
        c = self.cfg
        self.T = (c['img_size'] // c['patch_size']) ** 2
        self.D = c['in_channels'] * c['patch_size'] ** 2
        self.W = c['channels']
        self.H = self.W // c['head_dim']
        self.hd = c['head_dim']
        self.K = c['num_classes']
        self.L = c['layers_per_block']
        self.B = c['num_blocks']
        self.bound = float(c['bound'])
        T, D, W, K = self.T, self.D, self.W, self.K
        shapes = []   # (name, shape, decays) in the public state dict's order
        for b in range(self.B):
            p = f'blocks.{b}.'
            shapes += [(p + 'pos_embed', (T, W), False)]
            if K:
                shapes += [(p + 'class_embed', (K, 1, W), False)]
            shapes += [(p + 'proj_in.weight', (W, D), True), (p + 'proj_in.bias', (W,), False)]
            for l in range(self.L):
                q = f'{p}attn_blocks.{l}.'
                shapes += [(q + 'attention.norm.weight', (W,), False),
                           (q + 'attention.norm.bias', (W,), False),
                           (q + 'attention.qkv.weight', (3 * W, W), True),
                           (q + 'attention.qkv.bias', (3 * W,), False),
                           (q + 'attention.proj.weight', (W, W), True),
                           (q + 'attention.proj.bias', (W,), False),
                           (q + 'mlp.norm.weight', (W,), False), (q + 'mlp.norm.bias', (W,), False),
                           (q + 'mlp.main.0.weight', (4 * W, W), True),
                           (q + 'mlp.main.0.bias', (4 * W,), False),
                           (q + 'mlp.main.2.weight', (W, 4 * W), True),
                           (q + 'mlp.main.2.bias', (W,), False)]
            shapes += [(p + 'proj_out.weight', (2 * D, W), True), (p + 'proj_out.bias', (2 * D,), False)]
        self.names = [s[0] for s in shapes]
        self.shapes = {s[0]: s[1] for s in shapes}
        n_dec = sum(math.prod(s[1]) for s in shapes if s[2])
        n_all = sum(math.prod(s[1]) for s in shapes)
        self.num_params = n_all
        self.n_decay = n_dec
        self.flat = torch.zeros(n_all)
        self.offsets = {}
        off = {True: 0, False: n_dec}
        for name, shape, dec in shapes:
            self.offsets[name] = off[dec]
            off[dec] += math.prod(shape)
        self.gflat, self.p = self.views()
        self.shard_views = [(self.gflat, self.p)]
        self.var = torch.ones(T, D)
        self.mask = torch.full((T, T), float('-inf')).triu(1)   # additive causal mask
        self.init(seed)

    def views(self):
        """A set of leaf tensors viewing the flat parameters, with their gradients viewing a
        flat gradient tensor of their own (autograd accumulates into them in place). Each
        shard of a sharded step has its own set: same weights, separate gradients."""
        gflat = torch.zeros_like(self.flat)
        p = {}
        for name in self.names:
            o, shape = self.offsets[name], self.shapes[name]
            n = math.prod(shape)
            v = self.flat[o:o + n].view(shape)
            v.requires_grad_(True)
            v.grad = gflat[o:o + n].view(shape)
            p[name] = v
        return gflat, p

    def shard(self, k):
        while len(self.shard_views) <= k:
            self.shard_views.append(self.views())
        return self.shard_views[k]

    def init(self, seed):
        """PyTorch's defaults (Linear U(+-1/sqrt(fan_in)), LayerNorm 1/0, embeddings N(0, 0.01^2),
        proj_out weight zero), as the public code and bf_flow_init."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name in self.names:
                t = self.p[name]
                if name.endswith('pos_embed') or name.endswith('class_embed'):
                    t.normal_(0, 0.01, generator=g)
                elif 'norm.' in name:
                    t.fill_(1.0 if name.endswith('weight') else 0.0)
                elif name.endswith('proj_out.weight'):
                    t.zero_()
                else:
                    w = self.p[name[:-len('bias')] + 'weight'] if name.endswith('bias') else t
                    bound = 1.0 / math.sqrt(w.shape[1])
                    t.uniform_(-bound, bound, generator=g)

    def load(self, tensors):
        with torch.no_grad():
            for name in self.names:
                if name not in tensors:
                    raise KeyError(f'checkpoint lacks {name}')
                self.p[name].copy_(tensors[name].float().reshape(self.shapes[name]))
            if 'var' in tensors:
                self.var = tensors['var'].float().reshape(self.T, self.D).clone()

    # --------------------------------------------------------------- forward (training)
    def _cls(self, b, y, P=None):
        """Class term (N, 1, W); label < 0 -> the mean embedding (unconditional)."""
        ce = (P or self.p)[f'blocks.{b}.class_embed'][:, 0]
        table = torch.cat([ce, ce.mean(0, keepdim=True)], 0)
        return table[torch.where(y < 0, torch.full_like(y, self.K), y)].unsqueeze(1)

    def _bound(self, o):
        c = self.bound
        return c * torch.tanh(o * (1.0 / c)) if c > 0 else o

    def forward(self, x, y, P=None):
        """x: tokens (N, T, D); y: labels (N,) (-1 = unconditional); P: the parameter views
        (a shard's; default self.p). Returns z, logdet (N,)."""
        N, T, D, W, H, hd = x.shape[0], self.T, self.D, self.W, self.H, self.hd
        P = P or self.p
        scale = hd ** -0.5
        logdet = 0.0
        for b in range(self.B):
            pf = f'blocks.{b}.'
            flip = b % 2 == 1
            u = x.flip(1) if flip else x
            pos = P[pf + 'pos_embed']
            h = F.linear(u, P[pf + 'proj_in.weight'], P[pf + 'proj_in.bias']) + \
                (pos.flip(0) if flip else pos)
            if self.K:
                h = h + self._cls(b, y, P)
            for l in range(self.L):
                q = f'{pf}attn_blocks.{l}.'
                a = F.layer_norm(h, (W,), P[q + 'attention.norm.weight'],
                                 P[q + 'attention.norm.bias'], 1e-5)
                qkv = F.linear(a, P[q + 'attention.qkv.weight'], P[q + 'attention.qkv.bias'])
                qkv = qkv.view(N, T, 3, H, hd).permute(2, 0, 3, 1, 4).reshape(3, N * H, T, hd)
                s = torch.baddbmm(self.mask, qkv[0], qkv[1].transpose(1, 2), alpha=scale)
                o = torch.bmm(s.softmax(-1), qkv[2])
                o = o.view(N, H, T, hd).transpose(1, 2).reshape(N, T, W)
                h = h + F.linear(o, P[q + 'attention.proj.weight'], P[q + 'attention.proj.bias'])
                a = F.layer_norm(h, (W,), P[q + 'mlp.norm.weight'], P[q + 'mlp.norm.bias'], 1e-5)
                a = F.gelu(F.linear(a, P[q + 'mlp.main.0.weight'], P[q + 'mlp.main.0.bias']))
                h = h + F.linear(a, P[q + 'mlp.main.2.weight'], P[q + 'mlp.main.2.bias'])
            # token t's affine map comes from the head at token t-1; token 0 passes unchanged
            # (the product over all T tokens: a contiguous input keeps it one matrix product)
            o = self._bound(F.linear(h, P[pf + 'proj_out.weight'],
                                     P[pf + 'proj_out.bias'])[:, :-1])
            alpha, mu = o[..., :D], o[..., D:]
            z = torch.cat([u[:, :1], (u[:, 1:] - mu) * torch.exp(-alpha)], 1)
            logdet = logdet - alpha.sum((1, 2)) * (1.0 / (T * D))
            x = z.flip(1) if flip else z
        return x, logdet

    @staticmethod
    def loss(z, logdet):
        return 0.5 * z.pow(2).mean() - logdet.mean()

    # --------------------------------------------------------------- exact inverse
    @torch.inference_mode()
    def reverse(self, z, y, cfg=0.0):
        """Exact inverse with a KV cache: z (N, T, D) tokens -> x (N, T, D); guidance cfg > 0
        runs the conditional and the unconditional branch stacked in one batch."""
        N, T, D, W, H, hd, L = z.shape[0], self.T, self.D, self.W, self.H, self.hd, self.L
        nb = 2 if cfg > 0 else 1
        R = nb * N
        x = z * self.var.sqrt()
        if self.K:
            yy = torch.cat([y, torch.full_like(y, -1)]) if nb == 2 else y
        cache = [torch.empty(3, R, H, T, hd) for _ in range(L)]
        c = self.bound
        for b in reversed(range(self.B)):
            pf = f'blocks.{b}.'
            flip = b % 2 == 1
            u = x.flip(1) if flip else x.clone()
            pos = self.p[pf + 'pos_embed']
            posb = (pos.flip(0) if flip else pos) + self.p[pf + 'proj_in.bias']
            w_in = self.p[pf + 'proj_in.weight'].t()
            cls = self._cls(b, yy).view(nb, N, W) if self.K else torch.zeros(nb, N, W)
            layers = []
            for l in range(L):
                q = f'{pf}attn_blocks.{l}.'
                wqkv = self.p[q + 'attention.qkv.weight'].clone()
                bqkv = self.p[q + 'attention.qkv.bias'].clone()
                wqkv[:W] *= hd ** -0.5
                bqkv[:W] *= hd ** -0.5
                layers.append((self.p[q + 'attention.norm.weight'], self.p[q + 'attention.norm.bias'],
                               bqkv, wqkv.t(), self.p[q + 'attention.proj.weight'].t(),
                               self.p[q + 'attention.proj.bias'],
                               self.p[q + 'mlp.norm.weight'], self.p[q + 'mlp.norm.bias'],
                               self.p[q + 'mlp.main.0.bias'], self.p[q + 'mlp.main.0.weight'].t(),
                               self.p[q + 'mlp.main.2.weight'].t(), self.p[q + 'mlp.main.2.bias']))
            w_out = self.p[pf + 'proj_out.weight'].t()
            b_out = self.p[pf + 'proj_out.bias']
            if c > 0:
                w_out, b_out = w_out * (1.0 / c), b_out * (1.0 / c)
            for i in range(T - 1):
                h = torch.addmm(posb[i], u[:, i], w_in)
                h = (h + cls).view(R, W)
                for l in range(L):
                    g1, b1, bqkv, wqkv, wp, bp, g2, b2, bf1, wf1, wf2, bf2 = layers[l]
                    kv = cache[l]
                    a = F.layer_norm(h, (W,), g1, b1, 1e-5)
                    kv[:, :, :, i].copy_(torch.addmm(bqkv, a, wqkv).view(R, 3, H, hd).transpose(0, 1))
                    att = torch.bmm(kv[0, :, :, i:i + 1].reshape(R * H, 1, hd),
                                    kv[1, :, :, :i + 1].reshape(R * H, i + 1, hd).transpose(1, 2))
                    o = torch.bmm(att.softmax(-1), kv[2, :, :, :i + 1].reshape(R * H, i + 1, hd))
                    h = torch.addmm(h, o.view(R, W), wp).add_(bp)
                    a = F.layer_norm(h, (W,), g2, b2, 1e-5)
                    h = torch.addmm(h, F.gelu(torch.addmm(bf1, a, wf1)), wf2).add_(bf2)
                o = torch.addmm(b_out, h, w_out)
                if c > 0:
                    o = o.tanh_()
                    if nb == 2:
                        o = torch.add(o[:N], o[N:], alpha=-cfg / (1.0 + cfg)).mul_(c * (1.0 + cfg))
                    else:
                        o = o.mul_(c)
                elif nb == 2:
                    o = torch.add(o[:N], o[N:], alpha=-cfg / (1.0 + cfg)).mul_(1.0 + cfg)
                u[:, i + 1].mul_(o[:, :D].exp()).add_(o[:, D:])
            x = u.flip(1) if flip else u
        return x


# ----------------------------------------------------------------------------- optimiser


class Trainer:
    """Gradient-norm clip, AdamW and EMA on the two flat parameter groups, as bf_optim_update."""

    def __init__(self, model, lr=1e-3, min_lr=1e-5, warmup=100, steps=1000, betas=(0.9, 0.95),
                 eps=1e-8, weight_decay=1e-4, clip=1.0, ema_decay=0.999):
        self.m = model
        nd = model.n_decay
        self.params = [model.flat[:nd], model.flat[nd:]]
        self.grads = [model.gflat[:nd], model.gflat[nd:]]
        self.mom = [torch.zeros_like(p) for p in self.params]
        self.vel = [torch.zeros_like(p) for p in self.params]
        self.ema = model.flat.clone()
        self.lr, self.min_lr, self.warmup, self.total = lr, min_lr, warmup, steps
        self.b1, self.b2 = betas
        self.eps, self.wd, self.clip, self.ema_decay = eps, weight_decay, clip, ema_decay
        self.t = 0

    def lr_at(self, step):
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        p = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * p))

    @torch.no_grad()
    def step(self):
        g = self.m.gflat
        gnorm = float(g.norm())
        if self.clip > 0 and gnorm > self.clip:
            g.mul_(self.clip / (gnorm + 1e-6))
        lr = self.lr_at(self.t)
        self.t += 1
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for k, (p, gr, m, v) in enumerate(zip(self.params, self.grads, self.mom, self.vel)):
            m.lerp_(gr, 1 - self.b1)
            v.mul_(self.b2).addcmul_(gr, gr, value=1 - self.b2)
            if k == 0:
                p.mul_(1 - lr * self.wd)
            p.addcdiv_(m, v.sqrt().div_(math.sqrt(bc2)).add_(self.eps), value=-lr / bc1)
        d = min(self.ema_decay, (1.0 + self.t - 1) / (10.0 + self.t - 1))
        self.ema.lerp_(self.m.flat, 1 - d)
        return gnorm


# ----------------------------------------------------------------------------- benchmarks


class Shards:
    """Runs fn(k) for k < n at once, shard 0 on the calling thread and the others on a pool of
    Python threads, each with one intra-op thread (ops release the GIL, so the shards run in
    parallel): a step opens no parallel region per operation, as biflow's sharded step."""

    def __init__(self, n):
        self.n = n
        self.pool = ThreadPoolExecutor(max_workers=n - 1) if n > 1 else None

    @staticmethod
    def _one(fn, k):
        torch.set_num_threads(1)
        return fn(k)

    def run(self, fn):
        futs = [self.pool.submit(self._one, fn, k) for k in range(1, self.n)]
        return [self._one(fn, 0)] + [f.result() for f in futs]


def split(n, k):
    """k near-equal contiguous parts of range(n), as (start, end)."""
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def bench_train(cfg, batch, steps, warmup, threads, shards):
    """shards > 1: the batch split over that many Python threads (one intra-op thread each),
    their gradients summed; shards == 1: every operation parallel over `threads`."""
    m = Flow(cfg, seed=1)
    opt = Trainer(m)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(batch, m.T, m.D, generator=g) * 2 - 1
    y = torch.tensor([i % m.K - (i % 7 == 0) for i in range(batch)]) if m.K else None
    shards = max(1, min(shards, batch))
    parts = split(batch, shards)
    pool = Shards(shards)
    norm_z = 0.5 / (batch * m.T * m.D)

    def work(k):   # this shard's share of the batch loss, backward into its own gradients
        gflat, P = m.shard(k)
        a, b = parts[k]
        gflat.zero_()
        z, logdet = m.forward(x[a:b], y[a:b] if m.K else None, P)
        loss = norm_z * z.pow(2).sum() - logdet.sum() * (1.0 / batch)
        loss.backward()
        return float(loss)

    def step():
        if shards == 1:
            torch.set_num_threads(threads)
            loss = work(0)
        else:
            loss = sum(pool.run(work))
            for k in range(1, shards):
                m.gflat.add_(m.shard(k)[0])
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    times = []
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        t1 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t1)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    torch.set_num_threads(threads)
    fl = train_flops(cfg, batch)
    return {'batch': batch, 'steps': steps, 'shards': shards, 'images_per_s': batch * steps / dt,
            'ms_per_step': 1e3 * dt / steps, 'gflops': fl * steps / dt / 1e9,
            'images_per_s_best_step': batch / min(times), 'gflop_per_step': fl / 1e9,
            'cpu_per_wall': cpu / dt, 'loss_last': loss}


def sample_model(cfg):
    """Random F as biflow's bench sample makes it: non-zero heads, a bound."""
    cfg = dict(cfg)
    if cfg['bound'] == 0:
        cfg['bound'] = 2.0
    m = Flow(cfg, seed=1)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for b in range(m.B):
            m.p[f'blocks.{b}.proj_out.weight'].normal_(0, 0.02, generator=g)
    return m


def bench_sample(m, batch, cfg_w, seconds, n, threads, shards):
    """Whole calls of `batch` images over n images, repeated until `seconds` have passed; a
    call's batch split over `shards` Python threads (one intra-op thread each), or with
    shards == 1 every operation parallel over `threads` (1: a single thread, which at batch 1
    beats two: the products of one decoding step are too small to share)."""
    g = torch.Generator().manual_seed(5)
    z = torch.randn(n, m.T, m.D, generator=g)
    y = torch.tensor([i % m.K for i in range(n)]) if m.K else None
    shards = max(1, min(shards, batch))
    pool = Shards(shards)
    parts = split(batch, shards)

    def call(s):
        if shards == 1:
            torch.set_num_threads(threads)
            return m.reverse(z[s:s + batch], y[s:s + batch] if m.K else None, cfg_w)
        return torch.cat(pool.run(lambda k: m.reverse(
            z[s + parts[k][0]:s + parts[k][1]], y[s + parts[k][0]:s + parts[k][1]] if m.K else None,
            cfg_w)))

    call(0)   # warm-up
    t, images, best, nonfinite = 0.0, 0, float('inf'), 0
    while True:
        for s in range(0, n, batch):
            t1 = time.perf_counter()
            x = call(s)
            d = time.perf_counter() - t1
            t += d
            best = min(best, d / x.shape[0])
            images += x.shape[0]
            nonfinite += int((~torch.isfinite(x)).sum())
        if t >= seconds:
            break
    torch.set_num_threads(threads)
    fl = forward_flops(m.cfg, 1) * (2 if cfg_w > 0 else 1)
    return {'case': 'exact+cfg' if cfg_w > 0 else 'exact', 'batch': batch, 'cfg': cfg_w,
            'shards': shards, 'images_per_s': images / t, 'ms_per_image': 1e3 * t / images,
            'images_per_s_best_call': 1.0 / best, 'gflops': fl * images / t / 1e9,
            'images': images, 'nonfinite': nonfinite}


def blas_core():
    """The OpenBLAS kernels this process runs (torch links the reference BLAS interface)."""
    import ctypes
    try:
        with open('/proc/self/maps') as f:
            libs = sorted({ln.split()[-1] for ln in f if 'openblas' in ln.split()[-1]})
        for p in libs:
            lib = ctypes.CDLL(p)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            return lib.openblas_get_corename().decode(), os.path.basename(p)
    except (OSError, AttributeError, IndexError):
        pass
    return 'unknown', 'unknown'


# ----------------------------------------------------------------------------- --check


def check(flow_path, biflow, n=8):
    sys.path.insert(0, HERE)
    import tarflow_torch as tt
    tensors, meta = tt.st_load(flow_path)
    cfg = {k: int(meta[k]) for k in KEYS if k != 'bound'}
    cfg['bound'] = float(meta.get('bound', 0) or 0)
    m = Flow(cfg)
    m.load(tensors)
    ref, _ = tt.load_safetensors_model(flow_path)
    errs = {}

    def err(a, b):
        return float((a.double() - b.double()).abs().max())

    g = torch.Generator().manual_seed(7)
    imgs = torch.rand(n, cfg['in_channels'], cfg['img_size'], cfg['img_size'], generator=g) * 2 - 1
    y = torch.tensor([i % m.K - (i % 3 == 2) for i in range(n)])
    with torch.no_grad():
        zr, _, ldr = ref(imgs, y)
        z, ld = m.forward(ref.patchify(imgs), y)
    errs['z_vs_tarflow_torch'] = err(z, zr)
    errs['logdet_vs_tarflow_torch'] = err(ld, ldr)
    if biflow:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, 'enc.safetensors')
            subprocess.run([biflow, 'encode', '--flow', flow_path, '--n', str(n), '--out', out],
                           check=True, stdout=subprocess.DEVNULL)
            io, _ = tt.st_load(out)
        x = io['x'].float()
        yb = io['y'].long()
        with torch.no_grad():
            z, ld = m.forward(ref.patchify(x), yb)
        errs['z_vs_biflow_encode'] = err(z, io['z'])
        errs['logdet_vs_biflow_encode'] = err(ld, io['logdet'])
        errs['biflow_encode_max_abs_z'] = float(io['z'].abs().max())
    zt = torch.randn(n, m.T, m.D, generator=g)
    yc = torch.tensor([i % m.K for i in range(n)])
    for w in (0.0, 2.0):
        xs = m.reverse(zt, yc, w)
        with torch.no_grad():
            xr = ref.reverse(zt.clone(), yc, guidance=w, return_tokens=True)
        errs[f'reverse_cfg{w:.0f}_vs_tarflow_torch'] = err(xs, xr)
    xs = m.reverse(zt, yc, 0.0)
    with torch.no_grad():
        zb, _ = m.forward(xs, yc)
    errs['roundtrip_F(Finv(z))_minus_z'] = err(zb, zt)
    return cfg, errs


# ----------------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--config', default='fmnist-small', choices=sorted(CONFIGS))
    ap.add_argument('--threads', type=int, default=2, help='intra-op threads (torch.set_num_threads)')
    ap.add_argument('--shards', type=int, default=None,
                    help='batch shards on as many Python threads (default: --threads); each case is '
                         'also timed unsharded, every operation parallel over --threads')
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--steps', type=int, default=20, help='timed training steps')
    ap.add_argument('--warmup', type=int, default=3, help='untimed training steps first')
    ap.add_argument('--seconds', type=float, default=2.0, help='minimum timed seconds per sampling case')
    ap.add_argument('--cfg', type=float, default=2.0, help='guidance weight of the guided cases')
    ap.add_argument('--sharded-only', action='store_true',
                    help='time batch 64 sharded only (the unsharded way is slow on a busy machine)')
    ap.add_argument('--skip-train', action='store_true')
    ap.add_argument('--skip-sample', action='store_true')
    ap.add_argument('--keep-blas-core', action='store_true',
                    help="leave OpenBLAS's own CPU detection alone (no OPENBLAS_CORETYPE)")
    ap.add_argument('--json-out', default=None)
    ap.add_argument('--check', action='store_true', help='numerical check against the reference instead')
    ap.add_argument('--flow', default=os.path.join(HERE, '..', 'models', 'flow-fmnist.safetensors'))
    ap.add_argument('--biflow', default=None, help='the biflow CLI, for --check against biflow encode')
    args = ap.parse_args()
    if args.shards is None:
        args.shards = args.threads
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    if args.check:
        cfg, errs = check(args.flow, args.biflow)
        print(f'check: {os.path.relpath(args.flow)} {cfg}')
        for k, v in errs.items():
            print(f'  {k:34s} {v:.3e}')
        bad = [k for k, v in errs.items() if not k.startswith('biflow_') and not v <= 1e-4]
        print(json.dumps({'check': errs, 'ok': not bad}))
        return 1 if bad else 0

    cfg = named_config(args.config)
    core, lib = blas_core()
    load = os.getloadavg()
    print(f'bench_torch: config {args.config}, {Flow(cfg).num_params} parameters, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads, fp32')
    summary = {'config': args.config, 'threads': torch.get_num_threads(), 'torch': torch.__version__,
               'blas_core': core, 'openblas_coretype_env': os.environ.get('OPENBLAS_CORETYPE'),
               'loadavg_start': load}
    print(f'  BLAS core {core} ({lib}, OPENBLAS_CORETYPE={os.environ.get("OPENBLAS_CORETYPE")}); '
          f'load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')
    modes = [args.shards] + ([1] if args.shards > 1 and not args.sharded_only else [])
    if not args.skip_train:
        summary['train'] = []
        for sh in modes:
            r = bench_train(cfg, args.batch, args.steps, args.warmup, args.threads, sh)
            how = f'{sh} shards x 1 thread' if sh > 1 else f'1 shard x {args.threads} threads'
            print(f"  training   batch {r['batch']:3d}: {r['images_per_s']:8.1f} images/s "
                  f"{r['ms_per_step']:8.1f} ms/step {r['gflops']:6.1f} GFLOP/s ({how}; "
                  f"{r['gflop_per_step']:.3f} GFLOP/step; best step {r['images_per_s_best_step']:.1f} "
                  f"images/s; cpu/wall {r['cpu_per_wall']:.2f})")
            summary['train'].append(r)
    if not args.skip_sample:
        m = sample_model(cfg)
        res = []
        for w in (0.0, args.cfg):
            for batch in (1, args.batch):
                for sh, th in ([(s, args.threads) for s in modes] if batch > 1 else
                               [(1, args.threads)] + ([(1, 1)] if args.threads > 1 else [])):
                    r = bench_sample(m, batch, w, args.seconds, 8 if batch == 1 else 2 * batch, th, sh)
                    r['threads'] = th
                    how = f'{sh} shards x 1 thread' if sh > 1 else f'1 shard x {th} threads'
                    print(f"  {r['case']:10s} batch {batch:3d}: {r['images_per_s']:8.1f} images/s "
                          f"{r['ms_per_image']:8.3f} ms/image {r['gflops']:6.1f} GFLOP/s ({how}; "
                          f"best call {r['images_per_s_best_call']:.1f} images/s; "
                          f"non-finite {r['nonfinite']})")
                    res.append(r)
        summary['sample'] = res
    # the fastest way of each case, the figure to compare with biflow's
    best = {}
    for r in summary.get('train', []):
        best['train'] = max(best.get('train', r), r, key=lambda q: q['images_per_s'])
    for r in summary.get('sample', []):
        k = f"{r['case']} batch {r['batch']}"
        best[k] = max(best.get(k, r), r, key=lambda q: q['images_per_s'])
    print('  best of each case:')
    for k, r in best.items():
        name = 'training batch %d' % r['batch'] if k == 'train' else k
        print(f"    {name:22s} {r['images_per_s']:8.1f} images/s {r['gflops']:6.1f} GFLOP/s")
    summary['best'] = {k: {'images_per_s': r['images_per_s'], 'gflops': r['gflops'],
                           'shards': r['shards'], 'threads': r.get('threads', args.threads)}
                       for k, r in best.items()}
    summary['loadavg_end'] = os.getloadavg()
    line = json.dumps(summary)
    print(line)
    if args.json_out:
        with open(args.json_out, 'w') as f:
            f.write(line + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
