//! The coordinator room: the group coordinator (classic protocol: membership, rebalances,
//! static members; [`group`]) and the committed offsets it serves from
//! `__consumer_offsets` ([`offsets`]), both on the shard that leads the group's partition;
//! the transaction coordinator's state from `__transaction_state` ([`transactions`]).

pub mod group;
pub mod offsets;
pub mod transactions;

/// Calls `f` with every batch (header and bytes) of a coordinator partition's log, from
/// its start to its end: how a coordinator that takes a partition over loads its state.
pub fn replay(
    log: &ringmq_engine::UnifiedLog,
    mut f: impl FnMut(&ringmq_engine::BatchHeader, &[u8]),
) -> Result<(), String> {
    let mut next = log.log_start_offset();
    let end = log.log_end_offset();
    while next < end {
        let info = log
            .read(next, 1 << 20, end, true)
            .map_err(|e| e.to_string())?;
        let Some(range) = info.range else { break };
        let bytes =
            ringmq_engine::UnifiedLog::read_range_bytes(&range).map_err(|e| e.to_string())?;
        for b in ringmq_engine::batch::BatchIter::new(&bytes) {
            let (_, h, raw) = b.map_err(|e| e.to_string())?;
            next = h.next_offset();
            f(&h, raw);
        }
        if next <= range.first_offset {
            break;
        }
    }
    Ok(())
}
