//! The conformance suite: one set of test functions that every heartbeat store runs.
//!
//! A backend author calls [`store_conformance!`] with an async factory that returns a
//! store (or `None` when its server is not available, see [`support::require`]), and gets
//! one `#[tokio::test]` per behaviour. The functions are also public, to call one by one.
//!
//! Two levels are checked:
//! - [`kv`]: the key-value contract of [`heartbeat_core::Store`] (missing keys, versions,
//!   conflicts, create-if-absent, conditional delete, TTL, bulk reads, odd keys, large values);
//! - [`protocol`]: the heartbeat protocol on top of it (join, beat, leave, prune,
//!   concurrent joins, restart with a new incarnation).
//!
//! Every function works under its own random key prefix, so tests can share one server
//! and run in parallel. Waiting is done with `tokio::time::sleep`, which is instant on a
//! paused runtime (memory store) and real time against a real server.
#![forbid(unsafe_code)]
// A test library: panicking with a message is how it reports a failed check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod kv;
pub mod protocol;
pub mod support;

use std::sync::Arc;

use heartbeat_core::Store;

/// A store shared by a test.
pub type DynStore = Arc<dyn Store>;

/// A random prefix for one test's keys: `conformance/<name>/<random>/`.
pub fn namespace(name: &str) -> String {
    format!("conformance/{name}/{:016x}/", rand::random::<u64>())
}

/// Generates one test per conformance function.
///
/// `$factory` is an `async fn() -> Option<DynStore>`; `None` skips the test (the server is
/// missing outside CI). `$attr` is the test attribute, e.g.
/// `#[tokio::test(start_paused = true)]` for the memory store.
///
/// ```
/// use std::sync::Arc;
/// use heartbeat_conformance::{DynStore, store_conformance};
///
/// async fn memory_store() -> Option<DynStore> {
///     Some(Arc::new(heartbeat_memory::MemoryStore::new()))
/// }
///
/// store_conformance!(memory_store, #[tokio::test(start_paused = true)]);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! store_conformance {
    ($factory:path, #$attr:tt) => {
        $crate::store_conformance!(@tests $factory, $attr,
            kv::missing_keys_read_as_none,
            kv::round_trip_keeps_bytes,
            kv::versions_change_on_every_write,
            kv::stale_version_is_a_conflict,
            kv::create_only_if_absent,
            kv::conditional_delete_checks_the_version,
            kv::ttl_expires_values,
            kv::bulk_get_keeps_order_and_reports_missing,
            kv::odd_keys_round_trip,
            kv::large_value_round_trips,
            kv::index_operations_are_set_semantics,
            kv::index_prune_spares_present_members,
            protocol::join_shows_in_index_and_in_peer_views,
            protocol::concurrent_joins_all_land_in_the_index,
            protocol::beats_advance_sequence,
            protocol::leave_removes_from_index_and_views,
            protocol::prune_removes_only_dead_ids,
            protocol::restart_with_new_incarnation_supersedes,
            protocol::records_are_seed_compatible,
        );
    };
    (@tests $factory:path, $attr:tt, $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #$attr
            async fn $name() {
                let Some(store) = $factory().await else { return };
                $crate::$module::$name(store).await;
            }
        )*
    };
}
