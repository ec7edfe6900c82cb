#!/usr/bin/env python3
"""A Schema Registry for the tests: the subset of Confluent's REST API that the serializers
(confluent-kafka's AvroSerializer, ProtobufSerializer, JSONSerializer) and orceum-bridge call:

  POST /subjects/{subject}/versions      register (the same schema under a subject: same id)
  POST /subjects/{subject}               look a schema up under a subject
  GET  /schemas/ids/{id}                 a schema by id (with its type and references)
  GET  /subjects/{subject}/versions/{v}  a version (or `latest`) of a subject, for references
  GET  /subjects                         the subjects

Usage: schema_registry.py --port PORT [--state FILE]
With --state the registry keeps its schemas in FILE, so a restart (an outage test) serves the
same ids. Standard library only.
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

CT = "application/vnd.schemaregistry.v1+json"
lock = threading.Lock()
state = {"schemas": [], "subjects": {}}  # schemas: [{id, schema, schemaType, references}]
state_file = None


def save():
    if state_file:
        tmp = state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, state_file)


def schema_by_id(sid):
    for s in state["schemas"]:
        if s["id"] == sid:
            return s
    return None


def same(a, b):
    return (a["schema"], a.get("schemaType", "AVRO"), a.get("references", [])) == (
        b["schema"], b.get("schemaType", "AVRO"), b.get("references", []))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CT)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def not_found(self, code, message):
        self.answer(404, {"error_code": code, "message": message})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def do_GET(self):
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        with lock:
            if len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
                s = schema_by_id(int(parts[2]))
                if not s:
                    return self.not_found(40403, "Schema not found")
                out = {"schema": s["schema"]}
                if s.get("schemaType", "AVRO") != "AVRO":
                    out["schemaType"] = s["schemaType"]
                if s.get("references"):
                    out["references"] = s["references"]
                return self.answer(200, out)
            if parts == ["subjects"]:
                return self.answer(200, sorted(state["subjects"]))
            if len(parts) == 4 and parts[0] == "subjects" and parts[2] == "versions":
                versions = state["subjects"].get(parts[1])
                if not versions:
                    return self.not_found(40401, "Subject not found")
                v = len(versions) if parts[3] == "latest" else int(parts[3])
                if v < 1 or v > len(versions):
                    return self.not_found(40402, "Version not found")
                s = schema_by_id(versions[v - 1])
                return self.answer(200, {"subject": parts[1], "version": v, "id": s["id"],
                                         "schema": s["schema"],
                                         "schemaType": s.get("schemaType", "AVRO"),
                                         "references": s.get("references", [])})
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                versions = state["subjects"].get(parts[1])
                if not versions:
                    return self.not_found(40401, "Subject not found")
                return self.answer(200, list(range(1, len(versions) + 1)))
        self.not_found(404, "not served by this test registry")

    def do_POST(self):
        parts = [unquote(p) for p in urlparse(self.path).path.strip("/").split("/")]
        req = self.body()
        given = {"schema": req.get("schema", ""), "schemaType": req.get("schemaType", "AVRO"),
                 "references": req.get("references", [])}
        with lock:
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                subject = parts[1]
                existing = next((s for s in state["schemas"] if same(s, given)), None)
                if existing is None:
                    existing = dict(given, id=len(state["schemas"]) + 1)
                    state["schemas"].append(existing)
                versions = state["subjects"].setdefault(subject, [])
                if existing["id"] not in versions:
                    versions.append(existing["id"])
                save()
                return self.answer(200, {"id": existing["id"]})
            if len(parts) == 2 and parts[0] == "subjects":
                versions = state["subjects"].get(parts[1], [])
                for i, sid in enumerate(versions):
                    s = schema_by_id(sid)
                    if same(s, given):
                        return self.answer(200, {"subject": parts[1], "version": i + 1,
                                                 "id": sid, "schema": s["schema"]})
                return self.not_found(40403, "Schema not found")
        self.not_found(404, "not served by this test registry")


def main():
    global state_file
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state")
    a = p.parse_args()
    state_file = a.state
    if state_file and os.path.exists(state_file):
        with open(state_file) as f:
            state.update(json.load(f))
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"schema registry listening on 127.0.0.1:{a.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
