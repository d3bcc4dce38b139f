//! A shard applies a new metadata image to its partitions (KRaft's broker metadata
//! publisher): it opens the replicas this broker now holds on this shard, tells each its
//! role (leader or follower, epoch, ISR), and closes and deletes the replicas it no longer
//! holds (topic deleted, replica moved). Runs once per published image, one at a time per
//! shard, always against the newest image.

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;

use crate::shard::ShardCtx;

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
            match ctx.open_partition(&t.name, p).await {
                Ok(part) => part.become_replica(ctx, state),
                // A newer image (being published) no longer has the topic: its reconcile
                // comes next.
                Err(e) if ctx.broker.image().topic(&t.name).map(|n| n.id) != Some(t.id) => {
                    tracing::debug!(topic = %t.name, partition = p, error = %e, "topic gone meanwhile")
                }
                Err(e) => {
                    tracing::error!(topic = %t.name, partition = p, error = %e, "cannot open partition")
                }
            }
        }
    }
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
