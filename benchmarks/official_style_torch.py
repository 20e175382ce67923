"""Baseline: the authors' formulation of the STM cell, re-written here in plain PyTorch.

This reproduces how the authors' `baselines/sam/stm_basic.py` computes (reference sections 2-3):
a Python loop over time calling the cell once per step, the read-out and output head computed at
every step, and Outer Product Attention evaluated by materialising the (B, nq, nkv, d, d) tensor
of all outer products and summing it. It is written from the reference specification, not copied,
and exists so that every benchmark run measures its own baseline on the same machine.

Usage: python benchmarks/official_style_torch.py --configs copy,babi [--device cuda] [--sync end]
"""

import argparse
import json
import math
import time

import torch
from configs import CONFIGS
from configs import SYNC_HELP
from configs import SYNC_MODES
from torch import nn


class OfficialStyleSTM(nn.Module):
    def __init__(self, d_in, d_out, nq, d, r, gated, alphas, hidden, a=64, m=128):
        super().__init__()
        self.nq, self.d, self.gated = nq, d, gated
        self.alphas = [nn.Parameter(torch.zeros(1)) if v == "learned" else float(v) for v in alphas]
        for i, v in enumerate(self.alphas):
            if isinstance(v, nn.Parameter):
                self.register_parameter(f"alpha{i + 1}0", v)

        def projector(out):
            if hidden is None:
                return nn.Linear(d_in, out)
            return nn.Sequential(
                nn.Linear(d_in, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, out)
            )

        self.f1, self.f3, self.f2 = projector(d), projector(d), projector(nq)
        self.input_gate = nn.Linear(d, 2 * d)
        self.memory_gate = nn.Linear(d, 2 * d)
        self.forget_bias = nn.Parameter(torch.tensor(1.0))
        self.input_bias = nn.Parameter(torch.tensor(0.0))
        self.qkv = nn.Linear(d, 3 * nq)
        self.qkv_norm = nn.LayerNorm([d, 3 * nq])
        self.g1 = nn.Linear(nq * d, d)
        self.g2 = nn.Linear(d * d, r)
        self.g3 = nn.Linear(nq * r, a)
        self.head = nn.Sequential(
            nn.Linear(a, m), nn.ReLU(), nn.Linear(m, m), nn.ReLU(), nn.Linear(m, d_out)
        )
        self.mi0 = nn.Parameter(
            torch.empty(d, d).uniform_(-1 / math.sqrt(2 * d), 1 / math.sqrt(2 * d))
        )
        lim = 1 / math.sqrt(2 * d + nq)
        self.mr0 = nn.Parameter(torch.empty(nq, d, d).uniform_(-lim, lim))

    def opa_materialised(self, q, k, v):
        # (B, nq, 1, d, 1) * (B, 1, nkv, d, 1) -> tanh -> * (B, 1, nkv, 1, d) -> sum over nkv
        scores = torch.tanh(q[:, :, None, :, None] * k[:, None, :, :, None])
        return (scores * v[:, None, :, None, :]).sum(2)

    def sam(self, s):
        p = self.qkv_norm(self.qkv(s)).transpose(1, 2)
        nq = self.nq
        return self.opa_materialised(p[:, :nq], p[:, nq : 2 * nq], p[:, 2 * nq :])

    def step(self, x, mi, mr):
        a1, a2, a3 = self.alphas
        u, w, s = self.f1(x), self.f3(x), self.f2(x)
        item = u[:, :, None] * u[:, None, :]
        gates = self.input_gate(u)[:, None, :] + self.memory_gate(torch.tanh(mi))
        i_gate = torch.sigmoid(gates[..., : self.d] + self.input_bias)
        f_gate = torch.sigmoid(gates[..., self.d :] + self.forget_bias)
        mi = i_gate * torch.tanh(item) + f_gate * mi if self.gated else mi + item
        pi = torch.softmax(s, -1)
        v = torch.einsum("bn,bp,bnpc->bc", pi, w, mr)
        r0 = self.sam(mi + a2 * v[:, :, None] * w[:, None, :])
        b = x.shape[0]
        transfer = self.g1(r0.permute(0, 3, 1, 2).reshape(b, self.d, -1))
        mi = mi + a3 * transfer
        mr = a1 * mr + r0
        o = self.g3(self.g2(mr.reshape(b, self.nq, -1)).reshape(b, -1))
        return self.head(o), mi, mr

    def forward(self, xs):
        b = xs.shape[1]
        mi = self.mi0.expand(b, -1, -1)
        mr = self.mr0.expand(b, -1, -1, -1)
        for t in range(xs.shape[0]):
            y, mi, mr = self.step(xs[t], mi, mr)
        return y


def time_config(name, device, batch=128, repeats=10, warmup=3, sync="iteration"):
    d_in, d_out, nq, d, r, steps, gated, alphas, hidden = CONFIGS[name]
    torch.manual_seed(0)
    model = OfficialStyleSTM(d_in, d_out, nq, d, r, gated, alphas, hidden).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xs = torch.randn(steps, batch, d_in, device=device)
    target = torch.randn(batch, d_out, device=device)

    def iteration():
        opt.zero_grad(set_to_none=True)
        loss = ((model(xs) - target) ** 2).mean()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        iteration()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    if sync == "end":  # pipelined: `repeats` iterations back to back, one synchronisation
        start = time.perf_counter()
        for _ in range(repeats):
            iteration()
        if device == "cuda":
            torch.cuda.synchronize()
        times = [(time.perf_counter() - start) / repeats]
    for _ in range(repeats if sync == "iteration" else 0):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        iteration()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {
        "impl": "official_style_torch",
        "config": name,
        "ms": 1000 * times[len(times) // 2],
        "peak_gib": peak,
        "timesteps": steps,
        "batch": batch,
        "device": device,
        "sync": sync,
        "precision": "float32 (TF32 off)" if device == "cuda" else "float32",
        "torch": torch.__version__,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--sync", default="iteration", choices=SYNC_MODES, help=SYNC_HELP)
    parser.add_argument("--output", default=None, help="Append JSON lines here.")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    for name in args.configs.split(","):
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {sorted(CONFIGS)}")
        result = time_config(name, args.device, args.batch, args.repeats, sync=args.sync)
        line = json.dumps(result)
        print(line, flush=True)
        if args.output:
            with open(args.output, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
