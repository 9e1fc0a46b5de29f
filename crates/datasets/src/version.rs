//! Store rows as the shared version view (`trainyard_core::dataset`).

use trainyard_core::dataset::DatasetVersionInfo;
use trainyard_store::DatasetVersion;

use crate::DatasetError;

pub(crate) fn from_row(v: DatasetVersion) -> Result<DatasetVersionInfo, DatasetError> {
    let manifest =
        serde_json::from_str(&v.manifest).map_err(|e| trainyard_store::StoreError::Corrupt {
            what: format!("dataset {}:{}", v.name, v.version),
            message: e.to_string(),
        })?;
    Ok(DatasetVersionInfo {
        name: v.name,
        version: v.version,
        created_ms: v.created_ms,
        rows: v.rows,
        bytes: v.bytes,
        parent: v.parent,
        manifest,
    })
}
