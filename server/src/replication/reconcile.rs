//! A shard applies a new metadata image to its partitions (KRaft's broker metadata
//! publisher): it opens the replicas this broker now holds on this shard, tells each its
//! role (leader or follower, epoch, ISR), and closes and deletes the replicas it no longer
//! holds (topic deleted, replica moved). Runs once per published image, one at a time per
//! shard, always against the newest image.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use crate::metadata::PartitionState;
use crate::runtime::shard::ShardCtx;
use crate::storage::partition::Partition;

/// Runs a reconcile on this shard (the publisher's shard task).
pub fn schedule(ctx: Rc<ShardCtx>) {
    compio::runtime::spawn(async move { reconcile(&ctx).await }).detach();
}

pub async fn reconcile(ctx: &Rc<ShardCtx>) {
    let mut done = ctx.reconciled.lock().await;
    let image = ctx.broker.image();
    if *done >= image.offset && *done != 0 {
        ctx.broker.cluster().mark_reconciled(ctx.id, *done);
        return;
    }
    let me = ctx.broker.config.node_id;
    if ctx.id == 0 {
        ctx.broker.quotas.update(&image, me);
    }
    let shards = ctx.broker.shard_count();
    let mut wanted: HashSet<(Arc<str>, i32)> = HashSet::new();
    // This shard's replicas in the image's order, with their topic id and state.
    let mut held = Vec::new();
    for t in image.topics.values() {
        for (p, state) in t.partitions.iter().enumerate() {
            let p = p as i32;
            if !state.replicas.contains(&me) || t.owner_shard(p, shards) != Some(ctx.id) {
                continue;
            }
            let name: Arc<str> = Arc::from(t.name.as_str());
            wanted.insert((Arc::clone(&name), p));
            if let Some(old) = ctx.partition(&t.name, p)
                && old.topic_id != t.id
            {
                // Deleted and re-created under the same name since the last reconcile.
                if let Err(e) = ctx.delete_partition(&t.name, p) {
                    tracing::warn!(topic = %t.name, partition = p, error = %e, "removing the old topic's partition failed");
                }
            }
            held.push(((name, p), t.id, state));
        }
    }
    // The replicas this broker leads first: producers can use them while the followers'
    // logs are still being opened.
    let (leading, following): (Vec<_>, Vec<_>) =
        held.into_iter().partition(|(_, _, st)| st.leader == me);
    take_roles(ctx, me, leading).await;
    take_roles(ctx, me, following).await;
    for part in ctx.partitions() {
        if !wanted.contains(&(Arc::clone(&part.topic), part.index)) {
            tracing::info!(topic = %part.topic, partition = part.index, "removing a replica this broker no longer holds");
            if let Err(e) = ctx.delete_partition(&part.topic, part.index) {
                tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "deleting partition files failed");
            }
        }
    }
    *done = image.offset;
    ctx.broker.cluster().mark_reconciled(ctx.id, image.offset);
}

/// A replica of this shard, keyed by topic and partition, with its topic id and state.
type Held<'a> = ((Arc<str>, i32), uuid::Uuid, &'a PartitionState);

/// Opens the logs of `held` this shard does not have yet, writes the epochs of those it
/// now leads, and gives each its role.
async fn take_roles(ctx: &Rc<ShardCtx>, me: i32, held: Vec<Held<'_>>) {
    let keys: Vec<(Arc<str>, i32)> = held.iter().map(|(k, ..)| k.clone()).collect();
    let opened = ctx.open_partitions(&keys).await;
    // New leaders' epochs are written before they lead, all at once off the shard (one
    // file sync each would otherwise stall the shard a thousand times for a topic of a
    // thousand partitions); become_replica then finds them written.
    let mut epoch_writes = Vec::new();
    for (((name, p), _, state), result) in held.iter().zip(&opened) {
        if let Ok(part) = result
            && state.leader == me
            && part.replica.borrow().leader_epoch != state.leader_epoch
        {
            let mut log = part.log.log_mut();
            let leo = log.log_end_offset();
            if let Some(w) = log.assign_leader_epoch_deferred(state.leader_epoch, leo) {
                epoch_writes.push((Arc::clone(name), *p, w));
            }
        }
    }
    let written = crate::runtime::shard::blocking_batches(epoch_writes, |(name, p, w)| {
        w.write()
            .map_err(|e| format!("{name}-{p}: persisting leader epochs failed: {e}"))
    })
    .await;
    for e in written.into_iter().filter_map(Result::err) {
        tracing::warn!(error = %e, "persisting leader epochs failed");
    }
    for (((name, p), id, state), result) in held.into_iter().zip(opened) {
        match result {
            Ok(part) => become_replica(&part, ctx, state),
            // A newer image (being published) no longer has the topic: its reconcile
            // comes next.
            Err(e) if ctx.broker.image().topic(&name).map(|n| n.id) != Some(id) => {
                tracing::debug!(topic = %name, partition = p, error = %e, "topic gone meanwhile")
            }
            Err(e) => {
                tracing::error!(topic = %name, partition = p, error = %e, "cannot open partition")
            }
        }
    }
}

/// Takes the role the metadata gives this broker for the partition. A new leader
/// epoch starts at the log end in the leader-epoch cache (what OffsetForLeaderEpoch
/// and follower truncation read).
pub fn become_replica(part: &Rc<Partition>, ctx: &Rc<ShardCtx>, state: &PartitionState) {
    let previous = part.replica.replace(state.clone());
    if previous.leader_epoch == state.leader_epoch && previous.leader == state.leader {
        // Same leadership; the ISR may have changed (the high watermark with it), or
        // the replica set: a replica that left is no longer tracked.
        if part.is_leader() {
            part.repl
                .borrow_mut()
                .followers
                .retain(|r, _| state.replicas.contains(r));
            part.refresh_high_watermark();
        }
        part.wake_fetchers();
        return;
    }
    let me = ctx.broker.config.node_id;
    if state.leader == me {
        let assigned = {
            let mut log = part.log.log_mut();
            let leo = log.log_end_offset();
            log.assign_leader_epoch(state.leader_epoch, leo)
        };
        if let Err(e) = assigned {
            tracing::warn!(topic = %part.topic, partition = part.index, error = %e, "persisting leader epochs failed");
        }
        part.start_leading();
        if part.topic.as_ref() == crate::metadata::OFFSETS_TOPIC {
            // The group coordinator moves here: committed offsets as the log has them.
            let loaded = ctx.offsets.borrow_mut().load(part.index, &part.log.log());
            if let Err(e) = loaded {
                tracing::error!(partition = part.index, error = %e, "loading committed offsets failed");
            }
        }
        if part.topic.as_ref() == crate::metadata::TXN_TOPIC {
            // The transaction coordinator moves here: the ids' states as the log has
            // them (the shard's transaction loop finishes what was being decided).
            let started = std::time::Instant::now();
            let loaded =
                ctx.txns
                    .borrow_mut()
                    .load(part.index, state.leader_epoch, &part.log.log());
            let ms = started.elapsed().as_millis() as u64;
            let m = &ctx.broker.metrics;
            crate::metrics::Metrics::add(&m.transaction_state_loads, 1);
            crate::metrics::Metrics::add(&m.transaction_state_load_ms, ms);
            match loaded {
                Ok(n) => tracing::debug!(
                    partition = part.index,
                    records = n,
                    ms,
                    "loaded transaction state"
                ),
                Err(e) => {
                    tracing::error!(partition = part.index, error = %e, "loading transaction state failed")
                }
            }
        }
        part.refresh_high_watermark();
        tracing::debug!(topic = %part.topic, partition = part.index, epoch = state.leader_epoch, "leading");
    } else {
        if part.topic.as_ref() == crate::metadata::OFFSETS_TOPIC {
            // Not (or no longer) the group coordinator: this shard holds none of its groups.
            ctx.offsets.borrow_mut().unload(part.index);
            ctx.groups.borrow_mut().unload(part.index);
        }
        if part.topic.as_ref() == crate::metadata::TXN_TOPIC {
            ctx.txns.borrow_mut().unload(part.index);
        }
        part.repl.borrow_mut().needs_truncation = true;
        if state.leader != crate::metadata::NO_LEADER {
            crate::replication::fetcher::ensure(ctx, state.leader, part.fetcher_id(ctx));
        }
        tracing::debug!(topic = %part.topic, partition = part.index, leader = state.leader, epoch = state.leader_epoch, "following");
    }
    part.wake_fetchers();
}
