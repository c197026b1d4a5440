#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora under fuzz/seeds/TARGET: real packets, batches, WAL
records and rule files as the product writes them (MQTT 3.1.1 and 5 packets a device and the
server exchange, batches in JSON and in the protobuf frame, framed WAL records, the built-in
rule pack). Rerun after a protocol change: python3 fuzz/seed.py"""

import os
import struct
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def crc32c(data, crc=0):
    crc = ~crc & 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return ~crc & 0xFFFFFFFF


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


# --- the batch: protobuf frame and JSON -------------------------------------------------------

def pb_field(tag, wire, value):
    key = varint(tag << 3 | wire)
    if wire == 0:
        return key + varint(value & 0xFFFFFFFFFFFFFFFF)
    if wire == 1:
        return key + value
    return key + varint(len(value)) + value


def pb_batch(device, seq, samples, boot="boot-a", sent=1_700_000_000_000, dropped=0):
    strings, index = [], {}

    def intern(s):
        if s not in index:
            index[s] = len(strings)
            strings.append(s)
        return index[s]

    body_samples = []
    for metric, labels, ts, value in samples:
        m = pb_field(1, 0, intern(metric))
        ids = []
        for k, v in sorted(labels.items()):
            ids += [intern(k), intern(v)]
        if ids:
            m += pb_field(2, 2, b"".join(varint(i) for i in ids))
        m += pb_field(3, 0, ts) + pb_field(4, 1, struct.pack("<d", value))
        body_samples.append(m)
    body = pb_field(1, 2, device.encode()) + pb_field(2, 2, boot.encode())
    body += pb_field(3, 0, seq) + pb_field(4, 0, sent)
    if dropped:
        body += pb_field(5, 0, dropped)
    for s in strings:
        body += pb_field(6, 2, s.encode())
    for m in body_samples:
        body += pb_field(7, 2, m)
    return b"FMB\x01" + struct.pack("<I", crc32c(body)) + body


def json_batch(device, seq, samples):
    parts = []
    for metric, labels, ts, value in samples:
        ls = ",".join(f'"{k}":"{v}"' for k, v in sorted(labels.items()))
        parts.append(f'{{"metric":"{metric}","labels":{{{ls}}},"ts_ms":{ts},"value":{value}}}')
    return (f'{{"device":"{device}","boot_id":"boot-a","seq":{seq},"sent_at_ms":1700000000000,'
            f'"dropped_before":0,"samples":[{",".join(parts)}]}}').encode()


SAMPLES = [
    ("cpu_usage_ratio", {}, 1_700_000_000_000, 0.25),
    ("temperature_celsius", {"sensor": "cpu"}, 1_700_000_000_000, 48.5),
    ("filesystem_free_bytes", {"mount": "/", "fstype": "ext4"}, 1_700_000_001_000, 1.5e9),
]
BATCHES = [
    pb_batch("pi-1", 7, SAMPLES),
    pb_batch("gw-3", 1, SAMPLES[:1], dropped=2),
    json_batch("pi-1", 7, SAMPLES),
    json_batch("mcu-7", 1, SAMPLES[1:2]),
]

# --- MQTT packets -----------------------------------------------------------------------------

def mqtt_str(s):
    b = s if isinstance(s, bytes) else s.encode()
    return struct.pack(">H", len(b)) + b


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def connect(level, client_id, keep_alive=30, will=None):
    flags = 0x02
    payload = mqtt_str(client_id)
    props = b"\x00" if level == 5 else b""
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += (b"\x00" if level == 5 else b"") + mqtt_str(topic) + mqtt_str(msg)
    var = mqtt_str("MQTT") + bytes([level, flags]) + struct.pack(">H", keep_alive) + props
    return packet(0x10, var + payload)


def publish(level, topic, payload, qos=1, pkid=1, retain=False):
    var = mqtt_str(topic) + (struct.pack(">H", pkid) if qos else b"")
    if level == 5:
        var += b"\x00"
    return packet(0x30 | qos << 1 | (1 if retain else 0), var + payload)


def subscribe(level, pkid, filters):
    body = struct.pack(">H", pkid) + (b"\x00" if level == 5 else b"")
    for f, q in filters:
        body += mqtt_str(f) + bytes([q])
    return packet(0x82, body)


def unsubscribe(level, pkid, filters):
    body = struct.pack(">H", pkid) + (b"\x00" if level == 5 else b"")
    return packet(0xA2, body + b"".join(mqtt_str(f) for f in filters))


def ack(first, level, pkid):
    return packet(first, struct.pack(">H", pkid) + (b"\x00\x00" if level == 5 else b""))


def session(level):
    """The packets after CONNECT a device sends in one session."""
    return [
        publish(level, "fleetmon/v1/pi-1/telemetry", BATCHES[0], qos=1, pkid=1),
        publish(level, "fleetmon/v1/pi-1/telemetry", BATCHES[2], qos=2, pkid=2),
        publish(level, "fleetmon/v1/pi-1/status", b"online", qos=1, pkid=3, retain=True),
        publish(level, "fleetmon/v1/mcu-7/telemetry", BATCHES[3], qos=0, pkid=0),
        ack(0x62, level, 2),  # PUBREL
        subscribe(level, 4, [("fleetmon/v1/pi-1/control", 1), ("fleetmon/+/+/status", 0)]),
        unsubscribe(level, 5, ["fleetmon/+/+/status"]),
        ack(0x40, level, 9),  # PUBACK of a control message
        packet(0xC0, b""),  # PINGREQ
        packet(0xE0, b"\x00\x00" if level == 5 else b""),  # DISCONNECT
    ]


def write(target, name, data):
    d = os.path.join(ROOT, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for i, b in enumerate(BATCHES):
        write("protocol_decode", f"batch-{i}", b)

    will = ("fleetmon/v1/pi-1/status", b"offline", 1, True)
    for level, version_byte in ((4, 0), (5, 1)):
        packets = session(level)
        c = connect(level, "pi-1", will=will)
        write("mqtt_connect", f"v{level}-connect", c)
        write("mqtt_connect", f"v{level}-connect-anon", connect(level, "", keep_alive=0))
        write("mqtt_connect", f"v{level}-session", c + b"".join(packets))
        for i, p in enumerate(packets):
            write("mqtt_packets", f"v{level}-{i}", bytes([version_byte]) + p)
        write("mqtt_packets", f"v{level}-session", bytes([version_byte]) + b"".join(packets))
    write("mqtt_connect", "mqtt31", b"\x10\x0c\x00\x06MQIsdp\x03\x02\x00\x3c")
    # Found by this target (before the fix): an MQTT 5 PUBACK whose property length runs past
    # the packet's end was taken for "wait for more" after the packet had been consumed.
    write("mqtt_packets", "regression-v5-puback-property-length", b"\x01\x40\x04\x41\x00\xd6\xff\x00")

    # WAL: a series record, a samples record and a meta record, framed, as one segment; and
    # the bare payloads with their kind byte first.
    labels = [("__name__", "cpu_usage_ratio"), ("device", "pi-1")]
    series = struct.pack("<I", 1) + struct.pack("<H", len(labels))
    for k, v in labels:
        series += mqtt_str_le(k) + mqtt_str_le(v)
    samples = b"".join(struct.pack("<Iqd", 1, 1_700_000_000_000 + i, 0.5 * i) for i in range(3))
    meta = struct.pack("<H", 4) + b"pi-1" + struct.pack("<Q", 7)
    segment = b""
    for kind, payload in ((1, series), (2, samples), (3, meta)):
        crc = crc32c(payload, crc32c(bytes([kind])))
        segment += struct.pack("<II", len(payload), crc) + bytes([kind]) + payload
        write("tsdb_wal_record", f"payload-{kind}", bytes([kind]) + payload)
    write("tsdb_wal_record", "segment", segment)

    with open(os.path.join(REPO, "crates", "alert", "rules", "builtin.yml"), "rb") as f:
        write("alert_rules", "builtin", f.read())
    write("alert_rules", "small", b"""groups:
  - name: example
    interval: 30s
    rules:
      - alert: HotDevice
        expr: temperature_celsius{sensor="cpu"} > 80
        for: 5m
        keep_firing_for: 1m
        labels: {severity: warning}
        annotations:
          summary: "{{ $labels.device }} is at {{ $value }} C"
      - record: device:cpu:avg5m
        expr: avg_over_time(cpu_usage_ratio[5m])
""")
    return 0


def mqtt_str_le(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


if __name__ == "__main__":
    sys.exit(main())
