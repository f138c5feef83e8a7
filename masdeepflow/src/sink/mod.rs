//! Where events go: lines on stdout, as JSON ([`json`]) or text ([`text`]),
//! written by the output thread ([`stdout`]).
pub mod json;
pub mod stdout;
pub mod text;
