"""The benchmarked configurations: the paper's tasks (reference section 4.0), batch 128."""

# name: (input_size, output_size, num_queries, memory_size, relation_size, timesteps,
#        gated_write, (carry, read, transfer), projector_hidden_units)
CONFIGS = {
    "associative_retrieval": (100, 10, 2, 96, 96, 51, True, ("learned",) * 3, None),
    "copy": (34, 32, 8, 96, 96, 42, True, ("learned",) * 3, None),
    "nth_farthest": (40, 8, 8, 128, 96, 8, False, ("learned",) * 3, None),
    "rar": (34, 32, 16, 72, 72, 25, True, (0.0, 0.0, "learned"), None),
    "babi": (64, 64, 20, 90, 96, 70, True, (1.0, "learned", 0.0), 80),
}

# The authors' PyTorch cell on an NVIDIA H200 (torch 2.11, float32, TF32 off), ms per iteration
# (forward over T steps, backward, Adam step), from shared/docs/performance_notes.md.
AUTHORS_H200_MS = {
    "associative_retrieval": 208,
    "copy": 173,
    "nth_farthest": 32,
    "rar": 107,
    "babi": 440,
}


def stm_arguments(name):
    """`keras_stm.STM` arguments of configuration `name` (head on, as in the authors' class)."""
    d_in, d_out, nq, d, r, _, gated, (carry, read, transfer), hidden = CONFIGS[name]
    return dict(
        num_queries=nq,
        memory_size=d,
        relation_size=r,
        readout_size=64,
        head_units=d_out,
        head_hidden_units=128,
        gated_write=gated,
        relational_carry=carry,
        relational_read=read,
        relational_transfer=transfer,
        projector_hidden_units=hidden,
    )


# How a benchmark waits for the device (`--sync`): "iteration" synchronises before each clock
# read (median of the timed iterations; the protocol of docs/performance.md); "end" runs the
# timed iterations back to back and synchronises once (pipelined: the host may run ahead of
# the device, as in a training loop that does not fetch the loss every step).
SYNC_MODES = ("iteration", "end")
SYNC_HELP = (
    "iteration: synchronise around each timed iteration (median); end: time the "
    "iterations back to back, one synchronisation at the end (pipelined throughput)."
)
