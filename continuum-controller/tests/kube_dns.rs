#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The kube mode's spec-driven DNS port (`spec.dns` powerdns + `luaRecord` + `regions[].lbIPs`,
//! API key from `apiSecretRef` in a Secret on a REAL kube-apiserver, testkit's `ControlPlane`) flipping a real PowerDNS
//! Authoritative's LUA record, with the epoch fence.

mod kube_common;

use continuum_controller::crd::Continuum;
use continuum_controller::ports::{Dns, PlaneError};
use continuum_controller::standalone::StandaloneDns;
use kube_common::*;
use pdm_client::{DnsControl, PowerDnsBackend, PowerDnsConfig};
use serde_json::json;
use testkit::PowerDns;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_picks_powerdns_and_the_flip_lands_with_its_epoch() {
    let pdns = PowerDns::start().await.unwrap();
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(c.clone(), NS);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "pdns", "namespace": NS},
        "data": {"key": k8s_openapi::ByteString(pdns.api_key().as_bytes().to_vec())}
    }))
    .unwrap();
    secrets.create(&Default::default(), &secret).await.unwrap();
    let mut o = continuum_obj("shop", "http://127.0.0.1:1");
    o["spec"]["dns"] = json!({"backend": "powerdns", "url": pdns.api_url(),
        "apiSecretRef": {"name": "pdns", "key": "key"}});
    o["spec"]["luaRecord"] = json!({"selector": "ifurlup", "hostnames": ["app.dr.test"],
        "healthCheck": {"url": "http://probe.dr.test:8080/healthz",
            "intervalSeconds": 1, "timeoutSeconds": 1}});
    o["spec"]["regions"] = json!([{"name": "eu-1", "lbIPs": ["127.0.0.2"]},
        {"name": "us-1", "lbIPs": ["127.0.0.3"]}]);
    let obj: Continuum = serde_json::from_value(o).unwrap();
    obj.spec.validate().unwrap();

    let dns = continuum_controller::kube::dns::build(&c, NS, &obj.spec)
        .await
        .unwrap();
    assert!(matches!(dns, StandaloneDns::PowerDns(_)));
    dns.flip("us-1", 3).await.unwrap();
    let control =
        PowerDnsBackend::new(PowerDnsConfig::new(pdns.api_url(), pdns.api_key())).unwrap();
    let stored = control
        .published("dr.test.", "app.dr.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.fence.as_ref().map(|f| f.epoch), Some(3));
    assert!(matches!(
        dns.flip("eu-1", 2).await,
        Err(PlaneError::StaleEpoch {
            given: 2,
            applied: 3
        })
    ));

    // Without spec.dns the flip is skipped (Off).
    let plain: Continuum =
        serde_json::from_value(continuum_obj("x", "http://127.0.0.1:1")).unwrap();
    assert!(matches!(
        continuum_controller::kube::dns::build(&c, NS, &plain.spec)
            .await
            .unwrap(),
        StandaloneDns::Off
    ));
}
