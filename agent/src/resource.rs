//! What the instrumented component is: the OTLP resource every span, log and metric of
//! one [`crate::Telemetry`] carries.

use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::semconv::kv;

/// The kind of MSA component, exported as `periscope.component.kind` so Periscope can list
/// gateways, mesh proxies and services apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentKind {
    /// An API gateway at the edge.
    Gateway,
    /// A service-mesh proxy (sidecar) in front of one service.
    MeshProxy,
    /// A service.
    Service,
}

impl ComponentKind {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Gateway => "gateway",
            ComponentKind::MeshProxy => "mesh-proxy",
            ComponentKind::Service => "service",
        }
    }
}

/// Resource attributes of one component.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// `service.name`.
    pub service_name: String,
    /// `service.namespace`, when set.
    pub service_namespace: Option<String>,
    /// `service.version`, when set.
    pub service_version: Option<String>,
    /// `service.instance.id`; a random id when not given.
    pub instance_id: String,
    /// `periscope.component.kind`.
    pub kind: ComponentKind,
    /// Any other resource attributes.
    pub extra: Vec<(String, String)>,
}

impl ResourceInfo {
    /// A component with a random instance id and no version.
    pub fn new(service_name: impl Into<String>, kind: ComponentKind) -> ResourceInfo {
        ResourceInfo {
            service_name: service_name.into(),
            service_namespace: None,
            service_version: None,
            instance_id: random_instance_id(),
            kind,
            extra: Vec::new(),
        }
    }

    /// Sets `service.version`.
    pub fn with_version(mut self, version: impl Into<String>) -> ResourceInfo {
        self.service_version = Some(version.into());
        self
    }

    /// The OTLP resource.
    pub fn to_proto(&self) -> Resource {
        let mut attributes = vec![
            kv("service.name", self.service_name.clone()),
            kv("service.instance.id", self.instance_id.clone()),
            kv("periscope.component.kind", self.kind.as_str()),
            kv("telemetry.sdk.name", "periscope-agent"),
            kv("telemetry.sdk.language", "rust"),
            kv("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        ];
        if let Some(ns) = &self.service_namespace {
            attributes.push(kv("service.namespace", ns.clone()));
        }
        if let Some(v) = &self.service_version {
            attributes.push(kv("service.version", v.clone()));
        }
        for (k, v) in &self.extra {
            attributes.push(kv(k.clone(), v.clone()));
        }
        Resource {
            attributes,
            ..Default::default()
        }
    }
}

/// A random UUID-shaped (version 4) instance id.
fn random_instance_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
