//! PgPair runs a real PostgreSQL 15 primary with a synchronous standby: commits are on the
//! standby when they return, wait while the standby is down, and the standby can be promoted.
//! Pg alone survives a crash.

use std::time::Duration;

use testkit::{Pg, PgPair, eventually};
use tokio_postgres::NoTls;

async fn connect(conninfo: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

async fn count(client: &tokio_postgres::Client, note: &str) -> i64 {
    client
        .query_one("select count(*) from t where note = $1", &[&note])
        .await
        .expect("count rows")
        .get(0)
}

#[tokio::test]
async fn commit_waits_for_the_sync_standby_and_the_standby_can_be_promoted() {
    let pair = PgPair::start().await.expect("start primary + sync standby");
    assert_eq!(
        pair.sync_state().await.expect("sync_state").as_deref(),
        Some("sync")
    );

    let primary = connect(&pair.primary_conninfo()).await;
    primary
        .batch_execute("create table t (id serial primary key, note text not null)")
        .await
        .expect("create table");
    primary
        .execute("insert into t (note) values ('one')", &[])
        .await
        .expect("insert");
    // remote_apply: once COMMIT returned, the row is visible on the standby.
    let standby = connect(&pair.standby_conninfo()).await;
    assert_eq!(count(&standby, "one").await, 1);
    assert_eq!(pair.replay_lag_bytes().await.expect("lag"), Some(0));
    drop(standby);

    // Standby down: a commit on the primary waits for it (SyncRep).
    pair.stop_standby().await.expect("stop standby");
    let conninfo = pair.primary_conninfo();
    let mut pending = tokio::spawn(async move {
        let client = connect(&conninfo).await;
        client
            .execute("insert into t (note) values ('two')", &[])
            .await
            .expect("insert two")
    });
    eventually(
        "the commit to wait on SyncRep",
        Duration::from_secs(20),
        || async {
            let row = primary
                .query_one(
                    "select count(*) from pg_stat_activity where wait_event = 'SyncRep'",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            match row.get::<_, i64>(0) {
                1 => Ok(()),
                n => Err(format!("{n} backends in SyncRep")),
            }
        },
    )
    .await
    .expect("commit waits for the standby");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut pending)
            .await
            .is_err(),
        "the commit must not return while the sync standby is down"
    );

    // Standby back: the commit returns and the row is on the standby.
    pair.start_standby().await.expect("start standby");
    let inserted = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("commit returns once the standby is back")
        .expect("insert task");
    assert_eq!(inserted, 1);
    let standby = connect(&pair.standby_conninfo()).await;
    assert_eq!(count(&standby, "two").await, 1);

    // Failover: the promoted standby takes writes and has every acknowledged row.
    pair.promote_standby().await.expect("promote");
    assert!(
        !pair
            .standby()
            .is_in_recovery()
            .await
            .expect("recovery state")
    );
    standby
        .execute("insert into t (note) values ('three')", &[])
        .await
        .expect("write to the promoted standby");
    assert_eq!(
        count(&standby, "one").await + count(&standby, "two").await,
        2
    );
    assert_eq!(count(&standby, "three").await, 1);
}

#[tokio::test]
async fn crashed_primary_leaves_every_acknowledged_row_on_the_standby() {
    let pair = PgPair::start().await.expect("start pair");
    let primary = pair.primary().connect().await.expect("connect primary");
    primary
        .batch_execute(
            "create table t (id serial primary key, note text not null);
             insert into t (note) select 'bulk' from generate_series(1, 500);",
        )
        .await
        .expect("write rows");
    assert_eq!(pair.replay_lag_bytes().await.expect("lag"), Some(0));

    pair.kill_primary().await.expect("crash the primary");
    assert!(!pair.primary().is_running());
    assert!(
        primary.simple_query("select 1").await.is_err(),
        "primary is gone"
    );
    pair.promote_standby().await.expect("promote the standby");
    let standby = pair.standby().connect().await.expect("connect standby");
    assert_eq!(count(&standby, "bulk").await, 500);

    // The crashed old primary starts again (crash recovery) on its own data.
    pair.start_primary()
        .await
        .expect("restart the crashed primary");
    assert!(pair.primary().is_running());
}

#[tokio::test]
async fn single_node_restarts_after_a_crash_and_a_stop() {
    let pg = Pg::start().await.expect("start single node");
    let client = pg.connect().await.expect("connect");
    client
        .batch_execute("create table t (note text); insert into t values ('kept');")
        .await
        .expect("write");
    pg.kill_server().await.expect("crash");
    pg.start_server().await.expect("start after crash");
    let client = pg.connect().await.expect("reconnect");
    assert_eq!(count(&client, "kept").await, 1);
    pg.stop_server().await.expect("stop");
    assert!(!pg.is_running());
    pg.start_server().await.expect("start after stop");
    assert!(pg.is_running());
}

#[tokio::test]
async fn crashed_old_primary_is_rewound_into_a_sync_standby_of_the_promoted_one() {
    let pair = PgPair::start().await.expect("start pair");
    let primary = pair.primary().connect().await.expect("connect primary");
    primary
        .batch_execute(
            "create table t (id serial primary key, note text not null);
             insert into t (note) values ('before');",
        )
        .await
        .expect("write before failover");

    pair.kill_primary().await.expect("crash the primary");
    pair.promote_standby().await.expect("promote");
    let new_primary = pair.standby().connect().await.expect("connect new primary");
    new_primary
        .execute("insert into t (note) values ('during')", &[])
        .await
        .expect("write on the new primary");

    pair.primary()
        .rewind_and_follow(pair.standby(), "primary1")
        .await
        .expect("rewind the old primary and follow the new one");
    pair.standby()
        .set_synchronous_standby_names("FIRST 1 (primary1)")
        .await
        .expect("make it synchronous");
    eventually(
        "the old primary to be a sync standby",
        Duration::from_secs(30),
        || async {
            let row = new_primary
            .query_opt(
                "select sync_state from pg_stat_replication where application_name = 'primary1'",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?;
            match row.map(|r| r.get::<_, String>(0)) {
                Some(state) if state == "sync" => Ok(()),
                other => Err(format!("sync_state = {other:?}")),
            }
        },
    )
    .await
    .expect("old primary streams synchronously");

    let write = new_primary.execute("insert into t (note) values ('after')", &[]);
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("commit returns: the rewound node applies the new timeline")
        .expect("write after failback setup");
    assert!(
        pair.primary()
            .is_in_recovery()
            .await
            .expect("recovery state")
    );
    let old_primary = pair.primary().connect().await.expect("connect old primary");
    for note in ["before", "during", "after"] {
        assert_eq!(
            count(&old_primary, note).await,
            1,
            "{note} on the rewound node"
        );
    }
}
