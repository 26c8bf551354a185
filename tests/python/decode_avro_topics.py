"""Decode every record of some Avro topics with Confluent's own client library.

Usage: decode_avro_topics.py BOOTSTRAP REGISTRY_URL TOPIC=COUNT [TOPIC=COUNT ...]

Reads each topic from the beginning until COUNT records (tombstones included) arrived,
deserializes keys and values with confluent-kafka's AvroDeserializer (fastavro underneath)
through the schema registry at REGISTRY_URL, and prints one JSON line per topic:
{"topic": ..., "records": N, "tombstones": T, "values": [...]}. Exits non-zero on any
record that does not decode.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def main():
    bootstrap, registry_url = sys.argv[1], sys.argv[2]
    registry = SchemaRegistryClient({"url": registry_url})
    deserializer = AvroDeserializer(registry)
    for spec in sys.argv[3:]:
        topic, count = spec.rsplit("=", 1)
        count = int(count)
        consumer = Consumer({
            "bootstrap.servers": bootstrap,
            "group.id": f"python-decode-{topic}-{time.time()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        })
        consumer.subscribe([topic])
        values, tombstones, records = [], 0, 0
        deadline = time.time() + 60
        while records < count:
            if time.time() > deadline:
                sys.exit(f"{topic}: {records} of {count} records after 60 s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                sys.exit(f"{topic}: {message.error()}")
            records += 1
            if message.key() is not None:
                deserializer(message.key(), SerializationContext(topic, MessageField.KEY))
            if message.value() is None:
                tombstones += 1
                continue
            value = deserializer(message.value(), SerializationContext(topic, MessageField.VALUE))
            values.append(plain(value))
        consumer.close()
        print(json.dumps({"topic": topic, "records": records, "tombstones": tombstones, "values": values}))


if __name__ == "__main__":
    main()
