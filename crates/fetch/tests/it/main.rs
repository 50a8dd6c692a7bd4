//! Integration tests: the client against the test server over 127.0.0.1, one module per area.

mod auth;
mod download;
mod kickoff;
mod poll;
mod resume;
mod search;
mod secrets;
mod story;
mod support;
mod tls;
