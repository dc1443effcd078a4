"""The layout keeps its promises: the config schema loads no torch, the engine never asks
which task it runs (tasks answer), the schema's names match the registries, and no module
of seglab imports itself back through others."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASK_NAME = r"""["'](multiclass|multilabel|classification)["']"""


def run_python(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_config_schema_and_the_help_load_no_training_stack():
    out = run_python(
        "import sys, seglab.config as c\n"
        "cfg = c.load_config('configs/demo_multilabel.yaml')\n"
        "from seglab.cli import build_parser\n"
        "build_parser().format_help()\n"
        "from seglab.config.reference import markdown_reference\n"
        "assert '| `data.labelmap.mask_dir` |' in markdown_reference()\n"
        "print(cfg.loss[0].name, cfg.eval.monitor, sorted(m for m in ('torch', 'lightning', 'timm', 'segmentation_models_pytorch') if m in sys.modules))"
    )
    assert out.split() == ["bce_dice", "dice", "[]"]


def test_no_module_outside_the_task_package_compares_a_task_name():
    comparison = re.compile(rf"(==|!=|\bin)\s*\(?{TASK_NAME}|{TASK_NAME}\s*(==|!=)")
    offenders = []
    for path in (ROOT / "seglab").rglob("*.py"):
        if "tasks" in path.relative_to(ROOT / "seglab").parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if comparison.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []


# Where a target's form may be looked at: the kinds own it, tasks and sources produce it; a
# model's or an optimiser's tensors are weights, whose rank says nothing about a task.
FORM_OWNERS = ("kinds", "tasks", "data/sources", "models", "optim.py")
KIND_NAMES = ("class_map", "binary_masks")  # "class" too, but only as the value of a `.target`


def _rank(node) -> bool:
    """`x.ndim`, `x.dim()` or `len(x.shape)`."""
    if isinstance(node, ast.Attribute):
        return node.attr == "ndim"
    if isinstance(node, ast.Call):
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr == "dim" and not node.args:
            return True
        return (isinstance(f, ast.Name) and f.id == "len" and len(node.args) == 1
                and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "shape")
    return False


def _kind_name(node) -> bool:
    """`something.target` or a kind's name, alone or in a tuple/list/set."""
    if isinstance(node, ast.Attribute) and node.attr == "target":
        return True
    if isinstance(node, ast.Constant):
        return node.value in KIND_NAMES
    return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(_kind_name(e) for e in node.elts)


def form_checks(tree) -> list[tuple[int, str]]:
    """(line, what) of every comparison of a rank (with a number or another rank) and of a target kind."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        if any(_rank(o) for o in operands):
            found.append((node.lineno, "rank compared"))
        elif any(_kind_name(o) for o in operands):
            found.append((node.lineno, "target kind compared"))
    return found


def test_only_the_kinds_tasks_and_sources_look_at_a_targets_form():
    """`if x.ndim == 3` or `labels.target == "binary_masks"` outside the packages that own
    targets is a task check in disguise: the kind (seglab.kinds) is asked instead."""
    offenders = []
    for path in sorted((ROOT / "seglab").rglob("*.py")):
        rel = path.relative_to(ROOT / "seglab").as_posix()
        if any(rel == owner or rel.startswith(owner + "/") for owner in FORM_OWNERS):
            continue
        offenders += [f"seglab/{rel}:{line}: {what}" for line, what in form_checks(ast.parse(path.read_text()))]
    assert offenders == []


def test_the_form_check_sees_what_it_looks_for():
    code = ("a = x.ndim == 3\nb = 4 != t.dim()\nc = len(p.shape) > 2\nd = labels.target == 'class'\n"
            "e = task.target not in source.targets\nf = name in ('class_map', 'x')\n"
            "g = x.dim() == y.dim()\nok = x.ndim + 1\nok = unit in ('class', 'instance')\nok = x.shape == y.shape\n")
    assert [line for line, _ in form_checks(ast.parse(code))] == [1, 2, 3, 4, 5, 6, 7]


def test_schema_names_match_the_registries():
    from seglab.config import schema
    from seglab.task import TASKS
    from seglab.data.sources import SOURCES
    from seglab.optim import OPTIMIZERS, SCHEDULES

    # task and data.format are read from the registries themselves (tests/test_open_config.py)
    assert schema.Config.plugins() is TASKS and schema.DataConfig.plugins() is SOURCES
    assert set(schema.OPTIMIZER_NAMES) == set(OPTIMIZERS.names())
    assert set(schema.SCHEDULE_NAMES) == set(SCHEDULES.names())


def test_every_task_answers_the_questions_the_engine_cannot():
    from seglab.task import Task, get_task

    must = ("adapt_labels", "build_model", "training_loss", "probabilities", "decide", "metric", "format_table")
    for name in ("multiclass", "multilabel", "classification"):
        task = get_task(name)
        assert task.name == name and task.target and task.per_class_key and task.writers
        assert task.default_monitor in task.scalar_metrics
        assert [q for q in must if getattr(type(task), q) is getattr(Task, q)] == [], name


def import_graph() -> dict[str, set[str]]:
    """Module -> the seglab modules it imports, function-level imports included. `from a.b
    import c` is an edge to the module a.b.c when there is one, else to a.b (a package's
    __init__ running before its modules is Python's order, not an import of the package)."""
    modules = {}
    for path in (ROOT / "seglab").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    edges.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_in_seglab():
    graph = import_graph()
    assert graph["seglab.data.sources.coco"] >= {"seglab.data.sources.registry", "seglab.data.painting"}
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
