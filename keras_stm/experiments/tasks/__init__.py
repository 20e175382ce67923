"""Task data pipelines, one module per task (import the submodule you need).

`associative_retrieval`, `copy`, `priority_sort`, `rar`, `nth_farthest` (synthetic tasks),
`geometry` (convex hull and TSP, Pointer Networks file format), `graphs` (shortest path and
minimum spanning tree), `babi` (bAbI QA), `atari` and `advantages` (RL; `atari` needs
gymnasium and ale-py), `metrics` (bit error per sequence), `base` (the seeded `TaskDataset`).
"""
