#!/usr/bin/env python3
"""A minimal CRM EventSink for wechat-gateway: receives the gateway's events over gRPC and prints
each one as a line. Copy it and replace handle() with your CRM's own code.

    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt
    .venv/bin/python sink.py                       # listens on 127.0.0.1:50052

Then set `[crm] endpoint = "http://127.0.0.1:50052"` in the gateway's configuration (or
WGW_CRM__ENDPOINT=http://127.0.0.1:50052). The Python code for the protos is generated at start
from proto/ (grpcio-tools), so it always matches the gateway it came with.
"""

import argparse
import os
import sys
from concurrent import futures

HERE = os.path.dirname(os.path.abspath(__file__))


def generate(proto_dir, out_dir):
    """Compiles events.proto into out_dir (events_pb2.py, events_pb2_grpc.py) and imports it."""
    from grpc_tools import protoc
    import grpc_tools

    os.makedirs(out_dir, exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    status = protoc.main([
        "grpc_tools.protoc",
        f"-I{proto_dir}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        os.path.join(proto_dir, "wechat_gateway", "v1", "events.proto"),
    ])
    if status != 0:
        sys.exit(f"protoc failed ({status}) on {proto_dir}")
    sys.path.insert(0, out_dir)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:50052", help="address to serve EventSink on")
    parser.add_argument("--proto", default=os.path.join(HERE, "..", "..", "proto"),
                        help="the gateway's proto/ directory")
    parser.add_argument("--gen", default=os.path.join(HERE, "gen"),
                        help="where the generated Python code goes")
    args = parser.parse_args()

    generate(os.path.abspath(args.proto), os.path.abspath(args.gen))
    import grpc
    from google.protobuf import json_format
    from wechat_gateway.v1 import events_pb2, events_pb2_grpc

    seen = set()
    # With CRM_TOKEN set (the gateway's crm.token), a Deliver without it is refused: the gateway
    # keeps the batch and retries, so nothing is lost while the two sides disagree.
    token = os.environ.get("CRM_TOKEN", "")

    def handle(event):
        """Your CRM's code goes here. Raise to have the whole batch retried."""
        kind = event.WhichOneof("kind") or "none"
        who = event.open_id or event.external_user_id or event.user_id
        body = json_format.MessageToJson(event, indent=None, preserving_proto_field_name=True)
        print(f"event {kind} account={event.account_id} user={who} id={event.id} {body}",
              flush=True)

    class Sink(events_pb2_grpc.EventSinkServicer):
        def Deliver(self, request, context):
            if token:
                import hmac
                sent = dict(context.invocation_metadata()).get("authorization", "")
                if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
                    context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad or missing bearer token")
            for event in request.events:
                # Delivery is at least once, and Event.id is stable: skip what was seen.
                if event.id in seen:
                    print(f"duplicate {event.id} (already handled)", flush=True)
                    continue
                handle(event)
                seen.add(event.id)
            # Nothing rejected: every event of the batch counts as accepted. To refuse one for
            # good (it goes to the gateway's dead letters), list it in `rejected`.
            return events_pb2.DeliverResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    events_pb2_grpc.add_EventSinkServicer_to_server(Sink(), server)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"cannot listen on {args.listen}")
    server.start()
    print(f"EventSink listening on {args.listen}", flush=True)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(grace=2)


if __name__ == "__main__":
    main()
