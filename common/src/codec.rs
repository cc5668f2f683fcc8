//! The gRPC codec of the `flotilla.v1` services: protobuf via prost, except
//! that a message that does not parse is the sender's fault and is answered
//! `INVALID_ARGUMENT` (prost's codec reports `INTERNAL`), so malformed input
//! is told apart from a failure of the learner.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// [`ProstCodec`] with parse errors mapped to `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct FlotillaCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for FlotillaCodec<T, U> {
    fn default() -> Self {
        FlotillaCodec(PhantomData)
    }
}

impl<T, U> Codec for FlotillaCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstCodec::<T, U>::raw_decoder(BufferSettings::default()))
    }
}

/// Decodes with prost; a parse error becomes `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(src).map_err(|s| {
            if s.code() == Code::Internal {
                Status::invalid_argument(format!("malformed protobuf message: {}", s.message()))
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
