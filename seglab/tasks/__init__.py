"""The tasks: one module (or package) each, registered in `seglab.task.TASKS`.

    segmentation.py    what the two segmentation tasks share
    multiclass.py      one class per pixel (competition A)
    multilabel.py      overlapping classes, C x H x W masks (competition B)
    classification/    one class per image (competition C)
"""

from seglab.task import TASKS, Task, get_task
from seglab.tasks import multiclass, multilabel  # noqa: F401  (register)
from seglab.tasks.classification import task as _classification  # noqa: F401  (registers)

__all__ = ["TASKS", "Task", "get_task"]
