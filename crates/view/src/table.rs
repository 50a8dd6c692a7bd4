//! Output tables: column types (declared by `type` / `ansi/type`, else inferred from the
//! values like the flatten engine does) and Arrow record batches built from view rows.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, ListBuilder, StringBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::rows::{Row, Scalar};
use crate::view::{ColumnDef, View};

/// The Arrow type of a column's values (list columns hold lists of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueType {
    /// `Boolean`
    Boolean,
    /// `Int64`
    Int64,
    /// `Float64`
    Float64,
    /// `Utf8` (strings, dates, codes; complex values as JSON text)
    Utf8,
}

impl ValueType {
    fn data_type(self) -> DataType {
        match self {
            ValueType::Boolean => DataType::Boolean,
            ValueType::Int64 => DataType::Int64,
            ValueType::Float64 => DataType::Float64,
            ValueType::Utf8 => DataType::Utf8,
        }
    }
}

/// The type a column declares: the `ansi/type` tag first, then the FHIR `type`.
pub fn declared_type(col: &ColumnDef) -> Option<ValueType> {
    if let Some(a) = &col.ansi_type {
        let base = a
            .split(['(', ' '])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        return Some(match base.as_str() {
            "BOOLEAN" | "BOOL" => ValueType::Boolean,
            "INTEGER" | "INT" | "BIGINT" | "SMALLINT" | "TINYINT" => ValueType::Int64,
            "DECIMAL" | "NUMERIC" | "DOUBLE" | "REAL" | "FLOAT" => ValueType::Float64,
            _ => ValueType::Utf8,
        });
    }
    col.fhir_type.as_deref().map(|t| match t {
        "boolean" => ValueType::Boolean,
        "integer" | "unsignedInt" | "positiveInt" | "integer64" => ValueType::Int64,
        "decimal" => ValueType::Float64,
        _ => ValueType::Utf8,
    })
}

/// Kinds of values seen in a column, for type inference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u8);

const K_INT: u8 = 1;
const K_FLOAT: u8 = 2;
const K_BOOL: u8 = 4;
const K_OTHER: u8 = 8;

impl Kinds {
    /// Records one value.
    pub fn observe(&mut self, v: Scalar<'_>) {
        self.0 |= match v {
            // `{}` and `[]` carry no value, as in the flatten engine.
            Scalar::Json(crate::json::Json::Object(m)) if m.is_empty() => 0,
            Scalar::Json(crate::json::Json::Array(a)) if a.is_empty() => 0,
            Scalar::Int(_) => K_INT,
            // A decimal stays one even when whole (`1.0`), as in the flatten engine.
            Scalar::Decimal(_) => K_FLOAT,
            Scalar::Bool(_) => K_BOOL,
            _ => K_OTHER,
        };
    }

    /// Records every value of a row's cell.
    pub fn observe_cell(&mut self, cell: &crate::rows::Cell<'_>) {
        if cell.is_list() {
            for v in cell.list().into_iter().flatten() {
                self.observe(v);
            }
        } else if let Some(v) = cell.scalar() {
            self.observe(v);
        }
    }

    /// Merges kinds seen elsewhere.
    pub fn merge(&mut self, other: Kinds) {
        self.0 |= other.0;
    }

    /// The inferred type: only integers → Int64; integers and fractions → Float64; only
    /// booleans → Boolean; anything else (or nothing) → Utf8.
    pub fn value_type(self) -> ValueType {
        match self.0 {
            K_INT => ValueType::Int64,
            K_FLOAT | 3 => ValueType::Float64,
            K_BOOL => ValueType::Boolean,
            _ => ValueType::Utf8,
        }
    }
}

/// The Arrow schema of a view's output given each column's value type; collection columns
/// become `List<type>`.
pub fn schema(view: &View, types: &[ValueType]) -> SchemaRef {
    let fields: Vec<Field> = view
        .columns()
        .iter()
        .zip(types)
        .map(|(c, t)| {
            let dt = if c.collection {
                DataType::List(Arc::new(Field::new("item", t.data_type(), true)))
            } else {
                t.data_type()
            };
            Field::new(&c.name, dt, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

enum Col {
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    List(ListBuilder<Box<dyn ArrayBuilder>>, ValueType),
}

impl std::fmt::Debug for Col {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Col")
    }
}

fn as_bool(v: Scalar<'_>) -> Option<bool> {
    match v {
        Scalar::Bool(b) => Some(b),
        Scalar::Str("true") => Some(true),
        Scalar::Str("false") => Some(false),
        _ => None,
    }
}

fn as_int(v: Scalar<'_>) -> Option<i64> {
    match v {
        Scalar::Int(i) => Some(i),
        Scalar::Decimal(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(d as i64),
        Scalar::Str(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_float(v: Scalar<'_>) -> Option<f64> {
    match v {
        Scalar::Int(i) => Some(i as f64),
        Scalar::Decimal(d) => Some(d),
        Scalar::Str(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_string(v: Scalar<'_>, buf: &mut String) -> bool {
    use std::fmt::Write;
    buf.clear();
    match v {
        Scalar::Str(s) => buf.push_str(s),
        Scalar::Bool(b) => {
            let _ = write!(buf, "{b}");
        }
        Scalar::Int(i) => {
            let _ = write!(buf, "{i}");
        }
        Scalar::Decimal(d) => {
            let _ = write!(buf, "{d}");
        }
        Scalar::Json(j) => buf.push_str(&j.to_serde().to_string()),
    }
    true
}

fn scalar_builder(t: ValueType) -> Box<dyn ArrayBuilder> {
    match t {
        ValueType::Boolean => Box::new(BooleanBuilder::new()),
        ValueType::Int64 => Box::new(Int64Builder::new()),
        ValueType::Float64 => Box::new(Float64Builder::new()),
        ValueType::Utf8 => Box::new(StringBuilder::new()),
    }
}

/// Builds Arrow record batches from view rows, converting values to the column types.
/// Values that do not fit a declared type (e.g. `"abc"` in an integer column) become null and
/// are counted in [`BatchBuilder::mismatches`].
#[derive(Debug)]
pub struct BatchBuilder {
    schema: SchemaRef,
    cols: Vec<Col>,
    rows: usize,
    mismatches: u64,
    buf: String,
}

impl BatchBuilder {
    /// A builder for `schema` (from [`schema`]) with the given value types.
    pub fn new(schema: SchemaRef, types: &[ValueType], collection: &[bool]) -> Self {
        let cols = types
            .iter()
            .zip(collection)
            .map(|(t, c)| {
                if *c {
                    let field = Arc::new(Field::new("item", t.data_type(), true));
                    Col::List(ListBuilder::new(scalar_builder(*t)).with_field(field), *t)
                } else {
                    match t {
                        ValueType::Boolean => Col::Bool(BooleanBuilder::new()),
                        ValueType::Int64 => Col::Int(Int64Builder::new()),
                        ValueType::Float64 => Col::Float(Float64Builder::new()),
                        ValueType::Utf8 => Col::Str(StringBuilder::new()),
                    }
                }
            })
            .collect();
        Self {
            schema,
            cols,
            rows: 0,
            mismatches: 0,
            buf: String::new(),
        }
    }

    /// Rows appended since the last [`finish`](Self::finish).
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no rows are pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Values that did not fit their column's type and were written as null.
    pub fn mismatches(&self) -> u64 {
        self.mismatches
    }

    /// Appends one row (a cell per column, in column order).
    pub fn append(&mut self, row: &Row<'_>) {
        self.rows += 1;
        for (i, cell) in row.iter().enumerate().take(self.cols.len()) {
            self.append_cell(i, cell);
        }
    }

    /// Appends the cell of column `i` of the row being appended.
    #[inline]
    fn append_cell(&mut self, i: usize, cell: &crate::rows::Cell<'_>) {
        {
            let col = &mut self.cols[i];
            match col {
                Col::List(lb, t) => {
                    let values = cell.list();
                    let inner = lb.values();
                    for v in values {
                        match v {
                            Some(v) => {
                                if !push_any(inner.as_any_mut(), *t, v, &mut self.buf) {
                                    self.mismatches += 1;
                                }
                            }
                            None => push_null(inner.as_any_mut(), *t),
                        }
                    }
                    lb.append(!cell.is_null());
                }
                Col::Bool(b) => {
                    let v = cell.scalar();
                    let x = v.and_then(as_bool);
                    if v.is_some() && x.is_none() {
                        self.mismatches += 1;
                    }
                    b.append_option(x);
                }
                Col::Int(b) => {
                    let v = cell.scalar();
                    let x = v.and_then(as_int);
                    if v.is_some() && x.is_none() {
                        self.mismatches += 1;
                    }
                    b.append_option(x);
                }
                Col::Float(b) => {
                    let v = cell.scalar();
                    let x = v.and_then(as_float);
                    if v.is_some() && x.is_none() {
                        self.mismatches += 1;
                    }
                    b.append_option(x);
                }
                Col::Str(b) => match cell.scalar() {
                    // A string as it is, not copied into the buffer first.
                    Some(Scalar::Str(s)) => b.append_value(s),
                    Some(v) if as_string(v, &mut self.buf) => b.append_value(&self.buf),
                    _ => b.append_null(),
                },
            }
        }
    }

    /// Takes the pending rows as a record batch.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .cols
            .iter_mut()
            .map(|c| match c {
                Col::Bool(b) => Arc::new(b.finish()) as ArrayRef,
                Col::Int(b) => Arc::new(b.finish()) as ArrayRef,
                Col::Float(b) => Arc::new(b.finish()) as ArrayRef,
                Col::Str(b) => Arc::new(b.finish()) as ArrayRef,
                Col::List(b, _) => Arc::new(b.finish()) as ArrayRef,
            })
            .collect();
        self.rows = 0;
        RecordBatch::try_new(self.schema.clone(), arrays).map_err(Error::Batch)
    }
}

impl crate::stream::Sink for BatchBuilder {
    fn rows(&mut self, rows: &[Row<'_>]) {
        for row in rows {
            self.append(row);
        }
    }

    /// A streamed line's cells go to the columns as they are made, with no rows built.
    fn streamed(&mut self, plan: &crate::stream::Plan, values: &crate::stream::Values<'_>) {
        let width = plan.width().min(self.cols.len());
        plan.each_row(values, |item| {
            self.rows += 1;
            for i in 0..width {
                if plan.is_collection(i) {
                    let js: Vec<_> = plan
                        .list_of(values, i, item)
                        .filter_map(|k| values.json(values.list_val(k)))
                        .collect();
                    self.append_cell(i, &crate::stream::list_cell(&js));
                    continue;
                }
                let v = plan.slot(values, i, item);
                // A string into a string column as it is: what its cell gives.
                if let Col::Str(b) = &mut self.cols[i]
                    && let Some(s) = values.str(v)
                {
                    b.append_value(s);
                    continue;
                }
                let j = values.json(v);
                self.append_cell(i, &crate::stream::one_cell(&j));
            }
        });
    }
}

/// Appends `v` to a type-erased scalar builder; `false` when it did not fit (null appended).
fn push_any(b: &mut dyn std::any::Any, t: ValueType, v: Scalar<'_>, buf: &mut String) -> bool {
    match t {
        ValueType::Boolean => {
            let x = as_bool(v);
            if let Some(b) = b.downcast_mut::<BooleanBuilder>() {
                b.append_option(x);
            }
            x.is_some()
        }
        ValueType::Int64 => {
            let x = as_int(v);
            if let Some(b) = b.downcast_mut::<Int64Builder>() {
                b.append_option(x);
            }
            x.is_some()
        }
        ValueType::Float64 => {
            let x = as_float(v);
            if let Some(b) = b.downcast_mut::<Float64Builder>() {
                b.append_option(x);
            }
            x.is_some()
        }
        ValueType::Utf8 => {
            as_string(v, buf);
            if let Some(b) = b.downcast_mut::<StringBuilder>() {
                b.append_value(buf.as_str());
            }
            true
        }
    }
}

/// Appends a null item to a list column's values (an item without a value).
fn push_null(b: &mut dyn std::any::Any, t: ValueType) {
    match t {
        ValueType::Boolean => {
            if let Some(b) = b.downcast_mut::<BooleanBuilder>() {
                b.append_null();
            }
        }
        ValueType::Int64 => {
            if let Some(b) = b.downcast_mut::<Int64Builder>() {
                b.append_null();
            }
        }
        ValueType::Float64 => {
            if let Some(b) = b.downcast_mut::<Float64Builder>() {
                b.append_null();
            }
        }
        ValueType::Utf8 => {
            if let Some(b) = b.downcast_mut::<StringBuilder>() {
                b.append_null();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch of `lines` under `view`: streamed lines' cells appended as they are made
    /// (as views run), or through built rows.
    fn batch(view: &View, lines: &[&str], direct: bool) -> RecordBatch {
        let types: Vec<ValueType> = view
            .columns()
            .iter()
            .map(|c| declared_type(c).unwrap_or(ValueType::Utf8))
            .collect();
        let collection: Vec<bool> = view.columns().iter().map(|c| c.collection).collect();
        let mut b = BatchBuilder::new(schema(view, &types), &types, &collection);
        for line in lines {
            if direct {
                view.line_into(line, &String::new, &mut b).unwrap();
            } else {
                view.rows_for_line(line, &String::new, &mut |rows| {
                    for row in rows {
                        b.append(row);
                    }
                })
                .unwrap();
            }
        }
        b.finish().unwrap()
    }

    /// A streamed line's cells appended straight to the columns give the batch its rows
    /// give: the benchmark views, `forEachOrNull`, collections and declared types.
    #[test]
    fn streamed_cells_append_like_rows() {
        let mut views = vec![
            View::from_json_str(include_str!("../../../benches/views/obs4.json"), "obs4").unwrap(),
            View::from_json_str(include_str!("../../../benches/views/bp10.json"), "bp10").unwrap(),
        ];
        views.push(
            View::from_json(
                &serde_json::json!({"resource": "Observation", "select": [
                    {"column": [{"name": "codes", "path": "code.coding.code", "collection": true},
                                {"name": "v", "path": "valueQuantity.value", "type": "integer"}]},
                    {"forEachOrNull": "component", "column": [
                        {"name": "cv", "path": "valueQuantity.value"},
                        {"name": "ok", "path": "flag", "type": "boolean"}]}]}),
                "x",
            )
            .unwrap(),
        );
        let lines = [
            r#"{"resourceType":"Observation","id":"a","status":"final","code":{"coding":[{"code":"1"},{"code":"2"}]},"subject":{"reference":"P/1"},"effectiveDateTime":"2020","valueQuantity":{"value":1.50}}"#,
            r#"{"resourceType":"Observation","id":"b","code":{"coding":[{"code":"3","display":"d"}]},"component":[{"code":{"coding":[{"code":"c1"}]},"valueQuantity":{"value":2,"unit":"u","code":"uc"},"flag":true},{"valueQuantity":{"value":"x"},"flag":"no"}]}"#,
            r#"{"resourceType":"Patient","id":"p"}"#,
            r#"{"resourceType":"Observation","id":"c","valueQuantity":{"value":12345678901234567890.5},"subject":{"reference":"P/é"}}"#,
            r#"{"resourceType":"Observation","id":"d","_status":{"id":"s"},"valueString":"g"}"#,
            // Escaped strings (copied unescaped) next to plain ones, in and out of `forEach`.
            r#"{"resourceType":"Observation","id":"e\"q","status":"f","code":{"coding":[{"code":"a\u0041"},{"code":"b\n"}]},"component":[{"code":{"coding":[{"code":"x\ty","display":"\u00b5"}]},"valueQuantity":{"value":-1e2,"unit":"\/g","code":"ok"},"flag":false},{"code":{"coding":[{"code":"z"}]}}]}"#,
        ];
        for v in &views {
            assert!(v.path_kinds().iter().all(|(_, _, k)| k.label() == "stream"));
            let direct = batch(v, &lines, true);
            assert!(direct.num_rows() > 0, "{}", v.name());
            assert_eq!(direct, batch(v, &lines, false), "{}", v.name());
        }
    }

    #[test]
    fn inference_follows_the_flatten_engine() {
        let infer = |vals: &[Scalar<'_>]| {
            let mut k = Kinds::default();
            for v in vals {
                k.observe(*v);
            }
            k.value_type()
        };
        assert_eq!(infer(&[Scalar::Int(1), Scalar::Int(2)]), ValueType::Int64);
        assert_eq!(
            infer(&[Scalar::Int(1), Scalar::Decimal(1.0)]),
            ValueType::Float64
        );
        assert_eq!(infer(&[Scalar::Bool(true)]), ValueType::Boolean);
        assert_eq!(
            infer(&[Scalar::Bool(true), Scalar::Int(1)]),
            ValueType::Utf8
        );
        assert_eq!(infer(&[Scalar::Str("x"), Scalar::Int(1)]), ValueType::Utf8);
        assert_eq!(infer(&[]), ValueType::Utf8);
    }
}
