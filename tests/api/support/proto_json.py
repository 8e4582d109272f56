"""Reads `wechat_gateway.v1.Event`s in the proto3 JSON mapping, one per line on stdin, with
Google's protobuf library (`json_format.Parse`, strict: an unknown field or a value of the wrong
type fails), and writes the binary encoding of each as hex, one per line.

    python proto_json.py DESCRIPTORS.bin < events.jsonl

DESCRIPTORS.bin: the FileDescriptorSet the gateway's build compiled from proto/.
"""
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

with open(sys.argv[1], "rb") as f:
    files = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file
pool = descriptor_pool.DescriptorPool()
added = set()
while len(added) < len(files):  # a file after the files it imports
    ready = [f for f in files if f.name not in added and all(d in added for d in f.dependency)]
    if not ready:
        sys.exit("the descriptor set imports files it does not hold")
    for f in ready:
        pool.Add(f)
        added.add(f.name)
Event = message_factory.GetMessageClass(pool.FindMessageTypeByName("wechat_gateway.v1.Event"))
for line in sys.stdin:
    if line.strip():
        print(json_format.Parse(line, Event()).SerializeToString().hex())
