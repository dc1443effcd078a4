"""Pictures of where each class fails, drawn after every validation and on demand.

    figures.py      overlays, panels, grids, confusion matrix, per-class bars, curves; files and loggers
    epoch_figures.py  what every validation callback shares: when it draws, fixed samples, where files go
    class_maps.py   the class-map validation callback (samples, worst images per class)
    binary_masks.py the multi-label validation callback (each class's TP/FP/FN, worst images, areas)
    gallery.py      the classification callback (most confident mistakes per class)
    predictions.py  `seglab viz pred`

Everything renders through matplotlib's Agg canvas into uint8 RGB arrays; torch and
Lightning are imported only where needed, so `report`, `runs` and `viz gt` draw fast.
"""
