//! `/v1/instances`: the Herald instances sharing this store, from their heartbeats.

use axum::Json;
use axum::extract::State;
use herald_core::store::Instance;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::AdminAccess;
use super::error::ApiError;
use super::wire::rfc3339;

/// A running (or recently running) Herald instance.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceOut {
    /// Its id, new at every start.
    id: String,
    /// Where it runs: process id and version.
    description: String,
    /// When it started.
    started_at: String,
    /// Its last heartbeat (every second while it runs; an instance silent for a
    /// minute is forgotten).
    heartbeat_at: String,
}

/// The instances, in id order.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstancesOut {
    /// The instances.
    data: Vec<InstanceOut>,
}

fn instance_out(instance: Instance) -> InstanceOut {
    InstanceOut {
        id: instance.id,
        description: instance.description,
        started_at: rfc3339(instance.started_at),
        heartbeat_at: rfc3339(instance.heartbeat_at),
    }
}

/// List the instances sharing this store.
#[utoipa::path(get, path = "/v1/instances", tag = "operations",
    responses((status = 200, description = "The instances", body = InstancesOut)))]
pub async fn list_instances(
    _: AdminAccess,
    State(state): State<AppState>,
) -> Result<Json<InstancesOut>, ApiError> {
    let instances = state.management.instances().await?;
    Ok(Json(InstancesOut {
        data: instances.into_iter().map(instance_out).collect(),
    }))
}
