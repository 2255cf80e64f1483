//! Audit events: upstream's 13 types and JSON shape (`spec/upstream-continuum.md` §7.2–7.3),
//! plus `epoch`, `durationMs` and `lsn`. Published on subject [`SUBJECT`] with the headers
//! [`HEADER_TYPE`], [`HEADER_CONTINUUM`] and [`HEADER_APPLICATION`].

use serde::{Deserialize, Serialize};

/// The JetStream subject of every audit event.
pub const SUBJECT: &str = "catalyst.audit";
/// Header carrying the event type.
pub const HEADER_TYPE: &str = "audit-type";
/// Header carrying `ns/name` of the Continuum.
pub const HEADER_CONTINUUM: &str = "continuum-name";
/// Header carrying `ns/app`.
pub const HEADER_APPLICATION: &str = "application-name";

/// The 13 upstream audit types, in upstream's (contract) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditType {
    /// `continuum-switchover`
    #[serde(rename = "continuum-switchover")]
    Switchover,
    /// `continuum-failback-pending`
    #[serde(rename = "continuum-failback-pending")]
    FailbackPending,
    /// `continuum-failback-completed`
    #[serde(rename = "continuum-failback-completed")]
    FailbackCompleted,
    /// `continuum-lease-lost`
    #[serde(rename = "continuum-lease-lost")]
    LeaseLost,
    /// `continuum-lease-acquired`
    #[serde(rename = "continuum-lease-acquired")]
    LeaseAcquired,
    /// `continuum-cnpg-lag-breach`
    #[serde(rename = "continuum-cnpg-lag-breach")]
    CnpgLagBreach,
    /// `continuum-cnpg-promotable`
    #[serde(rename = "continuum-cnpg-promotable")]
    CnpgPromotable,
    /// `continuum-error`
    #[serde(rename = "continuum-error")]
    Error,
    /// `continuum-reconcile-success`
    #[serde(rename = "continuum-reconcile-success")]
    ReconcileSuccess,
    /// `continuum-cr-created`
    #[serde(rename = "continuum-cr-created")]
    CrCreated,
    /// `continuum-config-changed`
    #[serde(rename = "continuum-config-changed")]
    ConfigChanged,
    /// `continuum-lease-collision`
    #[serde(rename = "continuum-lease-collision")]
    LeaseCollision,
    /// `continuum-rejoin-repair`
    #[serde(rename = "continuum-rejoin-repair")]
    RejoinRepair,
}

impl AuditType {
    /// All types in contract order.
    pub const ALL: [AuditType; 13] = [
        AuditType::Switchover,
        AuditType::FailbackPending,
        AuditType::FailbackCompleted,
        AuditType::LeaseLost,
        AuditType::LeaseAcquired,
        AuditType::CnpgLagBreach,
        AuditType::CnpgPromotable,
        AuditType::Error,
        AuditType::ReconcileSuccess,
        AuditType::CrCreated,
        AuditType::ConfigChanged,
        AuditType::LeaseCollision,
        AuditType::RejoinRepair,
    ];

    /// The wire name, e.g. `continuum-switchover`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditType::Switchover => "continuum-switchover",
            AuditType::FailbackPending => "continuum-failback-pending",
            AuditType::FailbackCompleted => "continuum-failback-completed",
            AuditType::LeaseLost => "continuum-lease-lost",
            AuditType::LeaseAcquired => "continuum-lease-acquired",
            AuditType::CnpgLagBreach => "continuum-cnpg-lag-breach",
            AuditType::CnpgPromotable => "continuum-cnpg-promotable",
            AuditType::Error => "continuum-error",
            AuditType::ReconcileSuccess => "continuum-reconcile-success",
            AuditType::CrCreated => "continuum-cr-created",
            AuditType::ConfigChanged => "continuum-config-changed",
            AuditType::LeaseCollision => "continuum-lease-collision",
            AuditType::RejoinRepair => "continuum-rejoin-repair",
        }
    }
}

/// One audit event. `type`, `continuumName` and `timestamp` are always present; every other
/// field is omitted when empty, as upstream's `omitempty`. `timestamp` is stamped by the
/// executor (the decision core has no wall clock).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Event type.
    #[serde(rename = "type")]
    pub kind: AuditType,
    /// `ns/name`.
    pub continuum_name: String,
    /// `ns/app`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub application_name: String,
    /// Previous primary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from_primary: String,
    /// New primary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to_primary: String,
    /// Replication lag in seconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lag_seconds: u64,
    /// Step (`n/m` upstream; our step name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub step: String,
    /// Machine reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Who initiated (`controller`, `operator`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub initiated_by: String,
    /// RFC 3339 UTC.
    #[serde(default)]
    pub timestamp: String,
    /// Addition: the fencing epoch the action ran under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Addition: how long the step/operation took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Addition: LSN involved (demotion LSN, promoted LSN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl AuditEvent {
    /// A new event of `kind` for `continuum_name`/`application_name`, initiated by the
    /// controller.
    pub fn new(kind: AuditType, continuum_name: &str, application_name: &str) -> AuditEvent {
        AuditEvent {
            kind,
            continuum_name: continuum_name.to_owned(),
            application_name: application_name.to_owned(),
            from_primary: String::new(),
            to_primary: String::new(),
            lag_seconds: 0,
            step: String::new(),
            reason: String::new(),
            message: String::new(),
            initiated_by: "controller".to_owned(),
            timestamp: String::new(),
            epoch: None,
            duration_ms: None,
            lsn: None,
        }
    }

    /// The NATS headers upstream sets.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (HEADER_TYPE, self.kind.as_str().to_owned()),
            (HEADER_CONTINUUM, self.continuum_name.clone()),
        ];
        if !self.application_name.is_empty() {
            h.push((HEADER_APPLICATION, self.application_name.clone()));
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_matches_upstream_shape_plus_epoch() {
        let mut e = AuditEvent::new(AuditType::Switchover, "ns/dr-x", "ns/app");
        e.from_primary = "a".into();
        e.to_primary = "b".into();
        e.step = "promote".into();
        e.reason = "operator-requested".into();
        e.timestamp = "2026-07-18T18:34:00.123Z".into();
        e.epoch = Some(7);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], "continuum-switchover");
        assert_eq!(v["continuumName"], "ns/dr-x");
        assert_eq!(v["applicationName"], "ns/app");
        assert_eq!(v["fromPrimary"], "a");
        assert_eq!(v["epoch"], 7);
        assert!(v.get("lagSeconds").is_none(), "omitempty like upstream");
        assert!(v.get("lsn").is_none());
        let back: AuditEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn thirteen_types_serialize_to_their_wire_names() {
        for t in AuditType::ALL {
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
    }

    #[test]
    fn headers_carry_type_continuum_and_application() {
        let e = AuditEvent::new(AuditType::LeaseLost, "ns/c", "ns/app");
        let h = e.headers();
        assert_eq!(h[0], ("audit-type", "continuum-lease-lost".to_owned()));
        assert_eq!(h[1], ("continuum-name", "ns/c".to_owned()));
        assert_eq!(h[2], ("application-name", "ns/app".to_owned()));
    }
}
