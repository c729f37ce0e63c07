#!/usr/bin/env python3
"""The scaling estimate of docs/SCALING.md: the time per step of biflow's gradient reduction
over N nodes (src/core/dist.c: a pipelined chain through the ranks, then a broadcast) from the
bytes reduced and a network's bandwidth and latency, and the efficiency this leaves.

    python3 dev/scaling.py            # prints the Markdown tables of docs/SCALING.md
"""
import math

PIECE = 256 * 1024  # bytes per message of the chain (CHAIN_PIECE in src/core/dist.c)

# name, parameters (floats reduced per step), images/s of one node training alone
# (the project's 2-vCPU machine, docs/RESULTS-*.md and models/README.md)
MODELS = [
    ("F (fmnist-small)", 1_641_600, 314.7),
    ("G (the shipped reverse model)", 1_827_280, 6000 * 64 / (62 * 60)),
    ("feature network", 467_818, 670.0),
]
# Gb/s, latency per message (s): Ethernet with TCP for 10 and 25, RDMA for 100
NETWORKS = [(10, 25e-6), (25, 25e-6), (100, 3e-6)]
NODES = [2, 8, 64]
FAST_NODE = 16  # a 32-core node, assumed 16x the 2-vCPU machine (linear in cores)


def t_reduce(nbytes, nodes, gbps, alpha):
    """Seconds per step: the chain (every link carries the gradient once, pipelined in pieces:
    the pipeline fills in nodes - 1 pieces), the broadcast from the last rank (scatter +
    allgather, as MPI implementations do for large messages: twice the bytes), and the step's
    four small collectives (three agreements of the training loop and the shard losses' gather,
    log2(nodes) rounds of latency each)."""
    bw = gbps * 1e9 / 8
    rounds = math.ceil(math.log2(nodes))
    chain = nbytes / bw + (nodes - 1) * (alpha + PIECE / bw)
    bcast = 2 * (nodes - 1) / nodes * nbytes / bw + rounds * alpha
    return chain + bcast + 4 * rounds * alpha


def t_ring(nbytes, nodes, gbps, alpha):
    """A ring allreduce for comparison (what MPI_Allreduce does with large messages; its sum's
    association depends on the number of nodes, so it is not reproducible across them)."""
    bw = gbps * 1e9 / 8
    return 2 * (nodes - 1) / nodes * nbytes / bw + 2 * (nodes - 1) * alpha


def main():
    for name, params, ips in MODELS:
        nbytes = 4 * params
        print(f"\n**{name}**: {params:,} parameters, {nbytes / 1e6:.2f} MB reduced per step; "
              f"one node trains {ips:.0f} images/s\n")
        print("| nodes | network | reduction ms/step | efficiency at 64 images/node "
              "| global batch for 90% (per node) | the same, 32-core nodes | ring allreduce ms |")
        print("|---|---|---|---|---|---|---|")
        for n in NODES:
            for gbps, alpha in NETWORKS:
                t = t_reduce(nbytes, n, gbps, alpha)
                comp = 64 / ips
                eff = comp / (comp + t)
                per_node = math.ceil(9 * t * ips)  # comp >= 9 t: 90%
                fast = math.ceil(9 * t * ips * FAST_NODE)
                print(f"| {n} | {gbps} Gb/s | {1e3 * t:.1f} | {100 * eff:.0f}% "
                      f"| {n * per_node:,} ({per_node}) | {n * fast:,} ({fast}) "
                      f"| {1e3 * t_ring(nbytes, n, gbps, alpha):.1f} |")


if __name__ == "__main__":
    main()
