//! The replication client against a real server: every authentication method, TLS in each
//! sslmode, and clear errors for wrong settings.

use crate::common;

use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tidemark::pg::{ConnectionError, ConnectionSettings, ReplicationConnection, connect_sql};
use tidemark::testing::PgCluster;

fn settings(url: &str) -> ConnectionSettings {
    ConnectionSettings::from_url(url).unwrap_or_else(|e| panic!("{url}: {e}"))
}

async fn replication_connect(url: &str) -> Result<ReplicationConnection, ConnectionError> {
    let mut conn = ReplicationConnection::connect(&settings(url)).await?;
    conn.identify_system().await?;
    Ok(conn)
}

#[tokio::test]
async fn every_password_method_authenticates_and_wrong_passwords_are_clear() {
    let (db, client) = database("auth").await;
    // pg_hba.conf of the test cluster: tm_md5 → md5, tm_scram → scram-sha-256,
    // tm_password → password (cleartext), everyone else → trust.
    exec(
        &client,
        "DO $$ BEGIN
           IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tm_md5') THEN
             SET LOCAL password_encryption = 'md5';
             CREATE ROLE tm_md5 LOGIN REPLICATION PASSWORD 'md5 pass';
             SET LOCAL password_encryption = 'scram-sha-256';
             CREATE ROLE tm_scram LOGIN REPLICATION PASSWORD 'scr@m/pass';
             CREATE ROLE tm_password LOGIN REPLICATION PASSWORD 'plain';
           END IF;
         END $$;",
    )
    .await;
    let port = db.cluster.port;
    let name = &db.name;
    for url in [
        format!("postgres://tm_md5:md5%20pass@127.0.0.1:{port}/{name}?sslmode=disable"),
        format!("postgres://tm_scram:scr%40m%2Fpass@127.0.0.1:{port}/{name}?sslmode=disable"),
        format!("postgres://tm_password:plain@127.0.0.1:{port}/{name}?sslmode=disable"),
        format!("postgres://postgres@127.0.0.1:{port}/{name}?sslmode=disable"),
    ] {
        let conn = replication_connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(conn.server_version() >= 100000);
    }
    connect_sql(&settings(&format!(
        "postgres://tm_scram:scr%40m%2Fpass@127.0.0.1:{port}/{name}?sslmode=disable"
    )))
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    let wrong = format!("postgres://tm_scram:wrong-secret@127.0.0.1:{port}/{name}?sslmode=disable");
    let error = replication_connect(&wrong)
        .await
        .err()
        .unwrap_or_else(|| panic!("wrong password accepted"));
    let text = error.to_string();
    assert!(
        text.contains("password authentication failed for user \"tm_scram\""),
        "{text}"
    );
    assert!(!text.contains("wrong-secret"), "password leaked: {text}");
    assert!(
        !error.is_transient(),
        "a wrong password is not worth retrying"
    );
    assert_eq!(error.sqlstate(), Some("28P01"));

    let missing = format!("postgres://tm_md5@127.0.0.1:{port}/{name}?sslmode=disable");
    let error = replication_connect(&missing)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("asks for a password for user \"tm_md5\" and none was given"),
        "{error}"
    );
}

#[tokio::test]
async fn unreachable_server_and_unknown_database_are_clear() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = free.local_addr().map(|a| a.port()).unwrap_or(1);
    drop(free);
    let error = replication_connect(&format!(
        "postgres://u@127.0.0.1:{port}/db?sslmode=disable&connect_timeout=2"
    ))
    .await
    .err()
    .unwrap_or_else(|| panic!("connected to nothing"));
    assert!(
        error
            .to_string()
            .contains("is PostgreSQL running and listening there?"),
        "{error}"
    );
    assert!(error.is_transient());

    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let error = replication_connect(&cluster.url("postgres", "no_such_db"))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("database \"no_such_db\" does not exist"),
        "{error}"
    );
}

#[tokio::test]
async fn tls_in_every_sslmode() {
    let (db, client) = database("tls").await;
    let cluster = db.cluster;
    let ca_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap_or_else(|e| panic!("{e}"));
    let server_key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let server_cert = CertificateParams::new(vec!["localhost".to_string()])
        .and_then(|p| p.signed_by(&server_key, &ca))
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = cluster
        .install_file("server.crt", server_cert.pem().as_bytes(), 0o644)
        .unwrap_or_else(|e| panic!("{e}"));
    let key = cluster
        .install_file("server.key", server_key.serialize_pem().as_bytes(), 0o600)
        .unwrap_or_else(|e| panic!("{e}"));
    let ca_file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(ca_file.path(), ca.pem()).unwrap_or_else(|e| panic!("{e}"));
    let ca_path = ca_file.path().display().to_string();
    // ALTER SYSTEM cannot run inside the implicit transaction of a multi-statement query.
    exec(
        &client,
        &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
    )
    .await;
    exec(
        &client,
        &format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
    )
    .await;
    exec(&client, "ALTER SYSTEM SET ssl = on").await;
    exec(&client, "SELECT pg_reload_conf()").await;
    let port = cluster.port;
    let name = &db.name;
    let url = |host: &str, mode: &str, root: bool| {
        let root = if root {
            format!("&sslrootcert={ca_path}")
        } else {
            String::new()
        };
        format!("postgres://postgres@{host}:{port}/{name}?sslmode={mode}{root}")
    };
    let require = url("127.0.0.1", "require", false);
    wait_until(
        "ssl to be on after reload",
        Duration::from_secs(10),
        || async { replication_connect(&require).await.is_ok() },
    )
    .await;

    for ok in [
        url("127.0.0.1", "require", false),
        url("127.0.0.1", "prefer", false),
        url("127.0.0.1", "verify-ca", true),
        url("localhost", "verify-full", true),
    ] {
        let mut conn = replication_connect(&ok)
            .await
            .unwrap_or_else(|e| panic!("{ok}: {e}"));
        let rows = conn
            .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            rows,
            vec![vec![Some("t".to_string())]],
            "{ok} is not encrypted"
        );
    }
    let sql = connect_sql(&settings(&url("localhost", "verify-full", true)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let encrypted: bool = sql
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert!(encrypted);

    let wrong_name = replication_connect(&url("127.0.0.1", "verify-full", true))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        wrong_name.contains("certificate not valid for name \"127.0.0.1\""),
        "{wrong_name}"
    );
    let untrusted = replication_connect(&url("localhost", "verify-full", false))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(untrusted.contains("TLS"), "{untrusted}");
    exec(&client, "ALTER SYSTEM RESET ssl").await;
    exec(&client, "SELECT pg_reload_conf()").await;
}

#[tokio::test]
async fn require_against_a_server_without_tls_is_refused() {
    let cluster = PgCluster::start_with(&[("ssl", "off")]).unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=require",
        cluster.port
    );
    let error = replication_connect(&url)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("does not accept TLS connections but sslmode requires TLS"),
        "{error}"
    );
    let prefer = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=prefer",
        cluster.port
    );
    replication_connect(&prefer)
        .await
        .unwrap_or_else(|e| panic!("prefer must fall back to plain: {e}"));
}

#[tokio::test]
async fn replication_slot_with_an_exported_snapshot() {
    let (db, client) = database("export").await;
    exec(
        &client,
        "CREATE TABLE before_slot (id int PRIMARY KEY); INSERT INTO before_slot VALUES (1);",
    )
    .await;
    let mut conn = replication_connect(&db.url())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let created = conn
        .create_logical_slot(
            "exported",
            tidemark::pg::replication::SlotSnapshot::Export,
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(created.slot_name, "exported");
    let snapshot = created
        .snapshot_name
        .unwrap_or_else(|| panic!("no snapshot exported"));
    // A change after the slot's consistent point is invisible in the exported snapshot.
    exec(&client, "INSERT INTO before_slot VALUES (2)").await;
    let reader = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    exec(
        &reader,
        &format!("BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{snapshot}';"),
    )
    .await;
    let count: i64 = reader
        .query_one("SELECT count(*) FROM before_slot", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(
        count, 1,
        "the snapshot sees exactly the rows before the slot"
    );
    let confirmed: String = client
        .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'exported'", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(confirmed, created.consistent_point.to_string());
    exec(&reader, "COMMIT").await;
    drop(conn);
}

/// Several hosts, as libpq takes them, with `target_session_attrs=read-write`: a host that
/// does not answer and a server that accepts only reads (a stand-in for a standby:
/// `default_transaction_read_only = on`) are skipped, in order, by the replication
/// connection, the SQL connections and the whole reader; with no writable host left the
/// error names each host and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_hosts_and_read_write_find_the_primary() {
    let (db, client) = database("multihost").await;
    exec(&client, "CREATE TABLE mh (id int PRIMARY KEY)").await;
    let primary_port = db.cluster.port;
    let reader_only = PgCluster::start_with(&[]).unwrap_or_else(|e| panic!("{e}"));
    let admin = reader_only.admin().await.unwrap_or_else(|e| panic!("{e}"));
    exec(&admin, &format!("CREATE DATABASE \"{}\"", db.name)).await;
    exec(
        &admin,
        "ALTER SYSTEM SET default_transaction_read_only = on",
    )
    .await;
    exec(&admin, "SELECT pg_reload_conf()").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dead = tidemark::testing::free_port().unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{},127.0.0.1:{primary_port}/{}?sslmode=disable&connect_timeout=2&target_session_attrs=read-write",
        reader_only.port, db.name
    );
    let mut repl = ReplicationConnection::connect(&settings(&url))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port = repl
        .simple_query("SHOW port")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        port[0][0].as_deref(),
        Some(primary_port.to_string().as_str())
    );
    let _ = repl.close().await;
    let sql = connect_sql(&settings(&url))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let port: String = sql
        .query_one("SHOW port", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(port, primary_port.to_string());

    // The reader, given every host, streams from the one that accepts writes.
    let mut config = config(&db, "multihost", "");
    config.source.url = url.clone();
    let mut reader = Running::start(config, &client).await;
    exec(&client, "INSERT INTO mh VALUES (1)").await;
    let events = reader.wait_for_events(1).await;
    assert_eq!(events.len(), 1);
    reader.stop().await;

    // No writable host: each is named with its reason.
    let only_readers = format!(
        "postgres://postgres@127.0.0.1:{dead},127.0.0.1:{}/{}?sslmode=disable&connect_timeout=2&target_session_attrs=read-write",
        reader_only.port, db.name
    );
    let Err(error) = ReplicationConnection::connect(&settings(&only_readers)).await else {
        panic!("connected without a writable host");
    };
    let text = error.to_string();
    assert!(
        text.contains("accepts only reads") && text.contains(&format!("127.0.0.1:{dead}")),
        "{text}"
    );
    assert!(
        error.is_transient(),
        "a failover in progress is waited out: {text}"
    );
}
