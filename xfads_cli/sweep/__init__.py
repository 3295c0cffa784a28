"""`xfads sweep`: a hyperparameter search whose trials are ordinary fit runs (docs/cluster.md).

    command.py  `xfads sweep` / `xfads sweep --status` as library functions (cli.py calls them)
    space.py    the search space file (config key -> choices or a distribution), validated strictly
    locks.py    flock helpers: the sweep's ask lock and each worker's liveness lock
    study.py    the Optuna study in SWEEP_DIR/journal.log: open/create, ask, requeue, count, best link
    trial.py    one trial: the sampled config -> run_fit into SWEEP_DIR/trials/NNNN, pruning, outcomes
    worker.py   the worker loop (ask, run, until N trials are finished)
    status.py   the table / JSON / plots of `xfads sweep --status`

Optuna is an optional dependency (`pip install 'xfads[sweep]'`); it is imported inside functions.
"""
