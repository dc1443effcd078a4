"""seglab: a config-driven experiment lab for segmentation and classification."""

__version__ = "0.1.0"
