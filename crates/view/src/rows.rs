//! Row generation: runs a compiled [`View`] on one resource (where, forEach, forEachOrNull,
//! repeat, unionAll, nested selects and the cartesian product between them).

use crate::error::{Error, Result};
use crate::eval::{Env, Item, Primitive, eval};
use crate::json::{Json, number_to_serde};
use crate::view::{Compiled, Iter, Select, View};

/// One output value of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell<'a>(pub(crate) CellInner<'a>);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CellInner<'a> {
    Null,
    One(Item<'a>),
    List(Vec<Item<'a>>),
}

/// A primitive output value.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Scalar<'s> {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A decimal (its JSON text is kept when it came from the resource).
    Decimal(f64),
    /// A string (also dates, codes, ids, …).
    Str(&'s str),
    /// A complex value (object), to be written as JSON.
    Json(&'s Json<'s>),
}

fn scalar<'s>(it: &'s Item<'_>) -> Option<Scalar<'s>> {
    Some(match it.prim() {
        Primitive::Bool(b) => Scalar::Bool(b),
        Primitive::Int(i) => Scalar::Int(i),
        Primitive::Dec(d) => Scalar::Decimal(f64::try_from(d).unwrap_or(f64::NAN)),
        Primitive::Str(s) | Primitive::Temporal(s, _) => Scalar::Str(s),
        // Quantities and type infos are turned into strings when a cell is built.
        Primitive::Qty(..) => return None,
        Primitive::Obj(j) => Scalar::Json(j),
        Primitive::Null => return None,
    })
}

fn item_to_json(it: &Item<'_>) -> serde_json::Value {
    match it {
        Item::Node(j, ..) => j.to_serde(),
        Item::Bool(b) => (*b).into(),
        Item::Int(i) => (*i).into(),
        Item::Dec(d) => number_to_serde(&d.to_string()),
        Item::Str(s, _) => serde_json::Value::String(s.to_string()),
        Item::Qty(..) | Item::TypeInfo(..) => {
            serde_json::Value::String(crate::eval::describe_item(it).1)
        }
    }
}

fn write_item(out: &mut Vec<u8>, it: &Item<'_>) {
    match it {
        Item::Node(j, ..) => write_node(out, j),
        Item::Dec(d) => out.extend_from_slice(d.to_string().as_bytes()),
        other => {
            let _ = serde_json::to_writer(&mut *out, &item_to_json(other));
        }
    }
}

/// A node as JSON text, numbers as their source text.
fn write_node(out: &mut Vec<u8>, j: &Json<'_>) {
    match j {
        Json::Null => out.extend_from_slice(b"null"),
        Json::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Json::Number(n) => out.extend_from_slice(n.as_bytes()),
        Json::String(s) => {
            let _ = serde_json::to_writer(&mut *out, s.as_ref());
        }
        Json::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_node(out, x);
            }
            out.push(b']');
        }
        Json::Object(m) => {
            out.push(b'{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut *out, k.as_ref());
                out.push(b':');
                write_node(out, v);
            }
            out.push(b'}');
        }
    }
}

impl<'a> Cell<'a> {
    /// Whether the cell is null (no value in a non-collection column).
    pub fn is_null(&self) -> bool {
        matches!(self.0, CellInner::Null)
    }

    /// Whether the cell belongs to a collection column.
    pub fn is_list(&self) -> bool {
        matches!(self.0, CellInner::List(_))
    }

    /// The single value of a non-collection cell.
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match &self.0 {
            CellInner::One(it) => scalar(it),
            _ => None,
        }
    }

    /// The items of a collection cell (empty for null). An item without a value (a primitive
    /// that has only an extension, as in `given: [null, "B"]` with `_given`) is `None`, so it
    /// keeps its place in the list as a null, as the NDJSON and CSV outputs write it.
    pub fn list(&self) -> Vec<Option<Scalar<'_>>> {
        match &self.0 {
            CellInner::List(items) => items.iter().map(scalar).collect(),
            CellInner::One(it) => vec![scalar(it)],
            CellInner::Null => Vec::new(),
        }
    }

    /// Writes the cell as JSON text like [`Cell::to_json`], but with every decimal exactly as
    /// computed or read, precision included (`1.50`, `0.3`; not the nearest `f64`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match &self.0 {
            CellInner::Null => out.extend_from_slice(b"null"),
            CellInner::One(it) => write_item(out, it),
            CellInner::List(items) => {
                out.push(b'[');
                for (i, it) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_item(out, it);
                }
                out.push(b']');
            }
        }
    }

    /// The cell as JSON: `null`, a value, or an array for collection columns.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.0 {
            CellInner::Null => serde_json::Value::Null,
            CellInner::One(it) => item_to_json(it),
            CellInner::List(items) => items.iter().map(item_to_json).collect(),
        }
    }
}

/// One output row: a cell per column of [`View::columns`].
pub type Row<'a> = Vec<Cell<'a>>;

fn resource_label(r: &Json<'_>) -> String {
    format!(
        "{}/{}",
        r.get("resourceType").and_then(Json::as_str).unwrap_or("?"),
        r.get("id").and_then(Json::as_str).unwrap_or("?")
    )
}

impl View {
    fn eval_err(&self, c: &Compiled, resource: &Json<'_>, message: String) -> Error {
        Error::Eval {
            view: self.name.clone(),
            location: c.location.clone(),
            expr: c.src.clone(),
            resource: resource_label(resource),
            message,
        }
    }

    /// Runs the view on one resource, appending its rows to `out`. Resources of another type
    /// give no rows.
    pub fn rows<'a>(&'a self, resource: &'a Json<'a>, out: &mut Vec<Row<'a>>) -> Result<()> {
        if resource.get("resourceType").and_then(Json::as_str) != Some(self.resource.as_str()) {
            return Ok(());
        }
        let env = Env {
            resource,
            consts: &self.consts,
            row_index: 0,
            index: 0,
            total: None,
            typed: true,
        };
        let focus = [crate::eval::root(resource)];
        for w in &self.wheres {
            let env = Env {
                typed: w.typed,
                ..env
            };
            let r = eval(&env, &w.expr, &focus).map_err(|m| self.eval_err(w, resource, m))?;
            match r.as_slice() {
                [] => return Ok(()),
                [x] => match x.prim() {
                    Primitive::Bool(true) => {}
                    Primitive::Bool(false) => return Ok(()),
                    _ => {
                        return Err(self.eval_err(
                            w,
                            resource,
                            "a where path must return a boolean".into(),
                        ));
                    }
                },
                _ => {
                    return Err(self.eval_err(
                        w,
                        resource,
                        "a where path must return a single boolean".into(),
                    ));
                }
            }
        }
        let rows = self.select_rows(&env, &self.root, &focus)?;
        out.extend(rows);
        Ok(())
    }

    fn select_rows<'a>(
        &'a self,
        env: &Env<'a, '_>,
        s: &'a Select,
        focus: &[Item<'a>],
    ) -> Result<Vec<Row<'a>>> {
        let run = |c: &'a Compiled, f: &[Item<'a>]| {
            let env = Env {
                typed: c.typed,
                ..*env
            };
            eval(&env, &c.expr, f).map_err(|m| self.eval_err(c, env.resource, m))
        };
        // A select without iteration and only columns (the common case): one row.
        if matches!(s.iter, Iter::Once) && s.selects.is_empty() && s.union.is_empty() {
            return Ok(vec![self.column_cells(env, s, focus)?]);
        }
        // (focus, row index) pairs.
        let foci: Vec<(Vec<Item<'a>>, i64)> = match &s.iter {
            Iter::Once => vec![(focus.to_vec(), env.row_index)],
            Iter::ForEach(c) => run(c, focus)?
                .into_iter()
                .enumerate()
                .map(|(i, x)| (vec![x], i as i64))
                .collect(),
            Iter::ForEachOrNull(c) => {
                let v = run(c, focus)?;
                if v.is_empty() {
                    vec![(Vec::new(), 0)]
                } else {
                    v.into_iter()
                        .enumerate()
                        .map(|(i, x)| (vec![x], i as i64))
                        .collect()
                }
            }
            Iter::Repeat(paths) => {
                let mut acc = Vec::new();
                for it in focus {
                    self.repeat(env, paths, it, &mut acc)?;
                }
                acc.into_iter()
                    .enumerate()
                    .map(|(i, x)| (vec![x], i as i64))
                    .collect()
            }
        };
        let mut out = Vec::new();
        for (f, idx) in foci {
            let env = Env {
                row_index: idx,
                ..*env
            };
            let own = self.column_cells(&env, s, &f)?;
            let mut acc = vec![own];
            for sub in &s.selects {
                let rows = self.select_rows(&env, sub, &f)?;
                acc = product(acc, rows);
                if acc.is_empty() {
                    break;
                }
            }
            if !s.union.is_empty() && !acc.is_empty() {
                let mut rows = Vec::new();
                for u in &s.union {
                    rows.extend(self.select_rows(&env, u, &f)?);
                }
                acc = product(acc, rows);
            }
            out.extend(acc);
        }
        Ok(out)
    }

    /// The cells of a select's own columns, evaluated on `focus`.
    fn column_cells<'a>(
        &'a self,
        env: &Env<'a, '_>,
        s: &'a Select,
        focus: &[Item<'a>],
    ) -> Result<Row<'a>> {
        let mut own: Row<'a> = Vec::with_capacity(s.width);
        for (c, collection) in &s.columns {
            let cenv = Env {
                typed: c.typed,
                ..*env
            };
            let mut v =
                eval(&cenv, &c.expr, focus).map_err(|m| self.eval_err(c, env.resource, m))?;
            // Quantities and type infos are written as their FHIRPath text.
            for it in &mut v {
                if matches!(it, Item::Qty(..) | Item::TypeInfo(..)) {
                    *it = Item::Str(
                        std::borrow::Cow::Owned(crate::eval::describe_item(it).1),
                        None,
                    );
                }
            }
            let cell = if *collection {
                CellInner::List(v)
            } else {
                match v.len() {
                    0 => CellInner::Null,
                    1 => CellInner::One(v.into_iter().next().unwrap_or(Item::Bool(false))),
                    n => {
                        return Err(self.eval_err(
                            c,
                            env.resource,
                            format!(
                                "{n} values in a column that is not a collection (set \"collection\": true)"
                            ),
                        ));
                    }
                }
            };
            own.push(Cell(cell));
        }
        Ok(own)
    }

    fn repeat<'a>(
        &'a self,
        env: &Env<'a, '_>,
        paths: &'a [Compiled],
        item: &Item<'a>,
        acc: &mut Vec<Item<'a>>,
    ) -> Result<()> {
        for p in paths {
            let penv = Env {
                typed: p.typed,
                ..*env
            };
            let children = eval(&penv, &p.expr, std::slice::from_ref(item))
                .map_err(|m| self.eval_err(p, env.resource, m))?;
            for ch in children {
                acc.push(ch.clone());
                self.repeat(env, paths, &ch, acc)?;
            }
        }
        Ok(())
    }
}

/// Cartesian product of row sets, concatenating cells (left's first).
fn product<'a>(mut left: Vec<Row<'a>>, mut right: Vec<Row<'a>>) -> Vec<Row<'a>> {
    if left.len() == 1 {
        let l = left.pop().unwrap_or_default();
        if l.is_empty() {
            return right;
        }
        for r in &mut right {
            let mut row = Vec::with_capacity(l.len() + r.len());
            row.extend(l.iter().cloned());
            row.append(r);
            *r = row;
        }
        return right;
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in &right {
            let mut row = Vec::with_capacity(l.len() + r.len());
            row.extend(l.iter().cloned());
            row.extend(r.iter().cloned());
            out.push(row);
        }
    }
    out
}
