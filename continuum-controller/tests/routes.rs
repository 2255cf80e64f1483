//! The lab route front and its `Routes` client over real loopback HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use continuum_controller::adapters::routes::{HttpRoutes, RouteFront};
use continuum_controller::ports::{PlaneError, Routes};
use testkit::eventually;

async fn healthz(front: &RouteFront) -> u16 {
    reqwest::get(format!("{}/healthz", front.url()))
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn start() -> (RouteFront, HttpRoutes) {
    let front = RouteFront::start("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let routes = HttpRoutes::new(&front.url(), Duration::from_secs(5)).unwrap();
    (front, routes)
}

#[tokio::test]
async fn starts_drained_and_serves_only_when_undrained_and_armed() {
    let (front, routes) = start().await;
    assert_eq!(healthz(&front).await, 503, "starts drained");
    let st = routes.state().await.unwrap();
    assert!(st.drained && !st.healthy && st.armed_ms == 0);

    routes.undrain(1).await.unwrap();
    assert_eq!(healthz(&front).await, 503, "undrained but never armed");
    routes.arm(1, Duration::from_secs(600)).await.unwrap();
    assert_eq!(healthz(&front).await, 200);

    routes.drain(1).await.unwrap();
    routes.drain(1).await.unwrap();
    assert_eq!(healthz(&front).await, 503);
    routes.undrain(1).await.unwrap();
    assert_eq!(healthz(&front).await, 200);
    assert!(routes.state().await.unwrap().healthy);
}

#[tokio::test]
async fn the_dead_man_switch_runs_out_unless_re_armed() {
    let (front, routes) = start().await;
    routes.undrain(2).await.unwrap();
    routes.arm(2, Duration::from_secs(600)).await.unwrap();
    assert_eq!(healthz(&front).await, 200);
    // Re-armed with little time left: the front drains itself once it runs out.
    routes.arm(2, Duration::from_millis(200)).await.unwrap();
    eventually("switch runs out", Duration::from_secs(10), || async {
        match healthz(&front).await {
            503 => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    })
    .await
    .unwrap();
    let st = routes.state().await.unwrap();
    assert!(!st.drained && !st.healthy && st.armed_ms == 0);
    // Re-arming brings it back.
    routes.arm(3, Duration::from_secs(600)).await.unwrap();
    assert_eq!(healthz(&front).await, 200);
}

#[tokio::test]
async fn a_stale_epoch_is_refused_and_a_dead_front_is_unavailable() {
    let (front, routes) = start().await;
    routes.undrain(5).await.unwrap();
    let err = routes.drain(4).await.unwrap_err();
    assert!(
        matches!(
            err,
            PlaneError::StaleEpoch {
                given: 4,
                applied: 5
            }
        ),
        "{err:?}"
    );
    assert!(!routes.state().await.unwrap().drained);
    drop(front);
    eventually("front down", Duration::from_secs(10), || async {
        match routes.drain(5).await {
            Err(PlaneError::Unavailable(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
}
