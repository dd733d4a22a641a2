//! Orphan decisions and the claim protocol (placeholder)
