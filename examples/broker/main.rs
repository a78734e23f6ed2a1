//! Broker example (issue 6), phase 1: modules the server will call.
#![allow(dead_code)]
mod config;
mod protocol;
fn main() {}
