//! Integration tests of the flatten engine as a library.

mod bundle;
mod numbering;
mod property;
mod read;
mod shard;
mod streamed;
