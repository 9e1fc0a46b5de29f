//! `inference.GRPCInferenceService` (tonic) and `grpc.health.v1.Health` on the gRPC port.
//! Tensors travel raw (`raw_input_contents` / `raw_output_contents`), as tritonclient sends
//! and expects them; typed `contents` are accepted too.

use std::collections::HashMap;

use tonic::{Request, Response, Status};
use trainyard_serve::tensor::Element;
use trainyard_serve::{DataType, ModelConfig, ServeError, Tensor};

use super::{
    index_rows, load_config, Denied, InferenceState, ModelScope, EXTENSIONS, JOB_TOKEN_REFUSED,
    SERVER_NAME,
};

#[allow(clippy::all, clippy::pedantic)]
mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::*;

fn status(e: ServeError) -> Status {
    match e {
        ServeError::Invalid(m) => Status::invalid_argument(m),
        ServeError::NotFound(m) => Status::not_found(m),
        ServeError::Unavailable(m) => Status::unavailable(m),
        ServeError::Unsupported(m) => Status::unimplemented(m),
        ServeError::Internal(m) => {
            tracing::error!("gRPC inference failed: {m}");
            Status::internal(m)
        }
    }
}

/// A version field: empty = the default version; otherwise digits.
fn version(v: &str) -> Result<Option<u64>, Status> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| Status::invalid_argument(format!("model version '{v}' is not a number")))
}

struct Service {
    state: InferenceState,
}

impl Service {
    /// Inference and metadata: the token, unless anonymous inference is on and none came.
    async fn authorize<T>(&self, request: &Request<T>) -> Result<ModelScope, Status> {
        self.check(request, false).await
    }

    /// Loading and unloading: always the token.
    async fn authorize_admin<T>(&self, request: &Request<T>) -> Result<ModelScope, Status> {
        self.check(request, true).await
    }

    /// The token's check, and which workspace's models the call reaches (the
    /// `x-trainyard-workspace` metadata names one).
    async fn check<T>(&self, request: &Request<T>, admin: bool) -> Result<ModelScope, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or(""));
        let workspace = request
            .metadata()
            .get(crate::WORKSPACE_HEADER)
            .map(|v| v.to_str().unwrap_or("").trim());
        self.state
            .authorize(header, workspace, admin)
            .await
            .map_err(|denied| match denied {
                Denied::NoToken => {
                    Status::unauthenticated("send `authorization: Bearer TOKEN` metadata")
                }
                Denied::UnknownToken => Status::unauthenticated("unknown token"),
                Denied::JobToken => Status::permission_denied(JOB_TOKEN_REFUSED),
                Denied::Role(m) => Status::permission_denied(m),
                Denied::Unavailable(m) => Status::unavailable(m),
            })
    }
}

fn tensor_meta(
    specs: &[trainyard_serve::runtime::TensorSpec],
) -> Vec<model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|s| model_metadata_response::TensorMetadata {
            name: s.name.clone(),
            datatype: s.datatype.as_str().to_string(),
            shape: s.shape.clone(),
        })
        .collect()
}

fn le<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * T::SIZE);
    for v in values {
        v.write_le(&mut out);
    }
    out
}

/// Typed `contents` into the wire layout; narrow types travel widened in the protocol.
fn contents_bytes(name: &str, dt: DataType, c: &InferTensorContents) -> Result<Vec<u8>, Status> {
    let narrow = |what: &str| {
        Status::invalid_argument(format!("input '{name}': a value does not fit {what}"))
    };
    Ok(match dt {
        DataType::Bool => le(&c.bool_contents),
        DataType::U8 => le(&c
            .uint_contents
            .iter()
            .map(|v| u8::try_from(*v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| narrow("UINT8"))?),
        DataType::U16 => le(&c
            .uint_contents
            .iter()
            .map(|v| u16::try_from(*v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| narrow("UINT16"))?),
        DataType::U32 => le(&c.uint_contents),
        DataType::U64 => le(&c.uint64_contents),
        DataType::I8 => le(&c
            .int_contents
            .iter()
            .map(|v| i8::try_from(*v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| narrow("INT8"))?),
        DataType::I16 => le(&c
            .int_contents
            .iter()
            .map(|v| i16::try_from(*v))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| narrow("INT16"))?),
        DataType::I32 => le(&c.int_contents),
        DataType::I64 => le(&c.int64_contents),
        DataType::F32 => le(&c.fp32_contents),
        DataType::F64 => le(&c.fp64_contents),
        DataType::Bytes => {
            let mut out = Vec::new();
            for b in &c.bytes_contents {
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            out
        }
        DataType::F16 | DataType::BF16 => {
            return Err(Status::invalid_argument(format!(
                "input '{name}': {dt} travels only in raw_input_contents"
            )))
        }
    })
}

fn decode_inputs(r: &mut ModelInferRequest) -> Result<Vec<Tensor>, Status> {
    let raw = std::mem::take(&mut r.raw_input_contents);
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(Status::invalid_argument(format!(
            "raw_input_contents has {} entries for {} inputs",
            raw.len(),
            r.inputs.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut out = Vec::with_capacity(r.inputs.len());
    for input in r.inputs.drain(..) {
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            Status::invalid_argument(format!(
                "input '{}': unknown datatype '{}'",
                input.name, input.datatype
            ))
        })?;
        let shape = input
            .shape
            .iter()
            .map(|d| usize::try_from(*d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                Status::invalid_argument(format!(
                    "input '{}': negative dimension in {:?}",
                    input.name, input.shape
                ))
            })?;
        let data = match (raw.next(), &input.contents) {
            (Some(_), Some(_)) => {
                return Err(Status::invalid_argument(format!(
                    "input '{}': contents and raw_input_contents are both set",
                    input.name
                )))
            }
            (Some(bytes), None) => bytes,
            (None, Some(c)) => contents_bytes(&input.name, datatype, c)?,
            (None, None) => {
                return Err(Status::invalid_argument(format!(
                    "input '{}' has no data",
                    input.name
                )))
            }
        };
        let t = Tensor {
            name: input.name,
            datatype,
            shape,
            data,
        };
        t.check_size().map_err(status)?;
        out.push(t);
    }
    Ok(out)
}

fn config_proto(c: &ModelConfig) -> proto::ModelConfig {
    let data_type =
        |s: &str| proto::DataType::from_str_name(s).unwrap_or(proto::DataType::TypeInvalid) as i32;
    proto::ModelConfig {
        name: c.name.clone(),
        platform: c.platform.clone(),
        backend: c.backend.clone(),
        max_batch_size: c.max_batch_size as i32,
        input: c
            .input
            .iter()
            .map(|t| ModelInput {
                name: t.name.clone(),
                data_type: data_type(&t.data_type),
                dims: t.dims.clone(),
            })
            .collect(),
        output: c
            .output
            .iter()
            .map(|t| ModelOutput {
                name: t.name.clone(),
                data_type: data_type(&t.data_type),
                dims: t.dims.clone(),
            })
            .collect(),
        instance_group: c
            .instance_group
            .iter()
            .map(|g| ModelInstanceGroup {
                name: String::new(),
                count: g.count as i32,
                kind: model_instance_group::Kind::from_str_name(&g.kind)
                    .unwrap_or(model_instance_group::Kind::Cpu) as i32,
            })
            .collect(),
        default_model_filename: c.default_model_filename.clone(),
        parameters: c
            .parameters
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    ModelParameter {
                        string_value: v.string_value.clone(),
                    },
                )
            })
            .collect(),
        scheduling_choice: c.dynamic_batching.as_ref().map(|b| {
            model_config::SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                preferred_batch_size: b.preferred_batch_size.iter().map(|n| *n as i32).collect(),
                max_queue_delay_microseconds: b.max_queue_delay_microseconds,
            })
        }),
    }
}

fn duration(s: &trainyard_serve::stats::DurationStat) -> Option<StatisticDuration> {
    Some(StatisticDuration {
        count: s.count,
        ns: s.ns,
    })
}

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        // Without a token, `default`'s models (probes send none); with one, its workspace's.
        let scope = if request.metadata().contains_key("authorization") {
            self.authorize(&request).await?
        } else {
            ModelScope::of(trainyard_core::DEFAULT_WORKSPACE)
        };
        let r = request.into_inner();
        let key = self
            .state
            .manager
            .resolve(&scope.key(&r.name).map_err(status)?, version(&r.version)?)
            .await
            .map_err(status)?;
        Ok(Response::new(ModelReadyResponse {
            ready: self.state.manager.peek(&key).is_some(),
        }))
    }

    async fn server_metadata(
        &self,
        request: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        self.authorize(&request).await?;
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let scope = self.authorize(&request).await?;
        let r = request.into_inner();
        let v = version(&r.version)?;
        let key = scope.key(&r.name).map_err(status)?;
        let model = self.state.manager.acquire(&key, v).await.map_err(status)?;
        let versions = match v {
            Some(v) => vec![v.to_string()],
            None => self
                .state
                .manager
                .ready_versions(&key)
                .iter()
                .map(u64::to_string)
                .collect(),
        };
        Ok(Response::new(ModelMetadataResponse {
            name: scope.show(&model.name).to_string(),
            versions,
            platform: model.config.platform.clone(),
            inputs: tensor_meta(&model.signature.inputs),
            outputs: tensor_meta(&model.signature.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let scope = self.authorize(&request).await?;
        let mut r = request.into_inner();
        if let Some(k) = super::codec::refused_parameter(r.parameters.keys()) {
            return Err(Status::invalid_argument(format!(
                "parameter '{k}' is not supported"
            )));
        }
        let inputs = decode_inputs(&mut r)?;
        let model = self
            .state
            .manager
            .acquire(
                &scope.key(&r.model_name).map_err(status)?,
                version(&r.model_version)?,
            )
            .await
            .map_err(status)?;
        let wanted: Option<Vec<String>> =
            (!r.outputs.is_empty()).then(|| r.outputs.iter().map(|o| o.name.clone()).collect());
        let outputs = self
            .state
            .manager
            .infer(&model, inputs, wanted.as_deref())
            .await
            .map_err(status)?;
        let mut response = ModelInferResponse {
            model_name: scope.show(&model.name).to_string(),
            model_version: model.version.to_string(),
            id: r.id,
            parameters: HashMap::new(),
            outputs: Vec::with_capacity(outputs.len()),
            raw_output_contents: Vec::with_capacity(outputs.len()),
        };
        for t in outputs {
            response
                .outputs
                .push(model_infer_response::InferOutputTensor {
                    name: t.name,
                    datatype: t.datatype.as_str().to_string(),
                    shape: t.shape.iter().map(|d| *d as i64).collect(),
                    parameters: HashMap::new(),
                    contents: None,
                });
            response.raw_output_contents.push(t.data);
        }
        Ok(Response::new(response))
    }

    async fn model_config(
        &self,
        request: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let scope = self.authorize(&request).await?;
        let r = request.into_inner();
        let model = self
            .state
            .manager
            .acquire(&scope.key(&r.name).map_err(status)?, version(&r.version)?)
            .await
            .map_err(status)?;
        Ok(Response::new(ModelConfigResponse {
            config: Some(config_proto(&model.config)),
        }))
    }

    async fn model_statistics(
        &self,
        request: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let scope = self.authorize(&request).await?;
        let r = request.into_inner();
        let v = version(&r.version)?;
        let name = if r.name.is_empty() {
            None
        } else {
            Some(
                self.state
                    .manager
                    .resolve(&scope.key(&r.name).map_err(status)?, v)
                    .await
                    .map_err(status)?
                    .0,
            )
        };
        let mut list = self
            .state
            .manager
            .statistics(name.as_deref(), v)
            .await
            .map_err(status)?;
        list.retain(|(k, _)| scope.shown(&k.0).is_some());
        if name.is_some() && list.is_empty() {
            return Err(Status::invalid_argument(format!(
                "requested model '{}' is not available",
                r.name
            )));
        }
        let model_stats = list
            .iter()
            .map(|(k, s)| {
                let s = s.snapshot();
                ModelStatistics {
                    name: scope.show(&k.0).to_string(),
                    version: k.1.to_string(),
                    last_inference: s.last_inference,
                    inference_count: s.inference_count,
                    execution_count: s.execution_count,
                    inference_stats: Some(InferStatistics {
                        success: duration(&s.success),
                        fail: duration(&s.fail),
                        queue: duration(&s.queue),
                        compute_input: duration(&s.compute_input),
                        compute_infer: duration(&s.compute_infer),
                        compute_output: duration(&s.compute_output),
                        cache_hit: Some(StatisticDuration::default()),
                        cache_miss: Some(StatisticDuration::default()),
                    }),
                    batch_stats: s
                        .batches
                        .iter()
                        .map(|(size, b)| InferBatchStatistics {
                            batch_size: *size as u64,
                            compute_input: Some(StatisticDuration {
                                count: b.count,
                                ns: b.compute_input_ns,
                            }),
                            compute_infer: Some(StatisticDuration {
                                count: b.count,
                                ns: b.compute_infer_ns,
                            }),
                            compute_output: Some(StatisticDuration {
                                count: b.count,
                                ns: b.compute_output_ns,
                            }),
                        })
                        .collect(),
                    memory_usage: self
                        .state
                        .manager
                        .peek(k)
                        .map(|m| MemoryUsage {
                            r#type: "CPU".to_string(),
                            id: 0,
                            byte_size: m.memory_bytes,
                        })
                        .into_iter()
                        .collect(),
                }
            })
            .collect();
        Ok(Response::new(ModelStatisticsResponse { model_stats }))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let scope = self.authorize(&request).await?;
        let ready_only = request.get_ref().ready;
        let models = index_rows(&self.state.manager, ready_only)
            .await
            .map_err(status)?
            .into_iter()
            // Only this workspace's models, by the names its callers know.
            .filter_map(|mut row| {
                row.name = scope.shown(&row.name)?.to_string();
                Some(row)
            })
            .map(|row| repository_index_response::ModelIndex {
                version: row.version.map(|v| v.to_string()).unwrap_or_default(),
                state: if row.version.is_some() {
                    row.state.as_str().to_string()
                } else {
                    String::new()
                },
                name: row.name,
                reason: row.reason,
            })
            .collect();
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let scope = self.authorize_admin(&request).await?;
        let r = request.into_inner();
        if !r.repository_name.is_empty() {
            return Err(Status::unimplemented(
                "'repository_name' specification is not supported",
            ));
        }
        let config = load_config(r.parameters.iter().map(|(k, v)| {
            let text = match &v.parameter_choice {
                Some(model_repository_parameter::ParameterChoice::StringParam(t)) => {
                    Some(t.as_str())
                }
                _ => None,
            };
            (k.as_str(), text)
        }))
        .map_err(status)?;
        self.state
            .manager
            .load(&scope.key(&r.model_name).map_err(status)?, config)
            .await
            .map_err(status)?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let scope = self.authorize_admin(&request).await?;
        let r = request.into_inner();
        if !r.repository_name.is_empty() {
            return Err(Status::unimplemented(
                "'repository_name' specification is not supported",
            ));
        }
        self.state
            .manager
            .unload(&scope.key(&r.model_name).map_err(status)?)
            .await
            .map_err(status)?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

/// Serves gRPC on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: InferenceState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    tls: Option<&crate::TlsIdentity>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    health
        .set_serving::<GrpcInferenceServiceServer<Service>>()
        .await;
    let limit = state.max_body;
    let service = GrpcInferenceServiceServer::new(Service { state })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX);
    let mut server = tonic::transport::Server::builder();
    if let Some(identity) = tls {
        server = server.tls_config(
            tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(
                    &identity.cert_pem,
                    &identity.key_pem,
                ))
                // A client that connects and says nothing is dropped, as on HTTP.
                .timeout(crate::tls::HANDSHAKE_WITHIN),
        )?;
    }
    server
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(nodelay(listener), shutdown)
        .await
}

/// The listener's connections with Nagle off, so gRPC answers go out at once instead of
/// waiting (a 40 ms stall per call otherwise).
pub(crate) fn nodelay(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            conn.inspect(|tcp| {
                let _ = tcp.set_nodelay(true);
            })
        },
    )
}
