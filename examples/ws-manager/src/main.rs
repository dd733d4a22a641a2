//! Placeholder: the example lands with issue 6.
fn main() {}
