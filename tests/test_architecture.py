"""The layout's rules, read from the source: the library never imports the command layer,
no import cycles, and one place reads the ``gluoncv:`` prefix of network names."""
import ast

from conftest import REPO

PACKAGE = REPO / 'openaff'


def modules():
    """{dotted module name: parsed source} of the package."""
    found = {}
    for path in PACKAGE.rglob('*.py'):
        parts = path.relative_to(REPO).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        found[name] = (path, ast.parse(path.read_text()))
    return found


def imported(name, path, tree):
    """The package modules ``name`` imports (relative imports resolved)."""
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(0, node.level - 1)):
                base = base.rpartition('.')[0]
            module = (f'{base}.{node.module}' if node.module else base) if node.level \
                else node.module
            targets.add(module)
            targets.update(f'{module}.{alias.name}' for alias in node.names)
    return targets


def import_graph():
    found = modules()
    return {name: {t for t in imported(name, path, tree) if t in found and t != name}
            for name, (path, tree) in found.items()}


def test_no_library_module_imports_the_command_layer():
    offenders = sorted(f'{name} -> {target}' for name, targets in import_graph().items()
                       if not name.startswith('openaff.cli') for target in targets
                       if target == 'openaff.cli' or target.startswith('openaff.cli.'))
    assert not offenders, offenders


def strongly_connected(graph):
    """Tarjan's components of more than one module (import cycles)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles():
    graph = {name: {t for t in targets
                    # a package importing its own submodules is not a cycle
                    if not t.startswith(name + '.')}
             for name, targets in import_graph().items()}
    assert strongly_connected(graph) == []


def test_a_cycle_is_found():
    assert strongly_connected({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [
        ['a', 'b', 'c']]


def test_only_the_network_registry_reads_the_gluoncv_prefix():
    allowed = PACKAGE / 'models' / 'registry.py'
    readers = sorted(
        str(path.relative_to(REPO)) for _, (path, tree) in modules().items() if path != allowed
        for node in ast.walk(tree)
        if (isinstance(node, ast.Constant) and node.value == 'gluoncv:')
        or (isinstance(node, ast.Name) and node.id == 'GLUONCV_PREFIX'))
    assert not readers, readers


def test_module_map_in_the_development_notes_matches_the_tree():
    """Every module of the package is named in docs/development.md's layout, and every file
    the layout names exists."""
    import re
    notes = (REPO / 'docs' / 'development.md').read_text()
    layout = notes.split('## Layout', 1)[1].split('```')[1]
    named = set(re.findall(r'[A-Za-z_][\w]*\.(?:py|cc|h|sh)\b', layout))
    files = {path.name for path in PACKAGE.rglob('*') if path.suffix in ('.py', '.cc', '.h')
             and '__pycache__' not in path.parts}
    unnamed = sorted(f for f in files if f != '__init__.py' and f not in named)
    assert not unnamed, f'modules missing from the layout: {unnamed}'
    elsewhere = {path.name for folder in ('benchmarks', 'tools', 'tests')
                 for path in (REPO / folder).rglob('*')}
    missing = sorted(name for name in named if name not in files | elsewhere)
    assert not missing, f'the layout names files that do not exist: {missing}'
