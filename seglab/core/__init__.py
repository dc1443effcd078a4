"""The engine: knows no particular task, asks the task (`seglab/task.py`) everything.

    module.py       the one LightningModule: normalise, forward, steps, validation records
    checkpoints.py  atomic, weights-only checkpoints; their checks; exact resume
    loaders.py      training and evaluation loaders: seeded, resumable, sharded under DDP
    training.py     preflight, trainer, callbacks, loggers, `train`
    run.py          a trained run loaded once: config, labels, module, thresholds
    runlock.py      one process per run folder (an O_EXCL lock file; stale locks taken over)
    sliding.py      sliding-window prediction (validation and inference)
"""
