//! Placeholder: this backend lands with its own issue.
