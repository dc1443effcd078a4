"""Image classification (`task: classification`, competition C).

    task.py    the task: labels, timm classifier, CE/focal, mixup, consistency training, macro F1
    models.py  timm backbone + linear or ArcFace head (CLASSIFIERS registry)
    uda.py     consistency loss on unlabelled images and their two-view dataset
    snapmix.py SnapMix: box mixing with labels weighted by class activation maps
"""
