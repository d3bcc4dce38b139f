//! The record codecs of compressed batches (gzip, xerial-framed snappy, Kafka's LZ4
//! frame, zstd), kafka-protocol's implementations: a batch's records payload (what
//! follows its 61-byte header) decompressed to the encoded records, and back. The
//! cleaner uses them to compact compressed batches record by record.

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

use crate::batch::{BatchError, Compression};

/// The encoded records inside a compressed payload.
pub fn decompress(codec: Compression, payload: &[u8]) -> Result<Bytes, BatchError> {
    let mut buf = Bytes::copy_from_slice(payload);
    let take = |b: &mut Bytes| Ok(b.copy_to_bytes(b.remaining()));
    let out = match codec {
        Compression::None => Ok(buf),
        Compression::Gzip => Gzip::decompress(&mut buf, take),
        Compression::Snappy => Snappy::decompress(&mut buf, take),
        Compression::Lz4 => Lz4::decompress(&mut buf, take),
        Compression::Zstd => Zstd::decompress(&mut buf, take),
    };
    out.map_err(|_| BatchError::InvalidRecord("compressed records do not decode"))
}

/// `records` (encoded records) compressed with `codec`.
pub fn compress(codec: Compression, records: &[u8]) -> Result<Bytes, BatchError> {
    let mut out = BytesMut::new();
    let put = |tmp: &mut BytesMut| {
        tmp.extend_from_slice(records);
        Ok(())
    };
    let done = match codec {
        Compression::None => {
            out.extend_from_slice(records);
            Ok(())
        }
        Compression::Gzip => Gzip::compress(&mut out, put),
        Compression::Snappy => Snappy::compress(&mut out, put),
        Compression::Lz4 => Lz4::compress(&mut out, put),
        Compression::Zstd => Zstd::compress(&mut out, put),
    };
    done.map_err(|_| BatchError::InvalidRecord("records do not compress"))?;
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let raw: Vec<u8> = (0..5000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = compress(codec, &raw).unwrap();
            assert_eq!(decompress(codec, &packed).unwrap(), raw, "{codec:?}");
        }
    }
}
