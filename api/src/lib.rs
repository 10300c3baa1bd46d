//! ward-api: the control-plane gRPC API (`proto/ward/v1`) and its generated tonic code.

/// The protobuf codec of the API: tonic's prost codec with a 1 KiB initial buffer instead
/// of 8 KiB. Control-plane messages are small and a control plane holds one long-lived
/// stream per proxy, so the default buffer was most of a stream's memory; larger messages
/// still grow the buffer as needed.
pub mod codec {
    use std::marker::PhantomData;

    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstDecoder, ProstEncoder};

    const BUFFER: usize = 1024;
    const YIELD_THRESHOLD: usize = 32 * 1024;

    #[derive(Debug, Clone, Copy)]
    pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for SmallBufferCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for SmallBufferCodec<T, U>
    where
        T: prost::Message + Send + 'static,
        U: prost::Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstEncoder::new(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstDecoder::new(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
        }
    }
}

/// Version 1 of the API, package `ward.v1`.
pub mod v1 {
    tonic::include_proto!("ward.v1");
}

/// The SPIFFE Workload API (`/SpiffeWorkloadAPI/...`, no protobuf package): served by
/// sidecars to their apps, and used as a client of a SPIRE agent.
pub mod workload {
    tonic::include_proto!("_");

    /// The metadata every Workload API request must carry (`true`), so that a browser or
    /// an SSRF-able client cannot be tricked into calling the socket.
    pub const SECURITY_HEADER: &str = "workload.spiffe.io";
}

/// Envoy's secret discovery service (`envoy.service.secret.v3`), as much of it as ward
/// serves: Envoy gets its SVID and trust bundles from a sidecar's Workload API socket.
pub mod sds {
    tonic::include_proto!("envoy.service.secret.v3");

    /// `type_url` of the secrets SDS carries.
    pub const SECRET_TYPE: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

#[cfg(test)]
mod tests {
    use super::v1::{CertifyRequest, CertifyResponse};
    use prost::Message;

    #[test]
    fn messages_round_trip_on_the_wire() {
        let req = CertifyRequest {
            csr: vec![0x30, 0x82, 1, 2],
            token: "join-token".into(),
            spiffe_id: String::new(),
            serving: Vec::new(),
        };
        let bytes = req.encode_to_vec();
        assert_eq!(CertifyRequest::decode(bytes.as_slice()).unwrap(), req);

        let resp = CertifyResponse {
            chain: vec![vec![1], vec![2]],
            bundle: vec![vec![3]],
            spiffe_id: "spiffe://example.org/ns/a/sa/b".into(),
            not_after_unix: 1_800_000_000,
            workload: None,
            bundle_version: 2,
        };
        assert_eq!(
            CertifyResponse::decode(resp.encode_to_vec().as_slice()).unwrap(),
            resp
        );
    }

    #[test]
    fn service_is_named_in_the_ward_v1_package() {
        assert_eq!(
            <super::v1::identity_server::IdentityServer<Unimplemented> as tonic::server::NamedService>::NAME,
            "ward.v1.Identity"
        );
    }

    struct Unimplemented;

    #[tonic::async_trait]
    impl super::v1::identity_server::Identity for Unimplemented {
        async fn certify(
            &self,
            _request: tonic::Request<CertifyRequest>,
        ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("test"))
        }
    }
}
