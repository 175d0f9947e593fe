"""Import every module of upscale_cli, then look for import circles among its modules: with the
imports at module level only (what runs on import) and with every import, those inside
functions too (issue #16: "no import circle").

    python research/import_circles.py [src/upscale_cli]

Prints one line for the imports and one per kind of circle; exits 1 when an import fails or
a circle is found.
"""
import ast
import importlib
import pathlib
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parents[1] / "src" / "upscale_cli")
PKG = "upscale_cli"
modules = {}
for path in ROOT.rglob("*.py"):
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    modules[".".join(parts)] = path

def resolve(name):
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None

def edges(mod, path, top_only):
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    nodes = tree.body if top_only else list(ast.walk(tree))
    if top_only:  # module level, including inside if/try at module level
        stack, nodes = list(tree.body), []
        while stack:
            n = stack.pop()
            nodes.append(n)
            if isinstance(n, (ast.If, ast.Try)):
                if isinstance(n, ast.If) and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING":
                    continue
                stack.extend(getattr(n, "body", []) + getattr(n, "orelse", []) + getattr(n, "finalbody", [])
                             + [h for t in getattr(n, "handlers", []) for h in t.body])
    out = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            for a in n.names:
                if a.name.startswith(PKG):
                    out.add(resolve(a.name))
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                base = mod if is_pkg else mod.rpartition(".")[0]
                for _ in range(n.level - 1):
                    base = base.rpartition(".")[0]
                target = base + ("." + n.module if n.module else "")
            else:
                target = n.module or ""
            if not target.startswith(PKG):
                continue
            for a in n.names:  # `from pkg import submodule` imports the submodule
                sub = f"{target}.{a.name}"
                out.add(sub if sub in modules else resolve(target))
    out.discard(mod); out.discard(None)
    return out

def cycles(graph):
    index, low, onstack, stack, sccs, counter = {}, {}, set(), [], [], [0]
    sys.setrecursionlimit(10000)
    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); onstack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in onstack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop(); onstack.discard(w); scc.append(w)
                if w == v: break
            if len(scc) > 1:
                sccs.append(sorted(scc))
    for v in graph:
        if v not in index:
            visit(v)
    return sccs

failed = []
for name in sorted(modules):
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - any failure is reported, not raised
        failed.append(f"{name}: {type(e).__name__}: {e}")
print(f"imported {len(modules) - len(failed)} of {len(modules)} modules" + ("" if not failed else "; failed: " + "; ".join(failed)))
any_circle = False
for label, top in (("module-level imports", True), ("all imports (also inside functions)", False)):
    graph = {m: edges(m, p, top) for m, p in modules.items()}
    found = cycles(graph)
    any_circle = any_circle or bool(found)
    print(f"{label}: " + ("no import circle" if not found else f"{len(found)} circle(s): " + " | ".join(" <-> ".join(c) for c in found)))
sys.exit(1 if failed or any_circle else 0)
