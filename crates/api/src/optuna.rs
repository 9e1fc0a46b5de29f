//! Optuna's gRPC storage protocol (`optuna.StorageService`, what
//! `optuna.storages.GrpcStorageProxy` speaks), so an unmodified Optuna script keeps its study
//! here. The rules live in `trainyard_compute::studies::optuna`; this maps messages and
//! errors (the status codes the client turns into `KeyError`, `DuplicatedStudyError`,
//! `UpdateFinishedTrialError`, `ValueError`).
//!
//! Optuna's client sends no credentials. The endpoint is off unless the server is started
//! with `--optuna-listen`, acts in the one workspace `--optuna-workspace` names, and is meant
//! for loopback (or a network the operator trusts): anyone who can reach it can read and
//! write that workspace's Optuna studies, and nothing else.

use tonic::{Request, Response, Status};
use trainyard_compute::studies::optuna::{
    Double, OptunaState, OptunaStorage, OptunaTrial, TrialBody,
};
use trainyard_compute::ComputeError;
use trainyard_tune::Direction;

#[allow(clippy::all, clippy::pedantic)]
mod proto {
    tonic::include_proto!("optuna");
}

use proto::storage_service_server::{StorageService, StorageServiceServer};
use proto::*;

fn status(e: ComputeError) -> Status {
    match e {
        ComputeError::StudyNotFound(m) => Status::not_found(format!("{m} not found")),
        e @ ComputeError::TrialNotFound { .. } => Status::not_found(e.to_string()),
        e @ ComputeError::StudyExists(_) => Status::already_exists(e.to_string()),
        e @ ComputeError::TrialFinished { .. } => Status::failed_precondition(e.to_string()),
        ComputeError::Invalid(f) => Status::invalid_argument(f.to_string()),
        ComputeError::StudyClosed(m) => Status::aborted(m),
        other => {
            tracing::error!(error = %other, "Optuna storage call failed");
            Status::internal("the server failed; its log has the details")
        }
    }
}

fn directions(d: &[i32]) -> Result<Vec<Direction>, Status> {
    d.iter()
        .map(|x| match StudyDirection::try_from(*x) {
            Ok(StudyDirection::Minimize) => Ok(Direction::Minimize),
            Ok(StudyDirection::Maximize) => Ok(Direction::Maximize),
            Err(_) => Err(Status::invalid_argument(format!("unknown direction {x}"))),
        })
        .collect()
}

fn direction_numbers(d: &[Direction]) -> Vec<i32> {
    d.iter()
        .map(|x| match x {
            Direction::Minimize => StudyDirection::Minimize as i32,
            Direction::Maximize => StudyDirection::Maximize as i32,
        })
        .collect()
}

fn state(s: i32) -> Result<OptunaState, Status> {
    Ok(match proto::TrialState::try_from(s) {
        Ok(proto::TrialState::Running) => OptunaState::Running,
        Ok(proto::TrialState::Complete) => OptunaState::Complete,
        Ok(proto::TrialState::Pruned) => OptunaState::Pruned,
        Ok(proto::TrialState::Fail) => OptunaState::Fail,
        Ok(proto::TrialState::Waiting) => OptunaState::Waiting,
        Err(_) => return Err(Status::invalid_argument(format!("unknown trial state {s}"))),
    })
}

fn state_number(s: OptunaState) -> i32 {
    (match s {
        OptunaState::Running => proto::TrialState::Running,
        OptunaState::Complete => proto::TrialState::Complete,
        OptunaState::Pruned => proto::TrialState::Pruned,
        OptunaState::Fail => proto::TrialState::Fail,
        OptunaState::Waiting => proto::TrialState::Waiting,
    }) as i32
}

fn to_message(t: OptunaTrial) -> Trial {
    let b = t.body;
    Trial {
        trial_id: t.id,
        number: t.number,
        state: state_number(t.state),
        values: b.values.iter().map(|v| v.0).collect(),
        datetime_start: b.datetime_start,
        datetime_complete: b.datetime_complete,
        params: b.params.into_iter().map(|(k, v)| (k, v.0)).collect(),
        distributions: b.distributions.into_iter().collect(),
        user_attributes: b.user_attrs.into_iter().collect(),
        system_attributes: b.system_attrs.into_iter().collect(),
        intermediate_values: b.intermediate.into_iter().map(|(k, v)| (k, v.0)).collect(),
    }
}

fn from_message(t: Trial) -> Result<(OptunaState, TrialBody), Status> {
    let state = state(t.state)?;
    let mut params = std::collections::BTreeMap::new();
    for (k, v) in t.params {
        if !t.distributions.contains_key(&k) {
            return Err(Status::invalid_argument(format!(
                "template_trial: parameter `{k}` has no distribution"
            )));
        }
        params.insert(k, Double(v));
    }
    Ok((
        state,
        TrialBody {
            values: t.values.into_iter().map(Double).collect(),
            datetime_start: t.datetime_start,
            datetime_complete: t.datetime_complete,
            params,
            distributions: t.distributions.into_iter().collect(),
            user_attrs: t.user_attributes.into_iter().collect(),
            system_attrs: t.system_attributes.into_iter().collect(),
            intermediate: t
                .intermediate_values
                .into_iter()
                .map(|(k, v)| (k, Double(v)))
                .collect(),
        },
    ))
}

/// The service over one workspace's Optuna studies.
pub struct Service {
    storage: OptunaStorage,
}

type Answer<T> = Result<Response<T>, Status>;

fn ok<T>(t: T) -> Answer<T> {
    Ok(Response::new(t))
}

#[tonic::async_trait]
impl StorageService for Service {
    async fn create_new_study(
        &self,
        r: Request<CreateNewStudyRequest>,
    ) -> Answer<CreateNewStudyReply> {
        let r = r.into_inner();
        let study_id = self
            .storage
            .create_study(&r.study_name, directions(&r.directions)?)
            .await
            .map_err(status)?;
        ok(CreateNewStudyReply { study_id })
    }

    async fn delete_study(&self, r: Request<DeleteStudyRequest>) -> Answer<DeleteStudyReply> {
        self.storage
            .delete_study(r.into_inner().study_id)
            .await
            .map_err(status)?;
        ok(DeleteStudyReply {})
    }

    async fn set_study_user_attribute(
        &self,
        r: Request<SetStudyUserAttributeRequest>,
    ) -> Answer<SetStudyUserAttributeReply> {
        let r = r.into_inner();
        self.storage
            .set_study_attr(r.study_id, false, &r.key, &r.value)
            .await
            .map_err(status)?;
        ok(SetStudyUserAttributeReply {})
    }

    async fn set_study_system_attribute(
        &self,
        r: Request<SetStudySystemAttributeRequest>,
    ) -> Answer<SetStudySystemAttributeReply> {
        let r = r.into_inner();
        self.storage
            .set_study_attr(r.study_id, true, &r.key, &r.value)
            .await
            .map_err(status)?;
        ok(SetStudySystemAttributeReply {})
    }

    async fn get_study_id_from_name(
        &self,
        r: Request<GetStudyIdFromNameRequest>,
    ) -> Answer<GetStudyIdFromNameReply> {
        let study_id = self
            .storage
            .study_id(&r.into_inner().study_name)
            .await
            .map_err(status)?;
        ok(GetStudyIdFromNameReply { study_id })
    }

    async fn get_study_name_from_id(
        &self,
        r: Request<GetStudyNameFromIdRequest>,
    ) -> Answer<GetStudyNameFromIdReply> {
        let study = self
            .storage
            .study(r.into_inner().study_id)
            .await
            .map_err(status)?;
        ok(GetStudyNameFromIdReply {
            study_name: study.name,
        })
    }

    async fn get_study_directions(
        &self,
        r: Request<GetStudyDirectionsRequest>,
    ) -> Answer<GetStudyDirectionsReply> {
        let study = self
            .storage
            .study(r.into_inner().study_id)
            .await
            .map_err(status)?;
        ok(GetStudyDirectionsReply {
            directions: direction_numbers(&study.directions),
        })
    }

    async fn get_study_user_attributes(
        &self,
        r: Request<GetStudyUserAttributesRequest>,
    ) -> Answer<GetStudyUserAttributesReply> {
        let study = self
            .storage
            .study(r.into_inner().study_id)
            .await
            .map_err(status)?;
        ok(GetStudyUserAttributesReply {
            user_attributes: study.user_attrs.into_iter().collect(),
        })
    }

    async fn get_study_system_attributes(
        &self,
        r: Request<GetStudySystemAttributesRequest>,
    ) -> Answer<GetStudySystemAttributesReply> {
        let study = self
            .storage
            .study(r.into_inner().study_id)
            .await
            .map_err(status)?;
        ok(GetStudySystemAttributesReply {
            system_attributes: study.system_attrs.into_iter().collect(),
        })
    }

    async fn get_all_studies(
        &self,
        _: Request<GetAllStudiesRequest>,
    ) -> Answer<GetAllStudiesReply> {
        let studies = self
            .storage
            .all_studies()
            .await
            .map_err(status)?
            .into_iter()
            .map(|s| Study {
                study_id: s.id,
                study_name: s.name,
                directions: direction_numbers(&s.directions),
                user_attributes: s.user_attrs.into_iter().collect(),
                system_attributes: s.system_attrs.into_iter().collect(),
            })
            .collect();
        ok(GetAllStudiesReply { studies })
    }

    async fn create_new_trial(
        &self,
        r: Request<CreateNewTrialRequest>,
    ) -> Answer<CreateNewTrialReply> {
        let r = r.into_inner();
        let template = match (r.template_trial_is_none, r.template_trial) {
            (true, _) | (false, None) => None,
            (false, Some(t)) => Some(from_message(t)?),
        };
        let trial_id = self
            .storage
            .create_trial(r.study_id, template)
            .await
            .map_err(status)?;
        ok(CreateNewTrialReply { trial_id })
    }

    async fn set_trial_parameter(
        &self,
        r: Request<SetTrialParameterRequest>,
    ) -> Answer<SetTrialParameterReply> {
        let r = r.into_inner();
        self.storage
            .set_param(
                r.trial_id,
                &r.param_name,
                r.param_value_internal,
                &r.distribution,
            )
            .await
            .map_err(status)?;
        ok(SetTrialParameterReply {})
    }

    async fn get_trial_id_from_study_id_trial_number(
        &self,
        r: Request<GetTrialIdFromStudyIdTrialNumberRequest>,
    ) -> Answer<GetTrialIdFromStudyIdTrialNumberReply> {
        let r = r.into_inner();
        let trial_id = self
            .storage
            .trial_id(r.study_id, r.trial_number)
            .await
            .map_err(status)?;
        ok(GetTrialIdFromStudyIdTrialNumberReply { trial_id })
    }

    async fn set_trial_state_values(
        &self,
        r: Request<SetTrialStateValuesRequest>,
    ) -> Answer<SetTrialStateValuesReply> {
        let r = r.into_inner();
        let trial_updated = self
            .storage
            .set_state_values(r.trial_id, state(r.state)?, &r.values)
            .await
            .map_err(status)?;
        ok(SetTrialStateValuesReply { trial_updated })
    }

    async fn set_trial_intermediate_value(
        &self,
        r: Request<SetTrialIntermediateValueRequest>,
    ) -> Answer<SetTrialIntermediateValueReply> {
        let r = r.into_inner();
        self.storage
            .set_intermediate(r.trial_id, r.step, r.intermediate_value)
            .await
            .map_err(status)?;
        ok(SetTrialIntermediateValueReply {})
    }

    async fn set_trial_user_attribute(
        &self,
        r: Request<SetTrialUserAttributeRequest>,
    ) -> Answer<SetTrialUserAttributeReply> {
        let r = r.into_inner();
        self.storage
            .set_trial_attr(r.trial_id, false, &r.key, &r.value)
            .await
            .map_err(status)?;
        ok(SetTrialUserAttributeReply {})
    }

    async fn set_trial_system_attribute(
        &self,
        r: Request<SetTrialSystemAttributeRequest>,
    ) -> Answer<SetTrialSystemAttributeReply> {
        let r = r.into_inner();
        self.storage
            .set_trial_attr(r.trial_id, true, &r.key, &r.value)
            .await
            .map_err(status)?;
        ok(SetTrialSystemAttributeReply {})
    }

    async fn get_trial(&self, r: Request<GetTrialRequest>) -> Answer<GetTrialReply> {
        let t = self
            .storage
            .trial(r.into_inner().trial_id)
            .await
            .map_err(status)?;
        ok(GetTrialReply {
            trial: Some(to_message(t)),
        })
    }

    async fn get_trials(&self, r: Request<GetTrialsRequest>) -> Answer<GetTrialsReply> {
        let r = r.into_inner();
        // Each id is a bound parameter: SQLite takes at most 32,766 in one statement.
        if r.included_trial_ids.len() > 30_000 {
            return Err(Status::invalid_argument("at most 30000 included_trial_ids"));
        }
        let trials = self
            .storage
            .trials(r.study_id, r.trial_id_greater_than, &r.included_trial_ids)
            .await
            .map_err(status)?
            .into_iter()
            .map(to_message)
            .collect();
        ok(GetTrialsReply { trials })
    }
}

/// Serves `optuna.StorageService` on `listener` (plaintext HTTP/2, as Optuna's client
/// connects) until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    storage: OptunaStorage,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let service = StorageServiceServer::new(Service { storage })
        // The first GetTrials of a client is the whole study in one message.
        .max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(crate::inference::grpc::nodelay(listener), shutdown)
        .await
}
