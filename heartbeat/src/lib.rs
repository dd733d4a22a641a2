//! Facade (placeholder)
