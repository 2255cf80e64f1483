//! Validation errors of the FlowMessage contract.
//!
//! Every variant names the message type (`kind`) and the field path (`nodes[3].label`), so an
//! HTTP 400 body can point the producer at the exact value. Where upstream has a fixed message
//! (`snapshot: flow is required`, `upsert-nodes: nodes must be non-empty`,
//! `unknown message type "x"`), the text is identical.

/// A FlowMessage that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The body is not JSON of the FlowMessage shape (syntax, wrong type, unknown enum value,
    /// missing required field). `path` is where it went wrong (`.` for the top level).
    #[error("decode FlowMessage: {path}: {message}")]
    Decode {
        /// JSON path of the offending value, e.g. `relationships[0].type`.
        path: String,
        /// What serde reported.
        message: String,
    },
    /// The `type` discriminator is not one of the six message types.
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A field the message type requires is absent.
    #[error("{kind}: {field} is required")]
    Required {
        /// Message type.
        kind: &'static str,
        /// Field path.
        field: String,
    },
    /// A required string or list is empty.
    #[error("{kind}: {field} must be non-empty")]
    Empty {
        /// Message type.
        kind: &'static str,
        /// Field path.
        field: String,
    },
    /// A number that must be ≥ 0 (`lag`, times) is negative.
    #[error("{kind}: {field} must be >= 0, got {value}")]
    Negative {
        /// Message type.
        kind: &'static str,
        /// Field path.
        field: String,
        /// The value sent.
        value: i64,
    },
    /// A field of another message type was sent (e.g. `nodes` on `upsert-flow`).
    #[error("{kind}: field {field} does not belong to this message type")]
    Misplaced {
        /// Message type.
        kind: &'static str,
        /// The field that does not belong.
        field: &'static str,
    },
    /// Two entries of one envelope share a natural key.
    #[error("{kind}: {field} repeats {key} (first at {first})")]
    Duplicate {
        /// Message type.
        kind: &'static str,
        /// Field path of the repeat.
        field: String,
        /// The repeated key, rendered.
        key: String,
        /// Field path of the first occurrence.
        first: String,
    },
    /// `flow.id` or `nodes[i].flowId` is not the flow named in the URL.
    #[error("{kind}: {field} is {got:?} but the message was posted to flow {expected:?}")]
    FlowMismatch {
        /// Message type.
        kind: &'static str,
        /// Field path.
        field: String,
        /// The flow id of the URL.
        expected: String,
        /// The flow id in the message.
        got: String,
    },
}

impl ContractError {
    /// The field path the error is about, if it is about one field.
    pub fn field(&self) -> Option<&str> {
        match self {
            ContractError::Decode { path, .. } => Some(path),
            ContractError::UnknownType(_) => Some("type"),
            ContractError::Misplaced { field, .. } => Some(field),
            ContractError::Required { field, .. }
            | ContractError::Empty { field, .. }
            | ContractError::Negative { field, .. }
            | ContractError::Duplicate { field, .. }
            | ContractError::FlowMismatch { field, .. } => Some(field),
        }
    }

    /// A stable machine-readable code (for HTTP error bodies and metric labels).
    pub fn code(&self) -> &'static str {
        match self {
            ContractError::Decode { .. } => "invalid_json",
            ContractError::UnknownType(_) => "unknown_type",
            ContractError::Required { .. } => "required",
            ContractError::Empty { .. } => "empty",
            ContractError::Negative { .. } => "negative",
            ContractError::Misplaced { .. } => "misplaced_field",
            ContractError::Duplicate { .. } => "duplicate",
            ContractError::FlowMismatch { .. } => "flow_mismatch",
        }
    }
}
