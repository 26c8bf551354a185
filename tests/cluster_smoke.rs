//! The test cluster itself: logical WAL level, a database per test, and the PostgreSQL major
//! that `TIDEMARK_TEST_PG_MAJOR` asked for.

use tidemark::testing::PgCluster;

#[tokio::test]
async fn cluster_runs_with_logical_wal_level() {
    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let db = cluster
        .create_database("smoke")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let client = db.connect().await.unwrap_or_else(|e| panic!("{e}"));
    let row = client
        .query_one("SHOW wal_level", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(row.get::<_, String>(0), "logical");
}

/// With `TIDEMARK_TEST_PG_MAJOR` set, the suite runs on that major and no other: a run meant
/// for PostgreSQL 13 that silently fell back to Debian's 15 would prove nothing about 13.
#[tokio::test]
async fn the_server_is_the_major_asked_for() {
    let cluster = PgCluster::shared().unwrap_or_else(|e| panic!("{e}"));
    let admin = cluster.admin().await.unwrap_or_else(|e| panic!("{e}"));
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(
        cluster.major(),
        Some(u32::try_from(version / 10000).unwrap_or(0)),
        "postgres --version and the running server disagree"
    );
    match std::env::var("TIDEMARK_TEST_PG_MAJOR") {
        Ok(major) if !major.is_empty() => {
            assert_eq!(
                version / 10000,
                major.parse::<i32>().unwrap_or(-1),
                "the server is PostgreSQL {version}, not the {major} TIDEMARK_TEST_PG_MAJOR asked for"
            );
        }
        _ => assert!(version >= 130000, "PostgreSQL {version} is older than 13"),
    }
}
