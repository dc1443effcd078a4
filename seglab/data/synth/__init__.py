"""The built-in example data, one layout per competition (`seglab data synth`):
coco.py (A: COCO shapes), polygons.py (B: hand-bone polygon layout), maskstatus.py (C)."""
