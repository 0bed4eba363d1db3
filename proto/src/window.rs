//! The window between a minor's messages and the model's: a message is encoded as one and
//! decoded as the other. Protobuf field numbers never change across minors, so every field both
//! know survives and a field that one lacks disappears (it would be kept as an unknown field by
//! other runtimes; prost drops it, which is what a kubelet of the older minor sees anyway).

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use prost::Message;

/// A server stream of one message type, as the generated adapters and clients hand it out.
pub type StreamOf<M> = Pin<Box<dyn Stream<Item = Result<M, tonic::Status>> + Send + 'static>>;

/// Re-encodes `from` as `To`. Fails only where the bytes are not valid for `To` — a `bytes` field
/// that is not UTF-8 going to a minor where that field is a `string` (KeyValue.value before 1.34).
pub fn transcode<From: Message, To: Message + Default>(from: &From) -> Result<To, prost::DecodeError> {
    To::decode(from.encode_to_vec().as_slice())
}

/// A request arriving in a minor's types, handed to the model.
#[allow(clippy::result_large_err)]
pub fn request_to_model<From: Message, To: Message + Default>(
    request: tonic::Request<From>,
) -> Result<tonic::Request<To>, tonic::Status> {
    let (metadata, extensions, message) = request.into_parts();
    let message = transcode(&message)
        .map_err(|e| tonic::Status::invalid_argument(format!("request does not fit the model: {e}")))?;
    Ok(tonic::Request::from_parts(metadata, extensions, message))
}

/// The model's response, narrowed to what the minor's kubelet knows.
#[allow(clippy::result_large_err)]
pub fn response_from_model<From: Message, To: Message + Default>(
    response: tonic::Response<From>,
) -> Result<tonic::Response<To>, tonic::Status> {
    let (metadata, message, extensions) = response.into_parts();
    let message = transcode(&message).map_err(not_representable)?;
    Ok(tonic::Response::from_parts(metadata, message, extensions))
}

/// The model's server stream, each message narrowed as by `response_from_model`.
pub fn stream_from_model<S, From, To>(response: tonic::Response<S>) -> tonic::Response<StreamOf<To>>
where
    S: Stream<Item = Result<From, tonic::Status>> + Send + 'static,
    From: Message,
    To: Message + Default + 'static,
{
    response.map(|stream| {
        let narrowed = stream.map(|item| item.and_then(|m| transcode(&m).map_err(not_representable)));
        Box::pin(narrowed) as StreamOf<To>
    })
}

/// A model request narrowed to a minor (client side: what that minor's kubelet could send).
#[allow(clippy::result_large_err)]
pub fn narrow<From: Message, To: Message + Default>(request: &From) -> Result<To, tonic::Status> {
    transcode(request)
        .map_err(|e| tonic::Status::invalid_argument(format!("request cannot be sent by this minor: {e}")))
}

/// A minor's response read as the model (client side).
#[allow(clippy::result_large_err)]
pub fn widen<From: Message, To: Message + Default>(response: &From) -> Result<To, tonic::Status> {
    transcode(response)
        .map_err(|e| tonic::Status::internal(format!("response is not valid protobuf for the model: {e}")))
}

/// A minor's server stream read as the model (client side).
pub fn stream_to_model<From, To>(stream: tonic::Streaming<From>) -> StreamOf<To>
where
    From: Message + Default + 'static,
    To: Message + Default + 'static,
{
    Box::pin(stream.map(|item| item.and_then(|m| widen(&m))))
}

/// Wraps a message in a request that carries the client's deadline, if it has one.
pub fn deadline<M>(message: M, timeout: Option<Duration>) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    if let Some(timeout) = timeout {
        request.set_timeout(timeout);
    }
    request
}

fn not_representable(e: prost::DecodeError) -> tonic::Status {
    tonic::Status::internal(format!("response cannot be expressed in this CRI minor: {e}"))
}
