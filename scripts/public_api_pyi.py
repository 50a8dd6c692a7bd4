#!/usr/bin/env python3
"""Summarise a Python stub file (.pyi) one item per line: the native module of the Python
package is a cdylib with no Rust API, so its public API is the functions and classes it hands
to Python, which `_native.pyi` declares. Called by `scripts/public-api` for flatfhir-python.

Usage: public_api_pyi.py crates/python/python/flatfhir/_native.pyi
"""

import ast
import sys


def sig(prefix, f):
    args = ast.unparse(f.args)
    ret = f" -> {ast.unparse(f.returns)}" if f.returns else ""
    return f"def {prefix}{f.name}({args}){ret}"


def main(path):
    mod = ast.parse(open(path).read())
    out = []
    for node in mod.body:
        if isinstance(node, ast.FunctionDef):
            out.append(sig("", node))
        elif isinstance(node, ast.ClassDef):
            out.append(f"class {node.name}")
            for m in node.body:
                if isinstance(m, ast.FunctionDef):
                    out.append(sig(f"{node.name}.", m))
                elif isinstance(m, ast.AnnAssign):
                    out.append(f"{node.name}.{ast.unparse(m.target)}: {ast.unparse(m.annotation)}")
        elif isinstance(node, ast.AnnAssign):
            out.append(f"{ast.unparse(node.target)}: {ast.unparse(node.annotation)}")
        elif isinstance(node, ast.Assign):
            out.append(ast.unparse(node))
    for line in sorted(out):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1])
