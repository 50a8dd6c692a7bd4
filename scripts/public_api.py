#!/usr/bin/env python3
"""Summarise a crate's public Rust API from rustdoc's JSON output, one item per line.

Usage: public_api.py target/doc/CRATE.json > docs/public-api/CRATE.txt

Lists what a user of the crate can name: modules, functions (with signatures), structs and
their public fields, enums and variants, traits and their items, constants, statics, type
aliases, macros, inherent methods and the explicit trait impls of public types. Left out, as
`cargo public-api` does by default: `#[doc(hidden)]` items (rustdoc strips them), auto-trait and
blanket impls. Items re-exported under several paths are listed under each. Sorted, so a diff of
two lists is a diff of the API. Called by `scripts/public-api`.
"""

import json
import sys


def main(path):
    doc = json.load(open(path))
    index = doc["index"]
    paths = doc["paths"]
    out = set()
    public_path = {}  # id -> first public path found, for rendering types

    def item(i):
        return index.get(str(i))

    # First pass: where each item can be named from outside.
    def name_walk(mod_id, prefix, seen):
        m = item(mod_id)
        if m is None or mod_id in seen:
            return
        seen = seen | {mod_id}
        for cid in m["inner"]["module"]["items"]:
            c = item(cid)
            if c is None:
                continue
            kind, inner = next(iter(c["inner"].items()))
            if kind == "use":
                target = inner["id"]
                if inner["is_glob"]:
                    if target is not None and item(target) is not None:
                        name_walk(target, prefix, seen)
                    continue
                p = f"{prefix}::{inner['name']}"
                if target is not None:
                    public_path.setdefault(target, p)
                    t = item(target)
                    if t is not None and "module" in t["inner"]:
                        name_walk(target, p, seen)
            else:
                if c.get("name") is None:
                    continue
                p = f"{prefix}::{c['name']}"
                public_path.setdefault(cid, p)
                if kind == "module":
                    name_walk(cid, p, seen)

    def path_of(rp):
        i = rp.get("id")
        if i in public_path:
            return public_path[i]
        if str(i) in paths:
            return "::".join(paths[str(i)]["path"])
        return rp["path"]

    def ty(t):
        if t is None:
            return "()"
        (k, v), = t.items()
        if k == "resolved_path":
            return path_of(v) + args(v.get("args"))
        if k == "generic" or k == "primitive":
            return v
        if k == "borrowed_ref":
            lt = f"{v['lifetime']} " if v.get("lifetime") else ""
            return f"&{lt}{'mut ' if v['is_mutable'] else ''}{ty(v['type'])}"
        if k == "raw_pointer":
            return f"*{'mut' if v['is_mutable'] else 'const'} {ty(v['type'])}"
        if k == "slice":
            return f"[{ty(v)}]"
        if k == "array":
            return f"[{ty(v['type'])}; {v['len']}]"
        if k == "tuple":
            return "(" + ", ".join(ty(x) for x in v) + ")"
        if k == "dyn_trait":
            parts = [path_of(b["trait"]) + args(b["trait"].get("args")) for b in v["traits"]]
            if v.get("lifetime"):
                parts.append(v["lifetime"])
            return "dyn " + " + ".join(parts)
        if k == "impl_trait":
            return "impl " + bounds(v)
        if k == "function_pointer":
            sig = v["sig"]
            ins = ", ".join(ty(x[1]) for x in sig["inputs"])
            o = sig.get("output")
            return f"fn({ins})" + (f" -> {ty(o)}" if o else "")
        if k == "qualified_path":
            tr = v.get("trait")
            if tr:
                return f"<{ty(v['self_type'])} as {path_of(tr)}>::{v['name']}"
            return f"{ty(v['self_type'])}::{v['name']}"
        if k == "infer":
            return "_"
        return k

    def args(a):
        if not a:
            return ""
        (k, v), = a.items()
        if k == "angle_bracketed":
            parts = []
            for x in v["args"]:
                if x == "infer":
                    parts.append("_")
                    continue
                (ak, av), = x.items()
                if ak == "type":
                    parts.append(ty(av))
                elif ak == "lifetime":
                    parts.append(av)
                elif ak == "const":
                    parts.append(str(av.get("expr")))
            for c in v.get("constraints", []):
                b = c["binding"]
                if "equality" in b:
                    eq = b["equality"]
                    parts.append(f"{c['name']} = {ty(eq['type']) if 'type' in eq else eq}")
                else:
                    parts.append(f"{c['name']}: {bounds(b['constraint'])}")
            return "<" + ", ".join(parts) + ">" if parts else ""
        if k == "parenthesized":
            s = "(" + ", ".join(ty(x) for x in v["inputs"]) + ")"
            if v.get("output"):
                s += " -> " + ty(v["output"])
            return s
        return ""

    def bounds(bs):
        parts = []
        for b in bs:
            (k, v), = b.items()
            if k == "trait_bound":
                m = v.get("modifier")
                q = "?" if m == "maybe" else ""
                parts.append(q + path_of(v["trait"]) + args(v["trait"].get("args")))
            elif k == "outlives":
                parts.append(v)
        return " + ".join(parts)

    def generics(g):
        ps = []
        for p in g["params"]:
            (k, v), = p["kind"].items()
            if k == "lifetime":
                ps.append(p["name"])
            elif k == "type":
                if v.get("is_synthetic"):
                    continue
                b = bounds(v["bounds"])
                ps.append(p["name"] + (f": {b}" if b else ""))
            elif k == "const":
                ps.append(f"const {p['name']}: {ty(v['type'])}")
        return "<" + ", ".join(ps) + ">" if ps else ""

    def where(g):
        ws = []
        for w in g.get("where_predicates", []):
            (k, v), = w.items()
            if k == "bound_predicate":
                ws.append(f"{ty(v['type'])}: {bounds(v['bounds'])}")
        return " where " + ", ".join(ws) if ws else ""

    def fn_sig(name, f):
        sig = f["sig"]
        h = f["header"]
        q = ("const " if h["is_const"] else "") + ("async " if h["is_async"] else "") + (
            "unsafe " if h["is_unsafe"] else "")
        ins = []
        for n, t in sig["inputs"]:
            if n == "self":
                ins.append({"&Self": "&self", "&mut Self": "&mut self", "Self": "self"}.get(ty(t), f"self: {ty(t)}"))
            else:
                ins.append(f"{n}: {ty(t)}")
        o = sig.get("output")
        return (f"{q}fn {name}{generics(f['generics'])}({', '.join(ins)})"
                + (f" -> {ty(o)}" if o else "") + where(f["generics"]))

    def impls(owner, impl_ids):
        for iid in impl_ids:
            im = item(iid)
            if im is None:
                continue
            v = im["inner"]["impl"]
            if v["is_synthetic"] or v.get("blanket_impl") is not None:
                continue
            if v["trait"] is None:
                for mid in v["items"]:
                    m = item(mid)
                    if m is None or m["visibility"] != "public":
                        continue
                    emit_assoc(owner, m)
            else:
                tr = v["trait"]
                neg = "!" if v["is_negative"] else ""
                out.add(f"impl{generics(v['generics'])} {neg}{path_of(tr)}{args(tr.get('args'))} for {ty(v['for'])}{where(v['generics'])}")

    def emit_assoc(owner, m):
        kind, v = next(iter(m["inner"].items()))
        n = m["name"]
        if kind == "function":
            out.add(f"pub {fn_sig(owner + '::' + n, v)}")
        elif kind == "assoc_const":
            out.add(f"pub const {owner}::{n}: {ty(v['type'])}")
        elif kind == "assoc_type":
            out.add(f"pub type {owner}::{n}" + (f" = {ty(v['type'])}" if v.get("type") else ""))

    def emit(i, p, seen):
        c = item(i)
        if c is None:
            out.add(f"pub use {p}")
            return
        kind, v = next(iter(c["inner"].items()))
        if kind == "module":
            if i in seen:
                return
            seen = seen | {i}
            out.add(f"pub mod {p}")
            walk_mod(i, p, seen)
        elif kind == "function":
            out.add(f"pub {fn_sig(p, v)}")
        elif kind == "struct":
            k = v["kind"]
            g = generics(v["generics"])
            if k == "unit":
                out.add(f"pub struct {p}{g};")
            elif "tuple" in k:
                fs = []
                for fid in k["tuple"]:
                    f = item(fid) if fid is not None else None
                    fs.append(f"pub {ty(f['inner']['struct_field'])}" if f else "_")
                out.add(f"pub struct {p}{g}({', '.join(fs)})")
            else:
                out.add(f"pub struct {p}{g}")
                for fid in k["plain"]["fields"]:
                    f = item(fid)
                    if f:
                        out.add(f"pub {p}::{f['name']}: {ty(f['inner']['struct_field'])}")
            for a in c["attrs"]:
                if "non_exhaustive" in json.dumps(a):
                    out.add(f"#[non_exhaustive] pub struct {p}")
            impls(p, v["impls"])
        elif kind == "enum":
            out.add(f"pub enum {p}{generics(v['generics'])}")
            for a in c["attrs"]:
                if "non_exhaustive" in json.dumps(a):
                    out.add(f"#[non_exhaustive] pub enum {p}")
            for vid in v["variants"]:
                var = item(vid)
                vk = var["inner"]["variant"]["kind"]
                vp = f"{p}::{var['name']}"
                if vk == "plain":
                    out.add(f"pub {vp}")
                elif "tuple" in vk:
                    fs = [ty(item(f)["inner"]["struct_field"]) if f is not None else "_" for f in vk["tuple"]]
                    out.add(f"pub {vp}({', '.join(fs)})")
                else:
                    out.add(f"pub {vp}")
                    for fid in vk["struct"]["fields"]:
                        f = item(fid)
                        out.add(f"pub {vp}::{f['name']}: {ty(f['inner']['struct_field'])}")
            impls(p, v["impls"])
        elif kind == "union":
            out.add(f"pub union {p}")
            impls(p, v["impls"])
        elif kind == "trait":
            out.add(f"pub trait {p}{generics(v['generics'])}")
            for mid in v["items"]:
                emit_assoc(p, item(mid))
        elif kind == "type_alias":
            out.add(f"pub type {p}{generics(v['generics'])} = {ty(v['type'])}")
        elif kind == "constant":
            out.add(f"pub const {p}: {ty(v['type'])}")
        elif kind == "static":
            out.add(f"pub static {p}: {ty(v['type'])}")
        elif kind in ("macro", "proc_macro"):
            out.add(f"pub macro {p}!")
        else:
            out.add(f"pub {kind} {p}")

    def walk_mod(mod_id, prefix, seen):
        for cid in item(mod_id)["inner"]["module"]["items"]:
            c = item(cid)
            if c is None:
                continue
            kind, inner = next(iter(c["inner"].items()))
            if kind == "use":
                target = inner["id"]
                if inner["is_glob"]:
                    t = item(target) if target is not None else None
                    if t is not None and "module" in t["inner"]:
                        walk_mod(target, prefix, seen)
                    else:
                        out.add(f"pub use {inner['source']}::*")
                    continue
                p = f"{prefix}::{inner['name']}"
                if target is None or item(target) is None:
                    out.add(f"pub use {p}")
                else:
                    emit(target, p, seen)
            elif c.get("name") is not None and kind != "impl":
                emit(cid, f"{prefix}::{c['name']}", seen)

    root = doc["root"]
    name = item(root)["name"]
    name_walk(root, name, frozenset())
    out.add(f"pub mod {name}")
    walk_mod(root, name, frozenset({root}))
    for line in sorted(out):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1])
