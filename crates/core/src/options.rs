//! Chainable setters for the option structs ([`ConvertOptions`], [`ReadOptions`],
//! [`WriteOptions`], [`BundleOptions`]). The structs are `#[non_exhaustive]`: a user starts
//! from `Default` and sets what they need, so a new option is not a breaking change:
//!
//! ```
//! use flatfhir_core::{ConvertOptions, OnError, ReadOptions};
//! let opts = ConvertOptions::default()
//!     .out_dir("out")
//!     .threads(2)
//!     .on_error(OnError::Skip)
//!     .read(ReadOptions::default().max_line_bytes(1 << 20));
//! assert_eq!(opts.threads, 2);
//! ```
//!
//! The fields stay public for reading (and for assignment on a value one has).

use std::path::PathBuf;
use std::sync::Arc;

use crate::{
    BundleMode, BundleOptions, Compression, ConvertOptions, Dates, Decimals, Duplicates, OnError,
    OutputFormat, ReadOptions, SchemaDoc, WriteOptions,
};

/// One `pub fn field(self, value) -> Self` per listed field, documented by the field's name.
/// Fields under `into` take anything that converts (`out_dir("out")`); the others take the
/// type itself, so that `threads(2)` infers its integer type.
macro_rules! setters {
    ($ty:ident { $($field:ident: $t:ty),* $(,)? } $(into { $($ifield:ident: $it:ty),* $(,)? })?) => {
        impl $ty {
            $(
                #[doc = concat!("Sets [`", stringify!($ty), "`]'s `", stringify!($field), "` (see the field).")]
                #[must_use]
                pub fn $field(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
            $($(
                #[doc = concat!("Sets [`", stringify!($ty), "`]'s `", stringify!($ifield), "` (see the field).")]
                #[must_use]
                pub fn $ifield(mut self, value: impl Into<$it>) -> Self {
                    self.$ifield = value.into();
                    self
                }
            )*)?
        }
    };
}

setters!(ConvertOptions {
    exclude: Vec<String>,
    decimals: Decimals,
    dates: Dates,
    on_error: OnError,
    threads: usize,
    max_columns: usize,
    read: ReadOptions,
    write: WriteOptions,
    memory_budget: usize,
    spill_dir: Option<PathBuf>,
    schema: Option<Arc<SchemaDoc>>,
} into {
    out_dir: PathBuf,
    sep: String,
});

setters!(ReadOptions {
    max_line_bytes: usize,
    chunk_bytes: usize,
    chunk_rows: usize,
});

setters!(WriteOptions {
    format: OutputFormat,
    compression: Compression,
    row_group_rows: usize,
    row_group_input_bytes: u64,
});

setters!(BundleOptions {
    mode: BundleMode,
    resolve_references: bool,
    duplicates: Duplicates,
    temp_dir: Option<PathBuf>,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setters_set_their_field_and_keep_the_others() {
        let o = ConvertOptions::default()
            .sep(".")
            .threads(3)
            .spill_dir(Some(PathBuf::from("/tmp")));
        assert_eq!((o.sep.as_str(), o.threads), (".", 3));
        assert_eq!(o.spill_dir.as_deref(), Some(std::path::Path::new("/tmp")));
        assert_eq!(o.max_columns, crate::DEFAULT_MAX_COLUMNS);
        let w = WriteOptions::default().compression(Compression::None);
        assert_eq!(w.compression, Compression::None);
        assert_eq!(w.format, OutputFormat::Parquet);
    }
}
