"""Turn benchmark JSON lines into the markdown tables of docs/performance.md.

Each row is a ratio against the baseline measured in the same run (the file's
`official_style_torch` rows) and against the authors' published H200 figures.

Usage: python benchmarks/summarize.py docs/benchmarks/h200_run2.jsonl [more.jsonl ...]
"""

import json
import os
import sys

from configs import AUTHORS_H200_MS
from configs import CONFIGS


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def label(row):
    """The implementation and the options that changed how it ran."""
    parts = [row["impl"]]
    if row.get("unroll"):
        parts.append("unroll")
    if row.get("jit_compile") is True:
        parts.append("jit_compile")
    if row.get("torch_compile_mode"):
        parts.append(row["torch_compile_mode"])
    if row.get("xla_flags"):  # the concurrent mode runs independent kernels side by side
        concurrent = "command_buffer_scheduling_mode=CONCURRENT" in row["xla_flags"]
        parts.append("XLA command buffers" + (", concurrent" if concurrent else ""))
        if "command_buffer_unroll_loops=true" in row["xla_flags"]:
            parts.append("loops unrolled in the graphs")
    if row.get("relational_loop_form") in ("dense", "low_rank", "factored"):
        parts.append(row["relational_loop_form"].replace("_", "-") + " loop")
    block = row.get("low_rank_block_size")
    python_loop = row.get("unroll") or row.get("backend") == "torch"
    if (
        block
        and row.get("relational_loop_form") == "low_rank"
        and python_loop
        and not row.get("hand_written_backward")
    ):  # the blocks of low_rank_indexed_step
        parts.append(
            "one block" if block >= row.get("timesteps", block + 1) else f"blocks of {block}"
        )
    if row.get("train_step") == "stateless":
        parts.append("stateless jit step")
    if row.get("sync") == "end":
        parts.append("pipelined")
    if row.get("hand_written_backward"):
        parts.append("hand-written backward")
    if row.get("code_version"):  # rows that compare versions of the code in one run
        parts.append(f"code: {row['code_version']}")
    return ", ".join(parts)


def table(rows, title):
    # A row's baseline is the same run's baseline row of its config, timed the same way (`sync`).
    baseline = {
        (r["config"], r.get("sync", "iteration")): r
        for r in rows
        if r.get("impl") == "official_style_torch" and "ms" in r
    }
    lines = [
        f"### {title}",
        "",
        "| implementation | backend | precision | config | T | ms / iteration | peak GiB | "
        "vs same-run baseline | vs authors' H200 figure |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "ms" not in r:
            lines.append(
                f"| {r.get('impl')} | | {r.get('precision')} | {r.get('config')} | | error: "
                f"{r.get('error', '')[:80]} | | | |"
            )
            continue
        base = baseline.get((r["config"], r.get("sync", "iteration")))
        ratio = f"{base['ms'] / r['ms']:.1f}x" if base else "n/a"
        if r.get("impl") == "official_style_torch":
            ratio = "1.0x (baseline)"
        authors = AUTHORS_H200_MS.get(r["config"])
        vs_authors = f"{authors / r['ms']:.1f}x" if authors else "n/a"
        if r.get("device") == "cpu" or r.get("batch", 128) != 128:
            vs_authors = "n/a (their figure: H200, batch 128)"
        if r.get("sync") == "end":
            vs_authors = "n/a (pipelined)"
        peak = f"{r['peak_gib']:.1f}" if r.get("peak_gib") else "n/a"
        if r.get("torch_compile_mode") in CUDA_GRAPH_MODES:
            peak = "n/a"  # the CUDA-graph pool is allocated before the peak is reset
        backend = r.get("backend", "torch")
        lines.append(
            f"| {label(r)} | {backend} | {r.get('precision')} | {r['config']} | "
            f"{CONFIGS[r['config']][5]} | {r['ms']:.1f} | {peak} | {ratio} | {vs_authors} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    paths = argv if argv is not None else sys.argv[1:]
    if not paths:
        raise SystemExit("usage: summarize.py RESULTS.jsonl [...]")
    for path in paths:
        if not os.path.exists(path):
            raise SystemExit(f"no such file: {path}")
        print(table(load(path), os.path.basename(path)))


if __name__ == "__main__":
    main()
