//! Pin the wire format to the public Fluxion service's proto: field numbers,
//! wire types, enum values, service and method names. The expected bytes are
//! written out by hand from the public `fluxion.proto`.

mod common;

use fluxion_grpc::proto::*;
use prost::Message;

fn bytes(m: &impl Message) -> Vec<u8> {
    m.encode_to_vec()
}

#[test]
fn init_messages() {
    let m = InitRequest {
        policy: "lonode".into(),
        jgf: "{}".into(),
    };
    // policy = 1 (string), jgf = 2 (string)
    assert_eq!(bytes(&m), b"\x0a\x06lonode\x12\x02{}");
    // status = 1 (enum): INIT_SUCCESS=0, INIT_ERROR=1, INIT_DENIED=2
    let r = InitResponse { status: 2 };
    assert_eq!(bytes(&r), b"\x08\x02");
    use init_response::ResultType as T;
    assert_eq!(
        [
            T::InitSuccess as i32,
            T::InitError as i32,
            T::InitDenied as i32
        ],
        [0, 1, 2]
    );
    assert_eq!(T::InitDenied.as_str_name(), "INIT_DENIED");
}

#[test]
fn match_messages() {
    let m = MatchRequest {
        jobspec: "js".into(),
        request: "allocate".into(),
        reservation: true,
    };
    // jobspec = 1 (string), request = 2 (string), reservation = 3 (bool)
    assert_eq!(bytes(&m), b"\x0a\x02js\x12\x08allocate\x18\x01");
    // An old client's `int32 count = 3` (=1) decodes as reservation = true.
    let old = MatchRequest::decode(&b"\x0a\x02js\x18\x01"[..]).unwrap();
    assert!(old.reservation);

    let r = MatchResponse {
        allocation: "A".into(),
        jobid: 7,
        reserved: true,
        at: 300,
        overhead: 1.0,
        status: 2,
    };
    // allocation = 1 (string), jobid = 2 (int64), reserved = 3 (bool),
    // at = 4 (int64), overhead = 5 (float, fixed32), status = 6 (enum)
    let want: Vec<u8> = [
        &b"\x0a\x01A"[..],
        b"\x10\x07",
        b"\x18\x01",
        b"\x20\xac\x02",
        b"\x2d\x00\x00\x80\x3f",
        b"\x30\x02",
    ]
    .concat();
    assert_eq!(bytes(&r), want);
    assert_eq!(MatchResponse::decode(&want[..]).unwrap(), r);
    // Negative int64 job ids are plain varints (10 bytes), not zigzag.
    let neg = MatchResponse {
        jobid: -1,
        ..Default::default()
    };
    assert_eq!(bytes(&neg), b"\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01");
    use match_response::ResultType as T;
    assert_eq!(
        [
            T::MatchSuccess as i32,
            T::MatchError as i32,
            T::MatchDenied as i32
        ],
        [0, 1, 2]
    );
}

#[test]
fn cancel_messages() {
    // jobID = 2 (int64): field 1 is unused in the public proto.
    assert_eq!(bytes(&CancelRequest { job_id: 5 }), b"\x10\x05");
    let r = CancelResponse {
        job_id: 5,
        error: 3,
        status: 3,
    };
    // jobID = 1 (int64), error = 2 (int32), status = 3 (enum)
    assert_eq!(bytes(&r), b"\x08\x05\x10\x03\x18\x03");
    use cancel_response::ResultType as T;
    assert_eq!(
        [
            T::CancelSuccess as i32,
            T::CancelRequestError as i32,
            T::CancelError as i32,
            T::CancelDenied as i32
        ],
        [0, 1, 2, 3]
    );
}

#[test]
fn extension_messages() {
    let r = RestoreRequest {
        jobid: 4,
        allocation: "A".into(),
    };
    assert_eq!(bytes(&r), b"\x08\x04\x12\x01A");
    let i = InfoResponse {
        implementation: "p".into(),
        version: "v".into(),
        instance_id: "i".into(),
        init_generation: 2,
        live_jobs: 3,
        backend: "b".into(),
    };
    assert_eq!(
        bytes(&i),
        b"\x0a\x01p\x12\x01v\x1a\x01i\x20\x02\x28\x03\x32\x01b"
    );
}

#[test]
fn service_and_method_names() {
    use tonic::server::NamedService;
    type S = fluxion_service_server::FluxionServiceServer<fluxion_grpc::server::PancakeService>;
    assert_eq!(<S as NamedService>::NAME, "fluxion.FluxionService");
    // The method paths the generated client uses (grep of the generated code
    // would be brittle; the proto text is the source of truth).
    let proto = include_str!("../proto/fluxion.proto");
    assert!(proto.contains("package fluxion;"));
    assert!(proto.contains("service FluxionService {"));
    for rpc in [
        "rpc Match(MatchRequest) returns (MatchResponse)",
        "rpc Cancel(CancelRequest) returns (CancelResponse)",
        "rpc Init(InitRequest) returns (InitResponse)",
    ] {
        assert!(proto.contains(rpc), "{rpc}");
    }
}

/// The HTTP/2 paths, spelled out, reach the server's methods.
#[test]
fn method_paths_on_the_wire() {
    let server = fluxion_grpc::ServerHandle::spawn(
        Box::new(common::FakeFluxion::default()),
        fluxion_grpc::ServerOptions {
            port: 0,
            log: false,
            shutdown_grace: std::time::Duration::from_millis(100),
            ..Default::default()
        },
    )
    .unwrap();
    let addr = format!("http://{}", server.addr());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(addr)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        macro_rules! call {
            ($path:literal, $req:expr, $resp:ty) => {{
                grpc.ready().await.unwrap();
                let codec = tonic_prost::ProstCodec::<_, $resp>::default();
                grpc.unary(tonic::Request::new($req), http_path($path), codec)
                    .await
                    .map(|r| r.into_inner())
            }};
        }
        let init = call!(
            "/fluxion.FluxionService/Init",
            InitRequest {
                policy: String::new(),
                jgf: common::jgf(1, 2)
            },
            InitResponse
        )
        .unwrap();
        assert_eq!(init.status, 0);
        let m = call!(
            "/fluxion.FluxionService/Match",
            MatchRequest {
                jobspec: common::jobspec(1),
                request: String::new(),
                reservation: false
            },
            MatchResponse
        )
        .unwrap();
        assert_eq!(m.jobid, 1);
        let c = call!(
            "/fluxion.FluxionService/Cancel",
            CancelRequest { job_id: 1 },
            CancelResponse
        )
        .unwrap();
        assert_eq!(c.job_id, 1);
        let i = call!("/fluxion.FluxionService/Info", InfoRequest {}, InfoResponse).unwrap();
        assert_eq!(i.implementation, "pancake-fluxion");
        let st = call!(
            "/fluxion.FluxionService/Restore",
            RestoreRequest {
                jobid: 0,
                allocation: String::new()
            },
            RestoreResponse
        )
        .unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        let st = call!(
            "/fluxion.FluxcliService/Match",
            InfoRequest {},
            InfoResponse
        )
        .unwrap_err();
        assert_eq!(st.code(), tonic::Code::Unimplemented);
    });
}

fn http_path(p: &'static str) -> tonic::codegen::http::uri::PathAndQuery {
    tonic::codegen::http::uri::PathAndQuery::from_static(p)
}
