//! Producer ids: taken from this broker's block, a new block of [`PRODUCER_ID_BLOCK`]
//! from the controller when it is used up (the counter lives in the cluster metadata, so
//! ids are never reused across restarts).

use std::rc::Rc;

use kafka_protocol::ResponseError;

use crate::cluster::controller::{Answer, ControllerRequest};
use crate::runtime::shard::ShardCtx;

/// Producer ids a broker takes from the controller at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// The next producer id from this broker's block, taking a new block from the controller
/// when it is used up (one metadata commit per thousand producers).
pub async fn allocate(ctx: &Rc<ShardCtx>) -> Result<i64, ResponseError> {
    loop {
        {
            let mut block = ctx
                .broker
                .producer_ids
                .lock()
                .map_err(|_| ResponseError::UnknownServerError)?;
            if let Some(id) = block.next() {
                return Ok(id);
            }
        }
        let req = ControllerRequest::AllocateProducerIds {
            count: PRODUCER_ID_BLOCK,
        };
        match ctx.broker.cluster.submit(req).await {
            Ok((_, Answer::ProducerIds { first })) => {
                let mut block = ctx
                    .broker
                    .producer_ids
                    .lock()
                    .map_err(|_| ResponseError::UnknownServerError)?;
                if block.is_empty() {
                    *block = first..first + PRODUCER_ID_BLOCK;
                }
            }
            Ok(_) => return Err(ResponseError::UnknownServerError),
            Err(e) => return Err(e.code),
        }
    }
}
