"""seglab: a config-driven experiment lab for segmentation and classification."""

__version__ = "0.1.0"

# The tasks register themselves in seglab.task.TASKS; their modules load no torch.
from seglab import tasks  # noqa: E402,F401
