//! One `service.name` per component, also when they share one process.
//!
//! In OpenTelemetry the **resource** says *who* reports a span: above all its `service.name`.
//! A trace viewer colours spans by it, so a trace of `kulisse apply` reads "kulisse-cli →
//! kulisse-apiserver → kulisse-controller-manager → kulisse-scheduler → kulisse-kubelet", as it
//! would for the separate binaries of a Kubernetes cluster (kubectl, kube-apiserver,
//! kube-controller-manager, kube-scheduler, kubelet, kube-proxy).
//!
//! The SDK gives a tracer provider exactly one resource, and `tracing-opentelemetry` drives one
//! tracer. `kulisse up` runs every component in one process, so instead of one provider per
//! component kulisse routes at the *exporter*: [`RoutingExporter`] looks at each finished span's
//! `kulisse.stage` attribute, picks the component's service name
//! ([`crate::catalogue::STAGE_SERVICES`]) and hands the span to an inner OTLP exporter whose
//! resource carries that name (one inner exporter per service, created when first needed).
//! Spans without a stage keep the process's own service name. The control-plane exporter
//! ([`crate::control_plane`]) makes the same choice per span, and sends one request per batch
//! with one `ResourceSpans` per service.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    trace::{SpanData, SpanExporter},
};

use crate::catalogue::{STAGE_KEY, service_for_stage};

const SERVICE_NAME: &str = "service.name";

/// Chooses the `service.name` for a span from its `kulisse.stage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRouter {
    default_service: String,
    route_by_stage: bool,
}

impl ServiceRouter {
    /// Spans go to `default_service`, or, when `route_by_stage`, to their stage's service.
    pub fn new(default_service: impl Into<String>, route_by_stage: bool) -> ServiceRouter {
        ServiceRouter {
            default_service: default_service.into(),
            route_by_stage,
        }
    }

    /// The service for a span with this stage (`None`: the span has no `kulisse.stage`).
    pub fn service_for(&self, stage: Option<&str>) -> &str {
        if self.route_by_stage
            && let Some(service) = stage.and_then(service_for_stage)
        {
            return service;
        }
        &self.default_service
    }

    /// The process's own service name.
    pub fn default_service(&self) -> &str {
        &self.default_service
    }

    /// Whether spans are routed by stage.
    pub fn routes_by_stage(&self) -> bool {
        self.route_by_stage
    }

    /// Takes the default service from the resource's `service.name` (which may come from
    /// `OTEL_SERVICE_NAME`), as the SDK hands it to processors and exporters.
    pub(crate) fn set_default_from_resource(&mut self, resource: &Resource) {
        if let Some(name) = resource.get(&opentelemetry::Key::from_static_str(SERVICE_NAME)) {
            let name = name.as_str();
            if !name.is_empty() {
                self.default_service = name.into_owned();
            }
        }
    }
}

/// The stage attribute of a finished span.
pub(crate) fn stage_of(span: &SpanData) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == STAGE_KEY)
        .map(|kv| kv.value.as_str().into_owned())
}

/// Splits a batch into one group per service name, in the order the services first appear.
/// This is the routing decision that every kulisse exporter shares.
pub(crate) fn group_by_service(router: &ServiceRouter, batch: Vec<SpanData>) -> Vec<(String, Vec<SpanData>)> {
    let mut groups: Vec<(String, Vec<SpanData>)> = Vec::new();
    for span in batch {
        let stage = stage_of(&span);
        let service = router.service_for(stage.as_deref());
        match groups.iter_mut().find(|(name, _)| name == service) {
            Some((_, spans)) => spans.push(span),
            None => groups.push((service.to_string(), vec![span])),
        }
    }
    groups
}

/// `base` (the process's resource: SDK attributes, `OTEL_RESOURCE_ATTRIBUTES`, ...) with its
/// `service.name` replaced by `service`.
pub(crate) fn resource_with_service(base: &Resource, service: &str) -> Resource {
    Resource::builder_empty()
        .with_attributes(base.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .with_attribute(KeyValue::new(SERVICE_NAME, service.to_string()))
        .build()
}

/// Builds an inner exporter (one per service name).
pub type ExporterFactory<E> = Arc<dyn Fn() -> anyhow::Result<E> + Send + Sync>;

/// A span exporter that sends each span with the resource of its component's service. See the
/// module docs.
pub struct RoutingExporter<E: SpanExporter + 'static> {
    router: ServiceRouter,
    base: Resource,
    make: ExporterFactory<E>,
    inner: Mutex<HashMap<String, Arc<E>>>,
}

impl<E: SpanExporter + 'static> std::fmt::Debug for RoutingExporter<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let services: Vec<String> = self.lock().keys().cloned().collect();
        f.debug_struct("RoutingExporter")
            .field("router", &self.router)
            .field("services", &services)
            .finish()
    }
}

impl<E: SpanExporter + 'static> RoutingExporter<E> {
    /// A router over exporters made by `make`. `base` is the resource every service's resource
    /// starts from (the SDK replaces it through `set_resource` when the provider is built).
    ///
    /// The exporter of the default service is built at once, so that a misconfiguration is
    /// reported here rather than at the first export.
    ///
    /// # Errors
    ///
    /// Fails if `make` fails for the default service.
    pub fn new(router: ServiceRouter, base: Resource, make: ExporterFactory<E>) -> anyhow::Result<Self> {
        let exporter = RoutingExporter {
            router,
            base,
            make,
            inner: Mutex::new(HashMap::new()),
        };
        let default = exporter.router.default_service().to_string();
        let first = exporter.build(&default)?;
        exporter.lock().insert(default, Arc::new(first));
        Ok(exporter)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<E>>> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn resource_for(&self, service: &str) -> Resource {
        resource_with_service(&self.base, service)
    }

    fn build(&self, service: &str) -> anyhow::Result<E> {
        let mut exporter = (self.make)()?;
        exporter.set_resource(&self.resource_for(service));
        Ok(exporter)
    }

    /// The inner exporter of `service`, built on first use.
    fn exporter_for(&self, service: &str) -> Result<Arc<E>, OTelSdkError> {
        if let Some(existing) = self.lock().get(service) {
            return Ok(existing.clone());
        }
        // Built outside the lock: building an HTTP exporter starts a thread and waits for it.
        let built = Arc::new(self.build(service).map_err(|err| {
            OTelSdkError::InternalFailure(format!(
                "could not build the OTLP exporter for service {service:?}: {err:#}"
            ))
        })?);
        Ok(self.lock().entry(service.to_string()).or_insert(built).clone())
    }

    /// The services that have an inner exporter so far.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self.lock().keys().cloned().collect();
        names.sort();
        names
    }

    fn all(&self) -> Vec<Arc<E>> {
        self.lock().values().cloned().collect()
    }
}

impl<E: SpanExporter + 'static> SpanExporter for RoutingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let groups = group_by_service(&self.router, batch);
        let mut first_error = None;
        for (service, spans) in groups {
            let result = match self.exporter_for(&service) {
                Ok(exporter) => exporter.export(spans).await,
                Err(err) => Err(err),
            };
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let mut result = Ok(());
        for exporter in self.all() {
            if let Err(err) = exporter.shutdown_with_timeout(timeout) {
                result = Err(err);
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        let mut result = Ok(());
        for exporter in self.all() {
            if let Err(err) = exporter.force_flush() {
                result = Err(err);
            }
        }
        result
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.base = resource.clone();
        let old_default = self.router.default_service().to_string();
        self.router.set_default_from_resource(resource);
        let new_default = self.router.default_service().to_string();
        if old_default != new_default {
            // The exporter built for the old default name now serves the new one.
            let mut inner = self.lock();
            if !inner.contains_key(&new_default)
                && let Some(exporter) = inner.remove(&old_default)
            {
                inner.insert(new_default, exporter);
            }
        }
        let services: Vec<String> = self.lock().keys().cloned().collect();
        for service in services {
            let resource = self.resource_for(&service);
            let mut inner = self.lock();
            if let Some(exporter) = inner.get_mut(&service).and_then(Arc::get_mut) {
                exporter.set_resource(&resource);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::sync::Mutex as StdMutex;

    /// Records (service name, span name) for every exported span.
    #[derive(Debug, Default)]
    struct Recorder {
        service: StdMutex<String>,
        seen: Arc<StdMutex<Vec<(String, String)>>>,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let service = self.service.lock().map(|s| s.clone()).unwrap_or_default();
            if let Ok(mut seen) = self.seen.lock() {
                seen.extend(batch.iter().map(|s| (service.clone(), s.name.to_string())));
            }
            Ok(())
        }

        fn set_resource(&mut self, resource: &Resource) {
            if let (Ok(mut service), Some(name)) = (
                self.service.lock(),
                resource.get(&opentelemetry::Key::from_static_str(SERVICE_NAME)),
            ) {
                *service = name.to_string();
            }
        }
    }

    fn span_data(name: &str, stage: Option<&str>) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([2; 8]),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: name.to_string().into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: stage
                .map(|s| vec![KeyValue::new(STAGE_KEY, s.to_string())])
                .unwrap_or_default(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
        }
    }

    #[test]
    fn router_maps_stages_to_services() {
        let routed = ServiceRouter::new("kulisse-up", true);
        assert_eq!(routed.service_for(Some("store")), "kulisse-apiserver");
        assert_eq!(routed.service_for(Some("runtime")), "kulisse-kubelet");
        assert_eq!(routed.service_for(Some("weird")), "kulisse-up");
        assert_eq!(routed.service_for(None), "kulisse-up");
        let single = ServiceRouter::new("kulisse-cli", false);
        assert_eq!(single.service_for(Some("scheduler")), "kulisse-cli");
    }

    #[test]
    fn each_stage_is_exported_with_its_own_service_resource() {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let factory_seen = seen.clone();
        let built = Arc::new(StdMutex::new(0usize));
        let built_count = built.clone();
        let make: ExporterFactory<Recorder> = Arc::new(move || {
            if let Ok(mut n) = built_count.lock() {
                *n += 1;
            }
            Ok(Recorder {
                service: StdMutex::new(String::new()),
                seen: factory_seen.clone(),
            })
        });
        let mut exporter = RoutingExporter::new(
            ServiceRouter::new("kulisse-up", true),
            Resource::builder_empty().build(),
            make,
        )
        .expect("the default exporter builds");
        // The SDK sets the provider's resource; OTEL_SERVICE_NAME would arrive this way.
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name("kulisse-all-in-one")
                .build(),
        );
        let batch = vec![
            span_data("apiserver.request", Some("apiserver")),
            span_data("store.txn", Some("store")),
            span_data("scheduler.schedule", Some("scheduler")),
            span_data("runtime.create_container", Some("runtime")),
            span_data("startup", None),
        ];
        futures_lite_block_on(exporter.export(batch)).expect("export");
        let mut seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        seen.sort();
        assert_eq!(
            seen,
            [
                ("kulisse-all-in-one".to_string(), "startup".to_string()),
                ("kulisse-apiserver".into(), "apiserver.request".into()),
                ("kulisse-apiserver".into(), "store.txn".into()),
                ("kulisse-kubelet".into(), "runtime.create_container".into()),
                ("kulisse-scheduler".into(), "scheduler.schedule".into()),
            ]
        );
        assert_eq!(
            exporter.services(),
            [
                "kulisse-all-in-one",
                "kulisse-apiserver",
                "kulisse-kubelet",
                "kulisse-scheduler"
            ]
        );
        // One for the default service, one per routed service.
        assert_eq!(built.lock().map(|n| *n).unwrap_or(0), 4);
    }

    /// Runs a future to completion on this thread (the exporter futures here never wait).
    fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime for the test")
            .block_on(future)
    }
}
