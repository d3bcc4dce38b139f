//! ringmq's storage engine.
