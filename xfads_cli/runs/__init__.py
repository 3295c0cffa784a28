"""The library layer between the model and the commands: a run (a checkpoint's model rebuilt from it
alone), a recording bound to it, inference block by block, the run directory, and the one path every
command that applies a run to a recording follows.

    run.py        Run, load_run: the model and config of a checkpoint (--set overrides in one parse)
    binding.py    a recording checked against its session in the run; the model serving that session
    inference.py  posterior and forecast arrays block by block (iter_smooth, iter_forecast, iter_recording)
    pipeline.py   open_input -> stream -> finish: what smooth and forecast share
    rundir.py     RUN_DIR as training writes it (checkpoints, metrics.csv, config, summary)
    checkpoint.py the typed Checkpoint every command writes and reads, and the migrations of old ones
    decoder.py    causal decoding one bin at a time (xfads stream)

    run = load_run("runs/lorenz")
    data = load_data_for_run("x.nwb", run)
    model = session_model(run, data)
"""

from xfads_cli.runs.binding import (
    as_tensor,
    bound_sessions,
    check_same_recording,
    index_in_run,
    load_data_for_run,
    model_inputs,
    model_spec,
    read_data_for_run,
    read_recording_for_run,
    recording_model,
    session_model,
    spec_in_run,
)
from xfads_cli.runs.run import Run, load_run, require_meta, run_inputs

__all__ = [
    "Run",
    "as_tensor",
    "bound_sessions",
    "check_same_recording",
    "index_in_run",
    "load_data_for_run",
    "load_run",
    "model_inputs",
    "model_spec",
    "read_data_for_run",
    "read_recording_for_run",
    "recording_model",
    "require_meta",
    "run_inputs",
    "session_model",
    "spec_in_run",
]
