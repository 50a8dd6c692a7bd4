//! Utf8 columns widened to LargeUtf8 for pandas, without copying their text.
//!
//! pandas (3.x, or 2.x with `future.infer_string`) holds strings as `large_string` Arrow
//! arrays, so `pyarrow.Table.to_pandas` casts every `string` column itself, one Python-level
//! `pyarrow.compute.cast` call per column (about 14 µs each before any work: 1.5 ms of the
//! notebook's 106 text columns). [`large_strings`] does the same cast for a whole table in
//! one call: each column's offsets become 64-bit, its text and validity buffers are shared, so
//! the strings (and the DataFrame pandas builds from them) are exactly those of the cast.

use std::sync::Arc;

use arrow_array::ffi_stream::RecordBatchStreamReader;
use arrow_array::{
    Array, ArrayRef, LargeStringArray, RecordBatch, RecordBatchIterator, RecordBatchOptions,
    RecordBatchReader, StringArray,
};
use arrow_buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow_pyarrow::{FromPyArrow, IntoPyArrow};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use pyo3::prelude::*;

/// `s` as a LargeUtf8 array: the same values, validity and text buffer, with its offsets
/// (`offsets`, already widened to 64 bits) taken from `wide` at `at`.
#[allow(unsafe_code)]
fn widen(s: &StringArray, wide: &Buffer, at: usize) -> LargeStringArray {
    let offsets = ScalarBuffer::<i64>::new(wide.clone(), at, s.offsets().len());
    // SAFETY: `offsets` are those of `s` (a valid Utf8 array: monotonic, within its value
    // buffer, on character boundaries) converted exactly to i64 (see `widen_batch`), and the
    // value buffer and nulls are `s`'s own, so every value is the same valid UTF-8 slice as
    // in `s`. `new_unchecked` only skips validating that again.
    unsafe {
        LargeStringArray::new_unchecked(
            OffsetBuffer::new_unchecked(offsets),
            s.values().clone(),
            s.nulls().cloned(),
        )
    }
}

/// The schema with every top-level Utf8 field as LargeUtf8 (names, nullability and metadata
/// kept).
fn widened_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Arc<Field>> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.data_type() == &DataType::Utf8 {
                Arc::new(f.as_ref().clone().with_data_type(DataType::LargeUtf8))
            } else {
                Arc::clone(f)
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

fn widen_batch(b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let strings: Vec<Option<&StringArray>> = b
        .columns()
        .iter()
        .map(|c| c.as_any().downcast_ref::<StringArray>())
        .collect();
    // Every string column's offsets in one allocation (one per batch, not one per column).
    let total: usize = strings.iter().flatten().map(|s| s.offsets().len()).sum();
    let mut all: Vec<i64> = Vec::with_capacity(total);
    for s in strings.iter().flatten() {
        all.extend(s.offsets().iter().map(|&o| i64::from(o)));
    }
    let wide = Buffer::from_vec(all);
    let mut at = 0;
    let columns: Vec<ArrayRef> = b
        .columns()
        .iter()
        .zip(&strings)
        .map(|(c, s)| match s {
            Some(s) => {
                let a = Arc::new(widen(s, &wide, at)) as ArrayRef;
                at += s.offsets().len();
                a
            }
            None => Arc::clone(c),
        })
        .collect();
    let options = RecordBatchOptions::default().with_row_count(Some(b.num_rows()));
    RecordBatch::try_new_with_options(Arc::clone(schema), columns, &options)
}

/// `table` (any object with `__arrow_c_stream__`, e.g. a `pyarrow.Table`) with its top-level
/// `string` columns as `large_string`, as a `pyarrow.Table` with the same chunks. Other
/// columns are passed through untouched.
#[pyfunction]
pub(crate) fn large_strings<'py>(
    py: Python<'py>,
    table: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let reader = RecordBatchStreamReader::from_pyarrow_bound(table)?;
    let schema = widened_schema(&reader.schema());
    let widened = py.detach(|| {
        reader
            .map(|b| b.and_then(|b| widen_batch(&b, &schema)))
            .collect::<Result<Vec<_>, ArrowError>>()
    });
    let batches = widened
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("large_strings: {e}")))?;
    let out: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
        batches.into_iter().map(Ok),
        schema,
    ));
    out.into_pyarrow(py)?
        .call_method0(pyo3::intern!(py, "read_all"))
}
