//! The test cluster itself: logical WAL level, a database per test.

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
