"""The house rules of the package, checked on its source: one owner per state and per table.

- no state or status is spelled as a literal outside ``bridge/model.py``;
- only ``bridge/eventcore/deliveries.py`` writes ``subscriber_events`` and ``attempts``, and only
  ``bridge/eventcore/claims.py`` writes ``claims`` (the migrations aside);
- no import cycle between the package's modules, lazy imports inside functions included;
- nothing under ``bridge/web/`` imports the command line (``bridge.cli``): the wording both use is
  ``bridge/wording.py``'s;
- no module reads another object's private attributes.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bridge import model

PACKAGE = Path(model.__file__).resolve().parent
MODULES = {p: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}
STATES = {m.value for enum in (model.DeliveryStatus, model.Settlement, model.SupervisorState, model.HostState,
                                model.ManagerState) for m in enum}
SQL_STATUS = re.compile(r"'(%s)'" % "|".join(re.escape(s) for s in STATES | {model.ActionKind.BACKSYNC.value}))


def name_of(path: Path) -> str:
    parts = ["bridge", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_no_state_literal_outside_the_model() -> None:
    found = []
    for path, tree in MODULES.items():
        if path.name == "model.py":
            continue
        skip = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if node.value in STATES or SQL_STATUS.search(node.value):
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, "state literals outside bridge/model.py:\n" + "\n".join(found)


def test_only_the_queue_writes_its_tables() -> None:
    write = re.compile(r"\b(INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+(subscriber_events|attempts)\b", re.I)
    writers = sorted({str(p.relative_to(PACKAGE)) for p, tree in MODULES.items()
                      for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str) and write.search(node.value)})
    # sqlschema.py: the schema's migrations, nothing else (storecopy.py names tables at run time: it
    # only fills an empty store with whole rows, see its docstring); pgschema.py: the repairs
    # `check --db` prints for an operator, never run by ombridge
    assert writers == ["eventcore/deliveries.py", "store/pgschema.py", "store/sqlschema.py"]


def test_only_the_claims_module_writes_claims() -> None:
    write = re.compile(r"\b(INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM)\s+claims\b", re.I)
    writers = sorted({str(p.relative_to(PACKAGE)) for p, tree in MODULES.items()
                      for node in ast.walk(tree)
                      if isinstance(node, ast.Constant) and isinstance(node.value, str) and write.search(node.value)})
    assert writers == ["eventcore/claims.py", "store/pgschema.py", "store/sqlschema.py"]  # (as above)


def imports_of(path: Path, tree: ast.AST) -> set[str]:
    here = name_of(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            if not module.startswith("bridge"):
                continue
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                found.add(candidate if candidate in NAMES else module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("bridge"))
    return {m for m in found if m in NAMES and m != here}


NAMES = {name_of(p) for p in MODULES}


def test_no_import_cycles() -> None:
    graph = {name_of(p): imports_of(p, tree) for p, tree in MODULES.items()}
    # a package imports its own __init__ implicitly: that is no cycle of ours
    for name in graph:
        graph[name].discard(name.rsplit(".", 1)[0])
    cycles = []

    def visit(node: str, stack: list[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in stack:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in done:
                visit(nxt, stack + [nxt], done)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles)))


def test_the_web_never_imports_the_command_line() -> None:
    upward = sorted(f"{name_of(p)} imports {m}" for p, tree in MODULES.items() if name_of(p).startswith("bridge.web")
                    for m in imports_of(p, tree) if m == "bridge.cli" or m.startswith("bridge.cli."))
    assert not upward, "the web imports the command line:\n" + "\n".join(upward)


def test_no_private_attribute_read_across_objects() -> None:
    allowed_bases = {"self", "cls", "os", "sys"}
    found = []
    for path, tree in MODULES.items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and not (isinstance(node.value, ast.Name) and node.value.id in allowed_bases)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: .{node.attr}")
    assert not found, "private attributes read from outside their object:\n" + "\n".join(found)


MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def test_rooms_stay_small() -> None:
    # A module a newcomer reads in one sitting; a function that fits on a screen.
    found = []
    for path, tree in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(PACKAGE)}: {lines} lines (module)")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.name} is {length} lines")
    assert not found, "too big:\n" + "\n".join(found)


def test_no_contract_is_enforced_by_raising_assertion_error() -> None:
    found = [f"{path.relative_to(PACKAGE)}:{node.lineno}" for path, tree in MODULES.items() for node in ast.walk(tree)
             if isinstance(node, ast.Raise) and node.exc is not None and "AssertionError" in ast.unparse(node.exc)]
    assert not found, "raise AssertionError as a contract:\n" + "\n".join(found)


STATE_ENUMS = {"SupervisorState", "HostState", "ManagerState", "LaneState", "ListenerState"}


def test_each_state_attribute_is_assigned_in_one_method_per_class() -> None:
    # A state changes in one guarded method (and starts in __init__): nowhere else; in a class
    # with _change_state, that method.
    found = []
    for path, tree in MODULES.items():
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            where: dict[str, set[str]] = {}
            for method in (n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
                for node in ast.walk(method):
                    targets = node.targets if isinstance(node, ast.Assign) else \
                        [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
                    for target in targets:
                        base = target.value if isinstance(target, ast.Subscript) else target
                        for t in (base.elts if isinstance(base, ast.Tuple) else [base]):
                            if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
                                    and (t.attr in ("state", "_state") or any(
                                        e in ast.unparse(node.value) for e in STATE_ENUMS))):  # type: ignore[union-attr]
                                where.setdefault(t.attr, set()).add(method.name)
            guarded = any(isinstance(n, ast.FunctionDef) and n.name == "_change_state" for n in cls.body)
            for attr, methods in where.items():
                changers = methods - {"__init__"}
                if len(changers) > 1 or (guarded and attr == "state" and changers - {"_change_state"}):
                    found.append(f"{path.relative_to(PACKAGE)}: {cls.name}.{attr} assigned in {sorted(methods)}")
    assert not found, "state assigned in more than one method:\n" + "\n".join(found)


def reached_from(start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others, lazy imports included."""
    graph = {name_of(p): imports_of(p, tree) for p, tree in MODULES.items()}
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_events_imports_no_action_code() -> None:
    # events stores; the synchronized calls are the delivery layer's (bridge.delivery.sending)
    events = next(p for p in MODULES if name_of(p) == "bridge.eventcore.events")
    assert not imports_of(events, MODULES[events]) & {"bridge.delivery.actions", "bridge.delivery.sending", "bridge.delivery.manager"}


def test_the_client_side_needs_nothing_of_the_daemon() -> None:
    assert not reached_from("bridge.client.launcher") & {"bridge.daemon.supervisor", "bridge.delivery.manager", "bridge.ombacksync.perlhost"}


# -- where things may live (issue 30) ----------------------------------------------------------


def test_no_driver_is_named_and_no_store_asked_what_it_is_outside_the_store_seam() -> None:
    # Above bridge/store/: `store.failures()`, `store.Connection` and the dialect's capabilities
    # (`conn.dialect.shared`, `.checkpoints`...), never sqlite3, psycopg or "is this SQLite?".
    found = []
    for path, tree in MODULES.items():
        if path.relative_to(PACKAGE).parts[0] == "store":
            continue
        for node in ast.walk(tree):
            named = (node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else
                     " ".join(a.name for a in node.names) if isinstance(node, ast.Import) else
                     node.module or "" if isinstance(node, ast.ImportFrom) else "")
            if re.search(r"\b(sqlite3|psycopg\w*|SQLITE|POSTGRESQL|is_postgresql)\b", named):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {named}")
    assert not found, "driver names or store identity outside bridge/store/:\n" + "\n".join(found)


def test_the_event_core_is_opened_through_the_process_store() -> None:
    # One Store per process (bridge.store.Store), passed to everything: above the seam, only the
    # `ombridge send` fast path (entry.py, one connection and done) opens the event core through
    # the module's shortcuts; nobody else asks where the store is.
    shortcuts = {"connect", "describe", "location", "default_node"}
    found = [f"{path.relative_to(PACKAGE)}:{node.lineno}: store.{node.func.attr}()"
             for path, tree in MODULES.items()
             if path.relative_to(PACKAGE).parts[0] != "store" and path.name != "entry.py"
             for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name) and node.func.value.id == "store"
             and node.func.attr in shortcuts]
    assert not found, "the event core opened around the process's Store:\n" + "\n".join(found)


def test_the_settings_file_has_one_reader() -> None:
    readers = sorted(str(p.relative_to(PACKAGE)) for p, tree in MODULES.items() for node in ast.walk(tree)
                     if isinstance(node, (ast.Import, ast.ImportFrom))
                     and "tomllib" in ((node.module or "") if isinstance(node, ast.ImportFrom)
                                       else " ".join(a.name for a in node.names)))
    assert readers == ["conf.py"]


def test_the_layers_are_packages_and_few_modules_stay_flat() -> None:
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(flat) <= 15, flat
    for layer in ("store", "eventcore", "ombacksync", "delivery", "syncback", "daemon", "client", "setup",
                  "cli", "web"):
        assert (PACKAGE / layer / "__init__.py").is_file(), layer


LAYERS = ["store", "eventcore", "ombacksync", "delivery", "syncback", "daemon", "client", "setup"]


def test_each_layer_imports_only_the_layers_below_it() -> None:
    # the order of docs/architecture.md; the basics (flat modules) below them all, cli/ and web/ on top
    def layer(name: str) -> int | None:
        part = name.split(".")[1] if name.count(".") else ""
        return LAYERS.index(part) if part in LAYERS else None

    upward = []
    for path, tree in MODULES.items():
        mine = layer(name_of(path))
        if mine is None:
            continue
        for other in imports_of(path, tree):
            theirs = layer(other)
            if (theirs is not None and theirs > mine) or other.split(".")[1:2] in (["cli"], ["web"]):
                upward.append(f"{name_of(path)} imports {other}")
    assert not upward, "imports that run back up:\n" + "\n".join(sorted(upward))


def test_one_place_for_each_thing() -> None:
    # state tables on model.check_transition; one process-group kill; one registry of system subscribers
    found = []
    for path, tree in MODULES.items():
        rel = str(path.relative_to(PACKAGE))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and rel != "model.py" and any(
                    isinstance(t, ast.Name) and re.search(r"TRANSITIONS|_MOVES$", t.id) for t in node.targets)):
                found.append(f"{rel}:{node.lineno}: a state table outside bridge/model.py")
            if isinstance(node, ast.Attribute) and node.attr == "killpg" and rel not in ("processes.py",
                                                                                        "ombacksync/perlchild.py"):
                found.append(f"{rel}:{node.lineno}: killpg outside bridge/processes.py")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "ensure_system_subscriber" and rel != "eventcore/builtins.py"):
                found.append(f"{rel}:{node.lineno}: a system subscriber seeded outside bridge/eventcore/builtins.py")
    assert not found, "\n".join(found)
