//! Domain types → protobuf messages of the admin service.

use crate::consensus::types::KeyValue;
use crate::pb::admin as pb;
use crate::store::VoterProbe;

pub fn key_value(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease.unwrap_or(0),
    }
}

pub fn voter(p: VoterProbe) -> pb::Voter {
    let (reachable, last_log_index, state, error) = match p.answer {
        Ok(h) => (true, h.last_log_index, h.state, String::new()),
        Err(e) => (false, 0, String::new(), e),
    };
    pb::Voter {
        id: p.id,
        name: p.member.name,
        address: p.member.addr,
        witness: p.member.witness,
        reachable,
        last_log_index,
        state,
        error,
    }
}
