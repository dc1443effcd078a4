"""Pictures of where each class fails, drawn after every validation and on demand.

    figures.py      overlays, panels, grids, confusion matrix, per-class bars, curves; files and loggers
    class_maps.py   the class-map validation callback (samples, worst images per class)
    gallery.py      the classification callback (most confident mistakes per class)

Everything renders through matplotlib's Agg canvas into uint8 RGB arrays; torch and
Lightning are imported only where needed, so `report`, `runs` and `viz gt` draw fast.
"""
