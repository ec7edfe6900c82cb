#!/usr/bin/env python3
"""Produces order events the way producers in a Schema Registry estate do: confluent-kafka's
own serializers (AvroSerializer, JSONSerializer, ProtobufSerializer) registering their schema
and framing each record in the Confluent wire format.

Usage: produce_schema.py --brokers B --registry URL --topic T --format avro|json_schema|protobuf
                         [--schema-version 1|2] [--count N] [--start S] [--out FILE]
Version 2 of each schema adds an optional `coupon` field (schema evolution). Prints one line,
the schema id the serializer used.
"""
import argparse
import json

from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.serialization import MessageField, SerializationContext

AVRO_V1 = {
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [
        {"name": "installation_id", "type": "string"},
        {"name": "order_id", "type": "string"},
        {"name": "total", "type": "double"},
    ],
}
AVRO_V2 = dict(AVRO_V1, fields=AVRO_V1["fields"] + [
    {"name": "coupon", "type": ["null", "string"], "default": None},
])
JSON_V1 = {
    "$schema": "http://json-schema.org/draft-07/schema#", "title": "Order", "type": "object",
    "properties": {"installation_id": {"type": "string"}, "order_id": {"type": "string"},
                   "total": {"type": "number"}},
    "required": ["installation_id", "order_id", "total"],
}
JSON_V2 = dict(JSON_V1, properties=dict(JSON_V1["properties"], coupon={"type": ["string", "null"]}))
PROTO_V1 = """syntax = "proto3";
package shop;
message Order {
  string installation_id = 1;
  string order_id = 2;
  double total = 3;
}
"""
PROTO_V2 = PROTO_V1.replace("  double total = 3;\n", "  double total = 3;\n  optional string coupon = 4;\n")


def protobuf_class(source):
    """The Order message class for a .proto text, built at run time (no protoc)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fd = descriptor_pb2.FileDescriptorProto(name="shop/order.proto", package="shop", syntax="proto3")
    msg = fd.message_type.add(name="Order")
    T = descriptor_pb2.FieldDescriptorProto
    fields = [("installation_id", 1, T.TYPE_STRING), ("order_id", 2, T.TYPE_STRING), ("total", 3, T.TYPE_DOUBLE)]
    for name, number, kind in fields:
        msg.field.add(name=name, number=number, type=kind, label=T.LABEL_OPTIONAL)
    if "coupon" in source:
        msg.oneof_decl.add(name="_coupon")
        msg.field.add(name="coupon", number=4, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL,
                      oneof_index=0, proto3_optional=True)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--registry", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--format", required=True, choices=["avro", "json_schema", "protobuf"])
    p.add_argument("--schema-version", type=int, default=1)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--out", help="write each framed value as a hex line here instead of producing")
    a = p.parse_args()
    v2 = a.schema_version == 2
    registry = SchemaRegistryClient({"url": a.registry})
    if a.format == "avro":
        from confluent_kafka.schema_registry.avro import AvroSerializer
        serializer = AvroSerializer(registry, json.dumps(AVRO_V2 if v2 else AVRO_V1))
        to_value = lambda d: d
    elif a.format == "json_schema":
        from confluent_kafka.schema_registry.json_schema import JSONSerializer
        serializer = JSONSerializer(json.dumps(JSON_V2 if v2 else JSON_V1), registry)
        to_value = lambda d: d
    else:
        from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
        cls = protobuf_class(PROTO_V2 if v2 else PROTO_V1)
        serializer = ProtobufSerializer(cls, registry, {"use.deprecated.format": False})
        to_value = lambda d: cls(**d)
    producer = None if a.out else Producer(
        {"bootstrap.servers": a.brokers, "linger.ms": 0, "batch.num.messages": 1})
    out = open(a.out, "w") if a.out else None
    ctx = SerializationContext(a.topic, MessageField.VALUE)
    failed = []
    schema_id = None
    for i in range(a.start, a.start + a.count):
        order = {"installation_id": f"inst_{i % 5}", "order_id": f"o-{i}", "total": i + 0.5}
        if v2:
            order["coupon"] = f"C{i}"
        value = serializer(to_value(order), ctx)
        schema_id = int.from_bytes(value[1:5], "big")
        if out:
            out.write(value.hex() + "\n")
            continue
        producer.produce(a.topic, value=value, key=f"k{i}".encode(), partition=0,
                         on_delivery=lambda err, _msg: err and failed.append(err))
        producer.poll(0)
    if out:
        out.close()
    else:
        producer.flush(30)
    if failed:
        raise SystemExit(f"produce failed: {failed[0]}")
    print(schema_id)


if __name__ == "__main__":
    main()
