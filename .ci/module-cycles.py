#!/usr/bin/env python3
"""Fails when the top-level modules of a crate's src/ depend on each other in a cycle.

A module depends on another when its code (comments and doc comments left out) names
`crate::other` or `super::other` from a direct child, or a name that lib.rs re-exports from
`other` (`crate::SseEndpoint` -> endpoint). A module named `error` may name the types its
variants carry (an error holding event ids) without that counting: every module returns the
error, so the error naming a value type would otherwise always close a cycle.
Usage: module-cycles.py CRATE_DIR...
"""
import re
import sys
from pathlib import Path


def code_of(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def modules(src):
    mods = {}
    for f in src.glob("*.rs"):
        if f.name not in ("lib.rs", "main.rs"):
            mods[f.stem] = [f]
    for d in src.iterdir():
        if d.is_dir() and (d / "mod.rs").exists():
            mods[d.name] = list(d.rglob("*.rs"))
    return mods


def reexports(lib_text, mods):
    names = {}
    for m in re.finditer(r"pub use (\w+)::(\{[^}]*\}|\w+)", code_of(lib_text)):
        if m.group(1) in mods:
            for name in re.findall(r"\w+", m.group(2)):
                names[name] = m.group(1)
    return names


def graph(crate):
    src = Path(crate) / "src"
    mods = modules(src)
    lib = src / "lib.rs"
    names = reexports(lib.read_text(), mods) if lib.exists() else {}
    edges = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            code = code_of(f.read_text())
            for group in re.findall(r"crate::\{([^}]*)\}", code):
                for name in re.findall(r"\w+", group):
                    edges[m].add(name if name in mods else names.get(name, m))
            for name in re.findall(r"crate::(\w+)", code):
                edges[m].add(name if name in mods else names.get(name, m))
        edges[m].discard(m)
        edges[m] &= set(mods)
        if m == "error":
            edges[m] = set()
    return edges


def cycle(edges):
    state = {}
    stack = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


failed = False
for crate in sys.argv[1:]:
    edges = graph(crate)
    found = cycle(edges)
    if found:
        failed = True
        print(f"{crate}: import cycle: {' -> '.join(found)}")
    else:
        order = ", ".join(f"{m} -> {{{', '.join(sorted(e))}}}" for m, e in sorted(edges.items()) if e)
        print(f"{crate}: no import cycle ({order})")
sys.exit(1 if failed else 0)
