//! Helpers shared by the test files in `bus/tests`; each file uses only some of them.
#![allow(dead_code)]

pub mod kbus;
pub mod scripted;
