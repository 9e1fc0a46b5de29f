//! The protobuf codec of the gRPC service: prost's, except that a request whose bytes do
//! not parse is the caller's `INVALID_ARGUMENT`. prost's codec answers `INTERNAL`, which
//! tells clients the server broke and invites retries of a request that can never work.

use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

/// Used by the generated service through `codec_path` (see `build.rs`).
#[derive(Debug, Clone, Default)]
pub struct ArgCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Codec for ArgCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = ArgDecoder<<ProstCodec<T, U> as Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ArgDecoder(self.0.decoder())
    }
}

pub struct ArgDecoder<D>(D);

impl<D: Decoder<Error = Status>> Decoder for ArgDecoder<D> {
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        self.0.decode(src).map_err(|e| match e.code() {
            Code::Internal => Status::invalid_argument(format!(
                "the request is not a valid protobuf message: {}",
                e.message()
            )),
            _ => e,
        })
    }

    fn buffer_settings(&self) -> tonic::codec::BufferSettings {
        self.0.buffer_settings()
    }
}
