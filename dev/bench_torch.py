#!/usr/bin/python3
"""PyTorch CPU baseline for biflow: training and exact-inverse sampling throughput of the public
TARFlow model (dev/tarflow_torch.py), for comparing against the C implementation.

  /usr/bin/python3 dev/bench_torch.py [--config fmnist-small] [--threads 2] [--batch 64]
      [--warmup 3] [--steps 10] [--sample-reps 1] [--latency-reps 3] [--json-out FILE]

(a) training: AdamW(lr 1e-4, betas (0.9, 0.95), weight_decay 1e-4), one step as the public
    train.py with Gaussian noise: x + 0.05 randn, labels dropped to -1 with p 0.1, loss =
    0.5 mean(z^2) - mean(logdet), backward, optimizer step. fp32 (no autocast on CPU).
    Pseudo-images in [-1, 1] (throughput does not depend on the pixel values).
(b) sampling: Model.reverse with KV cache on N(0,1) tokens, batch --batch, guidance 0 and 2
    (guidance doubles the work: a second, unconditional cache), and batch-1 latency.
The last line printed is a JSON summary. Other processes on the same cores distort the
numbers badly (OpenMP and OpenBLAS threads spin-wait): the script prints the load average and
the process's CPU/wall ratio (about 2 when it has both cores), and best-of-N figures, which
are the least disturbed.
"""
import argparse
import json
import os
import re
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tarflow_torch as tt  # noqa: E402

CONFIGS = dict(tt.NAMED_CONFIGS)
CONFIGS['fmnist-tiny'] = dict(img_size=28, in_channels=1, patch_size=4, channels=64,
                              num_blocks=2, layers_per_block=1, head_dim=32, num_classes=10,
                              bound=0.0)


def blas_summary():
    cfg = torch.__config__.show()
    blas = re.search(r'BLAS_INFO=([^,\n]+)', cfg)
    lapack = re.search(r'LAPACK_INFO=([^,\n]+)', cfg)
    mkl = 'USE_MKL=ON' in cfg or 'Intel(R) Math Kernel Library' in cfg
    mkldnn = re.search(r'USE_MKLDNN=(\w+)', cfg)
    return {'blas': blas.group(1) if blas else 'unknown',
            'lapack': lapack.group(1) if lapack else 'unknown',
            'mkl': mkl, 'mkldnn': mkldnn.group(1) if mkldnn else 'unknown'}


def sync_time():
    return time.perf_counter()


def loaded_blas():
    """Which BLAS/OpenMP libraries this process has mapped, and OpenBLAS's own settings."""
    libs = set()
    try:
        with open('/proc/self/maps') as f:
            for line in f:
                p = line.split()[-1]
                if re.search(r'blas|lapack|gomp|omp5|dnnl|mkl', os.path.basename(p)):
                    libs.add(p)
    except OSError:
        pass
    out = {'libs': sorted(libs)}
    for p in sorted(libs):
        if 'openblas' in os.path.basename(p):
            try:
                import ctypes
                lib = ctypes.CDLL(p)
                lib.openblas_get_config.restype = ctypes.c_char_p
                out['openblas_config'] = lib.openblas_get_config().decode()
                out['openblas_threads'] = int(lib.openblas_get_num_threads())
            except (OSError, AttributeError):
                pass
            break
    return out


def bench_train(model, cfg, batch, warmup, steps, noise_std=0.05, drop_label=0.1):
    opt = torch.optim.AdamW(model.parameters(), betas=(0.9, 0.95), lr=1e-4, weight_decay=1e-4)
    g = torch.Generator().manual_seed(0)
    H, C, K = cfg['img_size'], cfg['in_channels'], cfg['num_classes']
    x_all = torch.rand(batch * 4, C, H, H, generator=g) * 2 - 1
    y_all = torch.randint(0, max(K, 1), (batch * 4,), generator=g)
    model.train()
    losses = []

    def step(it):
        i0 = (it % 4) * batch
        x = x_all[i0:i0 + batch]
        y = y_all[i0:i0 + batch] if K else None
        x = x + noise_std * torch.randn_like(x)
        if K:
            mask = (torch.rand(y.size(0)) < drop_label).int()
            y = (1 - mask) * y - mask
        opt.zero_grad()
        z, outputs, logdets = model(x, y)
        loss = model.get_loss(z, logdets)
        loss.backward()
        opt.step()
        return loss.item()

    for it in range(warmup):
        losses.append(step(it))
    t0, c0 = sync_time(), time.process_time()
    times = []
    for it in range(steps):
        t1 = sync_time()
        losses.append(step(warmup + it))
        times.append(sync_time() - t1)
    dt, cpu = sync_time() - t0, time.process_time() - c0
    best = min(times)
    med = sorted(times)[len(times) // 2]
    return {'images_per_s': batch * steps / dt, 'ms_per_step': 1e3 * dt / steps,
            'images_per_s_median_step': batch / med,
            'images_per_s_best_step': batch / best, 'ms_per_step_best': 1e3 * best,
            'cpu_s_per_wall_s': cpu / dt,
            'steps': steps, 'batch': batch, 'loss_first': losses[0], 'loss_last': losses[-1]}


@torch.no_grad()
def bench_sample(model, cfg, batch, reps, guidance):
    model.eval()
    T = (cfg['img_size'] // cfg['patch_size']) ** 2
    D = cfg['in_channels'] * cfg['patch_size'] ** 2
    K = cfg['num_classes']
    g = torch.Generator().manual_seed(1)
    z = torch.randn(batch, T, D, generator=g)
    y = torch.randint(0, K, (batch,), generator=g) if K else None
    model.reverse(z.clone(), y, guidance=guidance)      # warm-up (allocator, first-call costs)
    times = []
    nonfinite = 0
    for _ in range(reps):
        t0, c0 = sync_time(), time.process_time()
        x = model.reverse(z.clone(), y, guidance=guidance)
        times.append(sync_time() - t0)
        cpu = time.process_time() - c0
        nonfinite += int((~torch.isfinite(x)).sum())
    best = min(times)
    mean = sum(times) / len(times)
    return {'batch': batch, 'guidance': guidance, 'reps': reps,
            'images_per_s': batch / mean, 'ms_per_image': 1e3 * mean / batch,
            'images_per_s_best': batch / best,
            'ms_per_batch_mean': 1e3 * mean, 'ms_per_batch_best': 1e3 * best,
            'cpu_s_per_wall_s_last': cpu / times[-1],
            'nonfinite_values': nonfinite}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--config', default='fmnist-small', choices=sorted(CONFIGS))
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--warmup', type=int, default=3)
    ap.add_argument('--steps', type=int, default=10, help='timed training steps')
    ap.add_argument('--sample-reps', type=int, default=2, help='timed reverse() calls per batch setting')
    ap.add_argument('--latency-reps', type=int, default=5, help='timed batch-1 reverse() calls')
    ap.add_argument('--skip-train', action='store_true')
    ap.add_argument('--skip-sample', action='store_true')
    ap.add_argument('--json-out', default=None)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = CONFIGS[args.config]
    info = torch.__config__.parallel_info()
    print('torch', torch.__version__)
    for line in info.splitlines():
        if any(s in line for s in ('ATen/Parallel', 'at::get_num_threads', 'at::get_num_interop',
                                   'OpenMP', 'MKL', 'std::thread', 'Parallel backend')):
            print('  ' + line.strip())
    blas = blas_summary()
    torch.mm(torch.randn(64, 64), torch.randn(64, 64))    # make sure BLAS is loaded
    blas.update(loaded_blas())
    print('  BLAS:', blas)
    print('  load average at start:', os.getloadavg(), '(other processes share these cores)')
    print('  OPENBLAS env:', {k: v for k, v in os.environ.items() if k.startswith('OPENBLAS')})

    model = tt.build_model(cfg)
    nparams = sum(p.numel() for p in model.parameters())
    print(f'config {args.config}: {cfg}; parameters {nparams} ({nparams / 1e6:.3f} M)')

    summary = {'config': args.config, 'params': nparams, 'threads': torch.get_num_threads(),
               'torch': torch.__version__, 'blas': blas.get('openblas_config', blas['blas']),
               'openblas_threads': blas.get('openblas_threads'), 'mkldnn': blas['mkldnn'],
               'loadavg_start': os.getloadavg()}
    if not args.skip_train:
        r = bench_train(model, cfg, args.batch, args.warmup, args.steps)
        print(f"train  batch {r['batch']}: {r['images_per_s']:.1f} images/s "
              f"({r['ms_per_step']:.1f} ms/step over {r['steps']} steps; median step "
              f"{r['images_per_s_median_step']:.1f}, best step "
              f"{r['images_per_s_best_step']:.1f} images/s; cpu/wall {r['cpu_s_per_wall_s']:.2f}; "
              f"loss {r['loss_first']:.4f} -> {r['loss_last']:.4f})")
        summary['train'] = r
    else:
        # give proj_out small non-zero weights so sampling does real work
        with torch.no_grad():
            for b in model.blocks:
                b.proj_out.weight.normal_(0, 0.01)
    if not args.skip_sample:
        res = []
        for batch, g, reps in ((args.batch, 0.0, args.sample_reps), (args.batch, 2.0, args.sample_reps),
                               (1, 0.0, args.latency_reps), (1, 2.0, args.latency_reps)):
            r = bench_sample(model, cfg, batch, reps, g)
            print(f"sample batch {batch:3d} cfg {g:.0f}: {r['images_per_s']:.2f} images/s "
                  f"(best {r['images_per_s_best']:.2f}), "
                  f"{r['ms_per_image']:.2f} ms/image ({r['ms_per_batch_mean']:.1f} ms/batch, "
                  f"non-finite {r['nonfinite_values']})")
            res.append(r)
        summary['sample'] = res
    summary['loadavg_end'] = os.getloadavg()
    line = json.dumps(summary)
    print(line)
    if args.json_out:
        with open(args.json_out, 'w') as f:
            f.write(line + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
