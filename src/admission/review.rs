//! The `admission.k8s.io/v1` `AdmissionReview` as the API server sends it, the part of a
//! Pod the webhook reads, and the review it answers with. Unknown fields are ignored: the
//! API server adds fields over releases.

use serde::{Deserialize, Serialize};

pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
/// Still accepted; the response must use the request's version.
pub const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";
pub const KIND: &str = "AdmissionReview";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: String,
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub object: Option<serde_json::Value>,
    /// The object before an UPDATE.
    #[serde(default)]
    pub old_object: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// The fields of a Pod the webhook reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: ObjectMeta,
    pub spec: PodSpec,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ObjectMeta {
    pub name: Option<String>,
    #[serde(rename = "generateName")]
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    pub ephemeral_containers: Vec<Container>,
}

impl PodSpec {
    /// One of the three container lists by its field name.
    pub fn list(&self, field: &str) -> &[Container] {
        match field {
            "containers" => &self.containers,
            "initContainers" => &self.init_containers,
            "ephemeralContainers" => &self.ephemeral_containers,
            _ => &[],
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Container {
    pub name: Option<String>,
    pub image: Option<String>,
}

/// The review sent back.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewAnswer {
    pub api_version: String,
    pub kind: &'static str,
    pub response: AdmissionResponse,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid; the API server refuses an answer that does not echo it.
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the RFC 6902 patch, as Go's `[]byte` is encoded in JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown to the client that created the object (kubectl prints them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}
