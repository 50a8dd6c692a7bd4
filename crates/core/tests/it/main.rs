//! Integration tests of the flatten engine as a library.

mod numbering;
mod property;
mod read;
mod shard;
