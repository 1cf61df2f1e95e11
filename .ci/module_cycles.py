#!/usr/bin/env python3
"""Fails when a crate's top-level modules depend on each other in a cycle.

A module's dependencies are the `crate::<module>` paths its files name (in `use` lines
and in code), plus the modules behind the crate root's re-exports it uses. Doc comments
are ignored. Usage: module_cycles.py crates/*/src
"""
import os
import re
import sys


def modules(src):
    """Top-level module name -> list of its files."""
    mods = {}
    for entry in sorted(os.listdir(src)):
        path = os.path.join(src, entry)
        if entry in ("lib.rs", "main.rs"):
            continue
        if entry.endswith(".rs"):
            mods.setdefault(entry[:-3], []).append(path)
        elif os.path.isdir(path):
            for root, _, files in os.walk(path):
                for f in files:
                    if f.endswith(".rs"):
                        mods.setdefault(entry, []).append(os.path.join(root, f))
    return mods


def reexports(src):
    """Names the crate root re-exports -> the module they come from."""
    names = {}
    for root in ("lib.rs", "main.rs"):
        path = os.path.join(src, root)
        if not os.path.exists(path):
            continue
        text = open(path).read()
        for m in re.finditer(r"pub(?:\(crate\))? use (\w+)::(\{[^}]*\}|\w+);", text, re.S):
            module, items = m.group(1), m.group(2)
            for name in re.findall(r"\w+", items):
                names[name] = module
    return names


def deps(files, mods, names, me):
    found = set()
    for path in files:
        code = "\n".join(
            line for line in open(path).read().split("\n") if not line.lstrip().startswith("//")
        )
        for m in re.finditer(r"crate::(\w+)", code):
            word = m.group(1)
            if word in mods and word != me:
                found.add(word)
            elif word in names and names[word] in mods and names[word] != me:
                found.add(names[word])
        for m in re.finditer(r"use crate::\{([^}]*)\}", code, re.S):
            for word in re.findall(r"\b(\w+)\b", m.group(1)):
                if word in mods and word != me:
                    found.add(word)
                elif word in names and names[word] in mods and names[word] != me:
                    found.add(names[word])
    return found


def cycles(graph):
    out, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                out.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return out


def main():
    bad = False
    for src in sys.argv[1:]:
        mods = modules(src)
        names = reexports(src)
        graph = {m: deps(files, mods, names, m) for m, files in mods.items()}
        for cycle in cycles(graph):
            bad = True
            print(f"{src}: module cycle: {' -> '.join(cycle)}")
    if bad:
        sys.exit(1)
    print(f"no module cycles in {len(sys.argv) - 1} crates")


main()
