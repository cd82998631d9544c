#!/usr/bin/env python3
"""grpcio interop client for the checklist items of docs/grpc.md that
name grpcio (1, 10, 26, 35, 37, 39, 40). Run by tests/grpc/*.rs as
`python3 tests/py/interop.py COMMAND ARGS...`; prints one JSON line.

Stubs are compiled at run time with grpcio-tools from the repository's
proto/ files (copied under private module names so that the generated
`grpc/...` packages do not shadow grpcio's own `grpc` module).
"""
import concurrent.futures
import importlib
import json
import os
import shutil
import sys
import tempfile
import time

import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTO = os.path.join(ROOT, "proto")
SPECIAL = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"


def stubs():
    """Compile health and both reflection protos; return their pb2 modules."""
    out = tempfile.mkdtemp(prefix="slimgate-py-")
    files = {
        "sg_health.proto": "grpc/health/v1/health.proto",
        "sg_refl_v1.proto": "grpc/reflection/v1/reflection.proto",
        "sg_refl_v1alpha.proto": "grpc/reflection/v1alpha/reflection.proto",
    }
    for dst, src in files.items():
        shutil.copy(os.path.join(PROTO, src), os.path.join(out, dst))
    args = ["protoc", "-I" + out, "--python_out=" + out] + [os.path.join(out, f) for f in files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, out)
    return (
        importlib.import_module("sg_health_pb2"),
        importlib.import_module("sg_refl_v1_pb2"),
        importlib.import_module("sg_refl_v1alpha_pb2"),
    )


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def test_msg(code=0, message="", count=0):
    """slimgate.test TestMsg (tests/grpc/support.rs), encoded by hand."""
    out = b""
    if code:
        out += b"\x18" + varint(code)
    if message:
        m = message.encode("utf-8")
        out += b"\x22" + varint(len(m)) + m
    if count:
        out += b"\x30" + varint(count)
    return out


def health_check(channel, health, timeout=5, metadata=None):
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health.HealthCheckRequest.SerializeToString,
        response_deserializer=health.HealthCheckResponse.FromString,
    )
    resp, call = check.with_call(health.HealthCheckRequest(service=""), timeout=timeout, metadata=metadata)
    return resp, call


def cmd_check(addr):
    health, _, _ = stubs()
    with grpc.insecure_channel(addr) as ch:
        resp, call = health_check(ch, health)
        return {"status": resp.status, "code": call.code().name}


def cmd_special(addr):
    with grpc.insecure_channel(addr) as ch:
        fail = ch.unary_unary("/slimgate.test.Test/Fail")
        try:
            fail(test_msg(code=2, message=SPECIAL), timeout=5)
            return {"code": "OK"}
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details()}


def cmd_over_limit(addr):
    with grpc.insecure_channel(addr) as ch:
        slow = ch.unary_unary("/slimgate.test.Test/Slow")
        futures = [slow.future(test_msg(count=200), timeout=20) for _ in range(3)]
        codes = []
        for f in futures:
            try:
                f.result()
                codes.append("OK")
            except grpc.RpcError as e:
                codes.append(e.code().name)
        return {"codes": codes}


def cmd_kube(addr):
    """kubelet's probe: user-agent kube-probe/1.31, :authority podIP:port,
    a 1 s budget that includes connecting, Check only, SERVING required."""
    health, _, _ = stubs()
    start = time.monotonic()
    opts = [("grpc.primary_user_agent", "kube-probe/1.31"), ("grpc.default_authority", addr)]
    with grpc.insecure_channel(addr, options=opts) as ch:
        grpc.channel_ready_future(ch).result(timeout=1.0)
        left = max(0.001, 1.0 - (time.monotonic() - start))
        resp, call = health_check(ch, health, timeout=left)
        return {"status": resp.status, "code": call.code().name}


def cmd_uds(path, authority):
    health, _, _ = stubs()
    opts = [("grpc.default_authority", authority)] if authority else []
    with grpc.insecure_channel("unix:" + path, options=opts) as ch:
        try:
            resp, call = health_check(ch, health)
            return {"status": resp.status, "code": call.code().name}
        except grpc.RpcError as e:
            return {"code": e.code().name, "details": e.details()}


def reflect(ch, pb, service, requests):
    info = ch.stream_stream(
        "/grpc.reflection.%s.ServerReflection/ServerReflectionInfo" % service,
        request_serializer=pb.ServerReflectionRequest.SerializeToString,
        response_deserializer=pb.ServerReflectionResponse.FromString,
    )
    return list(info(iter(requests), timeout=10))


def cmd_reflection(addr):
    from google.protobuf import descriptor_pb2, descriptor_pool

    _, v1, v1alpha = stubs()
    with grpc.insecure_channel(addr) as ch:
        lists = []
        for name, pb in (("v1", v1), ("v1alpha", v1alpha)):
            [r] = reflect(ch, pb, name, [pb.ServerReflectionRequest(list_services="")])
            lists.append(sorted(s.name for s in r.list_services_response.service))
        [r, unknown] = reflect(
            ch,
            v1,
            "v1",
            [
                v1.ServerReflectionRequest(file_containing_symbol="openshell.v1.OpenShell"),
                v1.ServerReflectionRequest(file_containing_symbol="no.such.Symbol"),
            ],
        )
    protos = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in r.file_descriptor_response.file_descriptor_proto]
    pool = descriptor_pool.DescriptorPool()
    added = set()
    pending = list(protos)
    # Add each file once its dependencies are in (the response lists the
    # asked-for file first, then its transitive dependencies).
    for _ in range(len(protos) + 1):
        rest = []
        for p in pending:
            if all(d in added for d in p.dependency):
                pool.Add(p)
                added.add(p.name)
            else:
                rest.append(p)
        pending = rest
    loaded = not pending
    methods = []
    if loaded:
        svc = pool.FindServiceByName("openshell.v1.OpenShell")
        methods = [m.name for m in svc.methods]
    return {
        "v1": lists[0],
        "same": lists[0] == lists[1],
        "files": [p.name for p in protos],
        "loaded": loaded,
        "methods": methods,
        "unknown_code": unknown.error_response.error_code,
    }


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    result = globals()["cmd_" + cmd](*args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
