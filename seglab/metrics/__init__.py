"""Metrics accumulated over a whole evaluation set, on the device, summed over processes.

    confusion.py  one confusion matrix; segmentation scores (mIoU, accuracies, fwIoU)
    f1.py         classification scores from the same matrix (macro F1, facets)
    dice.py       the multi-label Dice per image and class
    table.py      the per-class console table they share
"""
