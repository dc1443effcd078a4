"""Image classification on the seglab infrastructure (`task: classification`, competition C).

    config.py      the `data.classification` and `classification` config sections
    maskstatus.py  the 18-class mask x gender x age encoding and the person-folder names
    data.py        imagefolder / csv / maskstatus readers, person-level folds, datasets, sampler
    models.py      timm backbone + linear or ArcFace head (CLASSIFIERS registry)
    uda.py         consistency loss on unlabelled images
    metrics.py     macro F1, accuracy, per-class F1 from one confusion matrix
    training.py    the LightningModule and `train`
    inference.py   TTA, ensembles, evaluate, predict
    submission.py  info.csv, id,label, probabilities, pseudo-labels (WRITERS registry)
    viz.py         misclassified-examples gallery, confusion matrix, per-class F1 after validation
    synth.py       built-in example data in the mask-status layout
"""
