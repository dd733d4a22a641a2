//! Connecting: credentials from the URL, TLS with a private CA, Cluster seed lists, and
//! passwords kept out of `Debug` output and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use heartbeat_conformance::support::{redis, require};
use heartbeat_core::{DeleteMode, PutMode, Store};
use heartbeat_redis::{ConnectError, RedisConfig, RedisStore};

const PASSWORD: &str = "default-pw-9f2c";
const APP_PASSWORD: &str = "app-pw-71d3";

async fn round_trip(store: &RedisStore, key: &str) {
    let v = store
        .put(
            key,
            b"hello".to_vec(),
            PutMode::Create,
            Some(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let got = store.get(key).await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), &got.version), (&b"hello"[..], &v));
    store.delete(key, DeleteMode::IfVersion(v)).await.unwrap();
}

#[tokio::test]
async fn user_and_password_come_from_the_url_and_never_show() {
    let server = RedisServer::start_with_auth();
    let Some(server) = require("redis-server", server) else {
        return;
    };
    let port = server.port();

    // The default user with a password, and an ACL user with its own.
    for url in [
        format!("redis://:{PASSWORD}@127.0.0.1:{port}"),
        format!("redis://app:{APP_PASSWORD}@127.0.0.1:{port}/0"),
    ] {
        let store = RedisStore::connect(&url).await.unwrap();
        let debug = format!("{store:?} {store:#?} {:?}", store.config());
        assert!(
            !debug.contains(PASSWORD) && !debug.contains(APP_PASSWORD),
            "{debug}"
        );
        assert!(debug.contains("***"), "{debug}");
        store.ping().await.unwrap();
        round_trip(&store, "connect-test/auth").await;
    }

    // Wrong or missing credentials fail with an error that names the problem and not
    // the password.
    for url in [
        format!("redis://:wrong-{PASSWORD}@127.0.0.1:{port}"),
        format!("redis://app:wrong-{APP_PASSWORD}@127.0.0.1:{port}"),
    ] {
        let err = RedisStore::connect(&url).await.expect_err("bad password");
        let text = format!("{err} / {err:?}");
        assert!(
            !text.contains(PASSWORD) && !text.contains(APP_PASSWORD),
            "{text}"
        );
        assert!(matches!(err, ConnectError::Store { .. }), "{text}");
    }
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}")).await;
    match store {
        Err(e) => assert!(!e.to_string().contains(PASSWORD)),
        // Some client versions connect lazily and fail on first use.
        Ok(s) => assert!(s.ping().await.is_err()),
    }
}

struct RedisServer;

impl RedisServer {
    fn start_with_auth() -> Result<redis::RedisServer, String> {
        let password = format!(">{APP_PASSWORD}");
        redis::RedisServer::start_with(&[
            "--requirepass",
            PASSWORD,
            "--user",
            "app",
            "on",
            &password,
            "~*",
            "&*",
            "+@all",
        ])
    }
}

#[tokio::test]
async fn tls_with_a_private_ca() {
    let Some(server) = require("redis-server with TLS", redis::RedisServer::start_tls()) else {
        return;
    };
    let url = server.url();
    assert!(url.starts_with("rediss://"));
    let config = RedisConfig::from_url(&url)
        .unwrap()
        .tls_root_certificate(server.tls_ca_pem().unwrap());
    assert!(config.is_tls());
    let store = RedisStore::connect_with(config).await.unwrap();
    round_trip(&store, "connect-test/tls").await;

    // Without the CA the server's certificate is not trusted.
    let untrusted = RedisStore::connect_with(
        RedisConfig::from_url(&url)
            .unwrap()
            .connect_timeout(Duration::from_secs(2)),
    )
    .await;
    assert!(
        untrusted.is_err(),
        "a certificate from an unknown CA was accepted"
    );
}

#[tokio::test]
async fn cluster_from_a_seed_list_or_a_cluster_url() {
    let Some(cluster) = require("redis cluster", redis::shared_cluster()) else {
        return;
    };
    let from_list = RedisStore::connect_with(RedisConfig::cluster(cluster.seed_urls()).unwrap())
        .await
        .unwrap();
    // One seed node is enough: the client discovers the others.
    let one_seed = cluster.nodes()[1]
        .url()
        .replace("redis://", "redis+cluster://");
    let from_url = RedisStore::connect(&one_seed).await.unwrap();
    for (i, store) in [from_list, from_url].iter().enumerate() {
        assert!(store.config().is_cluster());
        // Keys spread over all three masters.
        for k in 0..20 {
            round_trip(store, &format!("connect-test/cluster/{i}/{k}")).await;
        }
    }
}

#[tokio::test]
async fn an_unreachable_server_is_reported_in_time() {
    let port = heartbeat_conformance::support::free_port().unwrap();
    let config = RedisConfig::from_url(&format!("redis://:pw-secret@127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_millis(300))
        .call_timeout(Duration::from_millis(300));
    let err = RedisStore::connect_with(config)
        .await
        .expect_err("nothing listens");
    let text = err.to_string();
    assert!(
        text.contains("could not connect") && !text.contains("pw-secret"),
        "{text}"
    );
}
