//! Broker example (issue 6), phase 1: modules the server will call.
#![allow(dead_code, unused_imports)]
mod config;
mod log;
mod protocol;
fn main() {}
