//! The sled log store and the state machine against openraft's own storage
//! conformance suite.
#![allow(clippy::result_large_err)]

use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use pgkeel::consensus::log_store::LogStore;
use pgkeel::consensus::state_machine::StateMachine;
use pgkeel::consensus::types::{NodeId, TypeConfig};

struct SledStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledStoreBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let db = sled::Config::new()
            .path(dir.path())
            .cache_capacity(4 * 1024 * 1024)
            .open()
            .map_err(|e| {
                StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e.into())
            })?;
        let log_store = LogStore::open(&db)?;
        let sm = StateMachine::open(&db)?;
        Ok((dir, log_store, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(SledStoreBuilder)
}
