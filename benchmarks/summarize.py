"""Turn benchmark JSON lines into the markdown tables of docs/performance.md.

Each row is a ratio against the baseline measured in the same run (the file's
`official_style_torch` rows) and against the authors' published H200 figures.

Usage: python benchmarks/summarize.py docs/benchmarks/h200_run2.jsonl [more.jsonl ...]
       python benchmarks/summarize.py --before-after runs/ba/fit_before_after.jsonl [more ...]

`--before-after` pairs the rows labelled `code_version` before and after
(`run_before_after.sh`) of each backend, configuration and precision, from all the files given:
ms before, ms after and their ratio (below 1: the current code is faster); then, where the
files hold `--train-step stateless` rows of the current code (`run_before_after.sh`'s
STATELESS=1), each `fit` row of the current code against the stateless step of the same
backend, configuration and precision (issue 18: `fit` within 1.5x of the stateless step).
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
    if row.get("train_step") == "fit":
        parts.append("Model.fit")
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
        if r.get("sync") in ("end", "fit"):
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


VERSIONS = ("before", "after")


def _ms_cell(row):
    """A row's ms for a table cell: "missing" without a row, its error where it has no ms."""
    if row is None:
        return "missing"
    if "ms" not in row:
        return f"error: {row.get('error', '')[:60]}"
    return f"{row['ms']:.2f}"


def before_after_table(rows):
    """The rows of `code_version` before and after side by side, per backend, configuration,
    precision and training step (the last row of each wins where a run was repeated)."""
    cells = {}
    for r in rows:
        if r.get("code_version") in VERSIONS and r.get("train_step") != "stateless":
            key = (r.get("backend"), r.get("config"), r.get("precision"), r.get("train_step"))
            cells.setdefault(key, {})[r["code_version"]] = r
    lines = [
        "### Before and after",
        "",
        "| backend | config | T | precision | step | ms before | ms after | after / before "
        "| compile s before / after | library before / after | device |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def compile_s(row):
        return f"{row['compile_s']:.0f}" if row and "compile_s" in row else "-"

    def library(row):  # the keras_stm commit that ran (a short hash; + when uncommitted)
        commit = (row or {}).get("keras_stm_commit") or "?"
        return commit[:7] + ("+" if "+" in commit else "")

    for (backend, config, precision, step), pair in sorted(cells.items(), key=lambda c: str(c[0])):
        before, after = pair.get("before"), pair.get("after")
        both = before and after and "ms" in before and "ms" in after
        ratio = f"{after['ms'] / before['ms']:.2f}" if both else "n/a"
        devices = sorted({r["device"] for r in pair.values() if r.get("device")})
        steps = CONFIGS[config][5] if config in CONFIGS else ""
        lines.append(
            f"| {backend} | {config} | {steps} | {precision} | {step} | {_ms_cell(before)} | "
            f"{_ms_cell(after)} | {ratio} | {compile_s(before)} / {compile_s(after)} | "
            f"{library(before)} / {library(after)} | {', '.join(devices) or 'n/a'} |"
        )
    return "\n".join(lines) + "\n"


def fit_vs_stateless_table(rows):
    """`fit` rows of the current code (`code_version` after) against its stateless-step rows of
    the same backend, configuration and precision; empty where the files hold no stateless row."""
    cells = {}
    for r in rows:
        if r.get("code_version") == "after" and r.get("train_step") in ("fit", "stateless"):
            key = (r.get("backend"), r.get("config"), r.get("precision"))
            cells.setdefault(key, {})[r["train_step"]] = r
    if not any("stateless" in pair for pair in cells.values()):
        return ""
    lines = [
        "### Through fit against the stateless step (same card, same run)",
        "",
        "| backend | config | T | precision | ms fit | ms stateless | fit / stateless | device |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (backend, config, precision), pair in sorted(cells.items(), key=lambda c: str(c[0])):
        fit, stateless = pair.get("fit"), pair.get("stateless")
        if stateless is None:
            continue
        both = fit and "ms" in fit and "ms" in stateless
        ratio = f"{fit['ms'] / stateless['ms']:.2f}" if both else "n/a"
        devices = sorted({r["device"] for r in pair.values() if r.get("device")})
        steps = CONFIGS[config][5] if config in CONFIGS else ""
        lines.append(
            f"| {backend} | {config} | {steps} | {precision} | {_ms_cell(fit)} | "
            f"{_ms_cell(stateless)} | {ratio} | {', '.join(devices) or 'n/a'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    paths = list(argv if argv is not None else sys.argv[1:])
    before_after = paths[:1] == ["--before-after"]
    paths = paths[1:] if before_after else paths
    if not paths:
        raise SystemExit("usage: summarize.py [--before-after] RESULTS.jsonl [...]")
    for path in paths:
        if not os.path.exists(path):
            raise SystemExit(f"no such file: {path}")
    if before_after:
        rows = [row for path in paths for row in load(path)]
        print(before_after_table(rows))
        extra = fit_vs_stateless_table(rows)
        if extra:
            print(extra)
        return
    for path in paths:
        print(table(load(path), os.path.basename(path)))


if __name__ == "__main__":
    main()
