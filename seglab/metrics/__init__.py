"""Metrics accumulated over a whole evaluation set, never averaged per batch.

Every metric object has one interface (the task protocol's metric contract, seglab/task.py):
`update(decisions, targets)` per batch; `reduce()` combines the processes' states under DDP,
by summing them (these: a confusion matrix, Dice sums) or by gathering them (a list of
per-image records, as COCO mAP needs); `state()` (JSON) and `add_state(state)` pool a
shard's or a held-out fold's state (k-fold out-of-fold scores) without recomputing
anything; `compute(class_names)`; `reset()`, `to(device)`.

    confusion.py  one confusion matrix; segmentation scores (mIoU, accuracies, fwIoU)
    f1.py         classification scores from the same matrix (macro F1, facets)
    dice.py       the multi-label Dice per image and class
    table.py      the per-class console table they share
"""
