//! ViewDefinition: parsing the JSON, validating it and compiling every FHIRPath once.

use serde_json::Value;

use crate::ast::Expr;
use crate::error::{Error, Result};
use crate::json::Json;
use crate::parser;
use crate::prune::{Analysis, PathKind, ROOT, Trie};

/// An output column of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnDef {
    /// Column name (unique in the view).
    pub name: String,
    /// The FHIRPath that fills it.
    pub path: String,
    /// `collection: true`: the column holds a list.
    pub collection: bool,
    /// The FHIR type from `type`, if given (e.g. `string`, `integer`, `boolean`).
    pub fhir_type: Option<String>,
    /// The ANSI SQL type from the `ansi/type` tag, if given.
    pub ansi_type: Option<String>,
}

/// A compiled FHIRPath with its source and where it sits in the view.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) expr: Expr,
    /// Whether the answer can depend on node types (see [`crate::eval::needs_types`]).
    pub(crate) typed: bool,
    pub(crate) src: String,
    pub(crate) location: String,
    /// How it reads the resource (set when the view's trie is built).
    pub(crate) kind: PathKind,
}

/// How a select iterates its focus.
#[derive(Debug, Clone)]
pub(crate) enum Iter {
    Once,
    ForEach(Compiled),
    ForEachOrNull(Compiled),
    Repeat(Vec<Compiled>),
}

/// A compiled `select` node.
#[derive(Debug, Clone)]
pub(crate) struct Select {
    pub(crate) iter: Iter,
    /// Columns and whether each is a collection.
    pub(crate) columns: Vec<(Compiled, bool)>,
    pub(crate) selects: Vec<Select>,
    pub(crate) union: Vec<Select>,
    /// Number of output columns this node produces (own + nested + union).
    pub(crate) width: usize,
}

/// A compiled SQL on FHIR ViewDefinition, ready to be run on resources.
#[derive(Debug, Clone)]
pub struct View {
    pub(crate) name: String,
    pub(crate) resource: String,
    pub(crate) consts: Vec<(Json<'static>, String)>,
    pub(crate) wheres: Vec<Compiled>,
    pub(crate) root: Select,
    pub(crate) columns: Vec<ColumnDef>,
    /// The member paths the view reads: a line is built only along them.
    pub(crate) trie: Trie,
    /// The streaming plan, when every path is a plain member path.
    pub(crate) stream: Option<crate::stream::Plan>,
}

impl View {
    /// Parses and compiles a ViewDefinition from JSON text. `fallback_name` names the view in
    /// errors and outputs when it has no `name` (e.g. the file stem).
    pub fn from_json_str(text: &str, fallback_name: &str) -> Result<View> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Invalid {
            view: fallback_name.to_string(),
            message: format!("not valid JSON: {e}"),
        })?;
        View::from_json(&v, fallback_name)
    }

    /// Compiles a ViewDefinition given as a `serde_json::Value`.
    pub fn from_json(v: &Value, fallback_name: &str) -> Result<View> {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(fallback_name)
            .to_string();
        let mut c = Compiler {
            view: name.clone(),
            const_names: Vec::new(),
            columns: Vec::new(),
        };
        let obj = v
            .as_object()
            .ok_or_else(|| c.invalid("a view must be a JSON object"))?;
        let resource = obj
            .get("resource")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| c.invalid("'resource' (a resource type) is required"))?
            .to_string();
        let mut consts = Vec::new();
        if let Some(cs) = obj.get("constant") {
            let cs = cs
                .as_array()
                .ok_or_else(|| c.invalid("'constant' must be an array"))?;
            for k in cs {
                let cname = k
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| c.invalid("a constant needs a 'name'"))?;
                let values: Vec<(&String, &Value)> = k
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(key, _)| key.starts_with("value") && key.len() > 5)
                    .collect();
                let [(key, val)] = values.as_slice() else {
                    return Err(
                        c.invalid(&format!("constant '{cname}' needs exactly one value[x]"))
                    );
                };
                let mut ty = key["value".len()..].to_string();
                if let Some(f) = ty.get(0..1) {
                    let is_primitive = !matches!(
                        ty.as_str(),
                        "Quantity" | "Coding" | "CodeableConcept" | "Reference" | "Period"
                    );
                    if is_primitive {
                        ty = f.to_lowercase() + &ty[1..];
                    }
                }
                consts.push((Json::from_serde(val), ty));
                c.const_names.push(cname.to_string());
            }
        }
        let mut wheres = Vec::new();
        if let Some(ws) = obj.get("where") {
            let ws = ws
                .as_array()
                .ok_or_else(|| c.invalid("'where' must be an array"))?;
            for (i, w) in ws.iter().enumerate() {
                let p = w
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| c.invalid(&format!("where[{i}] needs a string 'path'")))?;
                wheres.push(c.compile(p, format!("where[{i}]"))?);
            }
        }
        let selects = obj
            .get("select")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| c.invalid("'select' must be a non-empty array"))?;
        let mut root_selects = Vec::new();
        for (i, s) in selects.iter().enumerate() {
            root_selects.push(c.select(s, &format!("select[{i}]"))?);
        }
        let width = root_selects.iter().map(|s| s.width).sum();
        let root = Select {
            iter: Iter::Once,
            columns: Vec::new(),
            selects: root_selects,
            union: Vec::new(),
            width,
        };
        let mut seen = std::collections::HashSet::new();
        for col in &c.columns {
            if !seen.insert(col.name.as_str()) {
                return Err(c.invalid(&format!("duplicate column name '{}'", col.name)));
            }
        }
        let mut root = root;
        let trie = analyse(&mut wheres, &mut root);
        let stream = crate::stream::plan(wheres.is_empty(), &root);
        if stream.is_some() {
            mark_streamed(&mut root);
        }
        Ok(View {
            name,
            resource,
            consts,
            wheres,
            root,
            columns: c.columns,
            trie,
            stream,
        })
    }

    /// Parses one resource for this view with core's walker, building only the members
    /// some path of the view reads (see [`View::path_kinds`]); the rest is validated and
    /// skipped. Errors are the walker's, the same `convert` gives for the line.
    pub fn parse<'a>(
        &self,
        line: &'a str,
    ) -> std::result::Result<Json<'a>, crate::json::JsonError> {
        crate::prune::build(line, Some(&self.trie))
    }

    /// How each path of the view reads the resource, in view order: its location
    /// (`column 'code'`, `select[0].forEach`, `where[0]`), its FHIRPath, and whether it took
    /// the trie-guided path (only the members it names are built) or reads whole subtrees.
    pub fn path_kinds(&self) -> Vec<(String, String, PathKind)> {
        fn visit(s: &Select, out: &mut Vec<(String, String, PathKind)>) {
            match &s.iter {
                Iter::ForEach(c) | Iter::ForEachOrNull(c) => out.push(entry(c)),
                Iter::Repeat(ps) => out.extend(ps.iter().map(entry)),
                Iter::Once => {}
            }
            out.extend(s.columns.iter().map(|(c, _)| entry(c)));
            for sub in s.selects.iter().chain(&s.union) {
                visit(sub, out);
            }
        }
        fn entry(c: &Compiled) -> (String, String, PathKind) {
            (c.location.clone(), c.src.clone(), c.kind)
        }
        let mut out: Vec<_> = self.wheres.iter().map(entry).collect();
        visit(&self.root, &mut out);
        out
    }

    /// Parses one NDJSON line and runs the view on it, calling `each` with its rows (not
    /// called for resources of another type). Returns whether the resource was of the view's
    /// type. Members no path reads are skipped while parsing (see [`View::parse`]).
    /// `context` labels JSON errors (e.g. `file:line`).
    pub fn rows_for_line(
        &self,
        line: &str,
        context: &dyn Fn() -> String,
        each: &mut dyn FnMut(&[crate::rows::Row<'_>]),
    ) -> Result<bool> {
        self.line_into(line, context, &mut crate::stream::RowsSink(each))
    }

    /// [`rows_for_line`](Self::rows_for_line) into a [`Sink`](crate::stream::Sink), which
    /// may take a streamed line's values without rows being built.
    pub(crate) fn line_into(
        &self,
        line: &str,
        context: &dyn Fn() -> String,
        sink: &mut dyn crate::stream::Sink,
    ) -> Result<bool> {
        let json_err = |source| Error::Json {
            context: context(),
            source,
        };
        if let Some(plan) = &self.stream {
            match plan.run(line, &self.resource, sink).map_err(json_err)? {
                crate::stream::Outcome::OtherType => return Ok(false),
                crate::stream::Outcome::Done => return Ok(true),
                // Walked again below, on a tree.
                crate::stream::Outcome::General => {}
            }
        }
        let r = self.parse(line).map_err(json_err)?;
        if r.get("resourceType").and_then(Json::as_str) != Some(self.resource.as_str()) {
            return Ok(false);
        }
        let mut rows = Vec::new();
        self.rows(&r, &mut rows)?;
        sink.rows(&rows);
        Ok(true)
    }

    /// A view of `resource` with one column per `(name, FHIRPath)` pair, the short form of
    /// the workshop's column lists (`[("gender", "gender"), ("id", "identifier[0].value")]`).
    pub fn from_columns(name: &str, resource: &str, columns: &[(String, String)]) -> Result<View> {
        let cols: Vec<Value> = columns
            .iter()
            .map(|(n, p)| serde_json::json!({"name": n, "path": p}))
            .collect();
        let v = serde_json::json!({
            "resourceType": "ViewDefinition",
            "name": name,
            "resource": resource,
            "select": [{"column": cols}],
        });
        View::from_json(&v, name)
    }

    /// The view's name (its `name`, else the fallback given when compiling).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The resource type the view reads.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The output columns, in output order.
    pub fn columns(&self) -> &[ColumnDef] {
        &self.columns
    }
}

fn mark_streamed(s: &mut Select) {
    if let Iter::ForEach(c) | Iter::ForEachOrNull(c) = &mut s.iter {
        c.kind = PathKind::Stream;
    }
    for (c, _) in &mut s.columns {
        c.kind = PathKind::Stream;
    }
    for sub in &mut s.selects {
        mark_streamed(sub);
    }
}

/// Builds the view's trie from its paths and records how each reads the resource.
fn analyse(wheres: &mut [Compiled], root: &mut Select) -> Trie {
    fn select(a: &mut Analysis, s: &mut Select, focus: &[u32]) {
        let focus: Vec<u32> = match &mut s.iter {
            Iter::Once => focus.to_vec(),
            Iter::ForEach(c) | Iter::ForEachOrNull(c) => {
                let (nodes, kind) = a.iterate(&c.expr, focus);
                c.kind = kind;
                nodes
            }
            Iter::Repeat(ps) => {
                // Followed recursively: everything under the focus may be reached.
                let kind = a.whole(focus);
                for p in ps.iter_mut() {
                    p.kind = kind;
                }
                focus.to_vec()
            }
        };
        for (c, _) in &mut s.columns {
            c.kind = a.value(&c.expr, &focus);
        }
        for sub in s.selects.iter_mut().chain(s.union.iter_mut()) {
            select(a, sub, &focus);
        }
    }
    let mut a = Analysis::default();
    for w in wheres.iter_mut() {
        w.kind = a.value(&w.expr, &[ROOT]);
    }
    select(&mut a, root, &[ROOT]);
    a.trie
}

struct Compiler {
    view: String,
    const_names: Vec<String>,
    /// Output columns collected in output order (union branches contribute once).
    columns: Vec<ColumnDef>,
}

impl Compiler {
    fn invalid(&self, msg: &str) -> Error {
        Error::Invalid {
            view: self.view.clone(),
            message: msg.to_string(),
        }
    }

    fn compile(&self, src: &str, location: String) -> Result<Compiled> {
        let names = &self.const_names;
        let resolve = |n: &str| names.iter().position(|c| c == n);
        match parser::parse(src, &resolve) {
            Ok(expr) => Ok(Compiled {
                kind: PathKind::Trie,
                typed: crate::eval::needs_types(&expr),
                expr,
                src: src.to_string(),
                location,
            }),
            Err(e) => Err(Error::Syntax {
                view: self.view.clone(),
                location,
                expr: src.to_string(),
                pos: e.pos,
                message: e.message,
            }),
        }
    }

    fn path_str<'v>(&self, v: &'v Value, what: &str, loc: &str) -> Result<&'v str> {
        v.as_str()
            .ok_or_else(|| self.invalid(&format!("{loc}: '{what}' must be a FHIRPath string")))
    }

    fn select(&mut self, v: &Value, loc: &str) -> Result<Select> {
        let obj = v
            .as_object()
            .ok_or_else(|| self.invalid(&format!("{loc} must be an object")))?;
        let iters = ["forEach", "forEachOrNull", "repeat"]
            .iter()
            .filter(|k| obj.contains_key(**k))
            .count();
        if iters > 1 {
            return Err(self.invalid(&format!(
                "{loc}: only one of forEach, forEachOrNull and repeat is allowed"
            )));
        }
        let iter = if let Some(p) = obj.get("forEach") {
            let p = self.path_str(p, "forEach", loc)?;
            Iter::ForEach(self.compile(p, format!("{loc}.forEach"))?)
        } else if let Some(p) = obj.get("forEachOrNull") {
            let p = self.path_str(p, "forEachOrNull", loc)?;
            Iter::ForEachOrNull(self.compile(p, format!("{loc}.forEachOrNull"))?)
        } else if let Some(r) = obj.get("repeat") {
            let r = r.as_array().filter(|a| !a.is_empty()).ok_or_else(|| {
                self.invalid(&format!("{loc}: 'repeat' must be a non-empty array"))
            })?;
            let mut paths = Vec::new();
            for (i, p) in r.iter().enumerate() {
                let p = self.path_str(p, "repeat", loc)?;
                paths.push(self.compile(p, format!("{loc}.repeat[{i}]"))?);
            }
            Iter::Repeat(paths)
        } else {
            Iter::Once
        };
        let mut columns = Vec::new();
        if let Some(cols) = obj.get("column") {
            let cols = cols
                .as_array()
                .ok_or_else(|| self.invalid(&format!("{loc}: 'column' must be an array")))?;
            for col in cols {
                let name = col.get("name").and_then(Value::as_str).ok_or_else(|| {
                    self.invalid(&format!("{loc}: a column needs a string 'name'"))
                })?;
                if !name.starts_with(|c: char| c.is_ascii_alphabetic())
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    return Err(self.invalid(&format!(
                        "column name '{name}' must match ^[A-Za-z][A-Za-z0-9_]*$"
                    )));
                }
                let path = col.get("path").and_then(Value::as_str).ok_or_else(|| {
                    self.invalid(&format!("column '{name}' needs a string 'path'"))
                })?;
                let collection = match col.get("collection") {
                    None | Some(Value::Null) => false,
                    Some(Value::Bool(b)) => *b,
                    Some(_) => {
                        return Err(self
                            .invalid(&format!("column '{name}': 'collection' must be a boolean")));
                    }
                };
                let fhir_type = col.get("type").and_then(Value::as_str).map(str::to_string);
                let ansi_type = col
                    .get("tag")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("ansi/type"))
                    .and_then(|t| t.get("value").and_then(Value::as_str))
                    .map(str::to_string);
                let compiled = self.compile(path, format!("column '{name}'"))?;
                columns.push((compiled, collection));
                self.columns.push(ColumnDef {
                    name: name.to_string(),
                    path: path.to_string(),
                    collection,
                    fhir_type,
                    ansi_type,
                });
            }
        }
        let mut selects = Vec::new();
        if let Some(ss) = obj.get("select") {
            let ss = ss
                .as_array()
                .ok_or_else(|| self.invalid(&format!("{loc}: 'select' must be an array")))?;
            for (i, s) in ss.iter().enumerate() {
                selects.push(self.select(s, &format!("{loc}.select[{i}]"))?);
            }
        }
        let mut union = Vec::new();
        if let Some(us) = obj.get("unionAll") {
            let us = us
                .as_array()
                .ok_or_else(|| self.invalid(&format!("{loc}: 'unionAll' must be an array")))?;
            let mut first: Option<Vec<String>> = None;
            for (i, u) in us.iter().enumerate() {
                let before = self.columns.len();
                union.push(self.select(u, &format!("{loc}.unionAll[{i}]"))?);
                let names: Vec<String> = self.columns[before..]
                    .iter()
                    .map(|c| c.name.clone())
                    .collect();
                match &first {
                    None => first = Some(names),
                    Some(f) => {
                        if *f != names {
                            return Err(self.invalid(&format!(
                                "{loc}.unionAll[{i}]: columns {names:?} differ from the first branch's {f:?} (names and order must match)"
                            )));
                        }
                        // Branches after the first share the first branch's output columns.
                        self.columns.truncate(before);
                    }
                }
            }
        }
        let union_width = union.first().map_or(0, |u: &Select| u.width);
        let width = columns.len() + selects.iter().map(|s| s.width).sum::<usize>() + union_width;
        Ok(Select {
            iter,
            columns,
            selects,
            union,
            width,
        })
    }
}
