#!/usr/bin/env python3
"""Writes proto/cri/1.NN/api.proto from the wire facts of a Kubernetes minor.

  gen-api-proto.py FACTS.JSON versions/1.NN.toml > proto/cri/1.NN/api.proto

FACTS.JSON is the upstream cri-api's wire facts for that minor (every service, rpc,
message, field number and type; ../shared/cri-wire/1.NN.json). The comments are ours,
from proto/tools/comments.toml. Messages come in alphabetical order, fields by
number: the wire does not care about order, and minors then diff cleanly.
"""
import json, sys, tomllib, pathlib

SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float",
           "sint32", "sint64", "fixed32", "fixed64", "sfixed32", "sfixed64"}
# debug_redact marks secrets from the minor on which upstream added it (1.34); it
# changes logging only, never the bytes on the wire.
REDACTED = {"AuthConfig": {"password", "auth", "identity_token", "registry_token"}}


def short(type_name):
    return type_name.removeprefix(".runtime.v1.")


def comment(text, indent):
    return "".join(f"{indent}// {line}\n" for line in text.strip().splitlines())


def field_type(msg, f):
    if f["type"] in SCALARS:
        return f["type"]
    return short(f["type_name"]).split(".")[-1] if f["type_name"].count(".") > 3 else short(f["type_name"])


def emit_message(out, name, m, notes, minor, indent=""):
    entries = {n: e for n, e in m.get("messages", {}).items() if e.get("map_entry")}
    if name in notes["messages"]:
        out.append(comment(notes["messages"][name], indent))
    out.append(f"{indent}message {name.split('.')[-1]} {{\n")
    for ename, values in sorted(m.get("enums", {}).items()):
        out.append(f"{indent}    enum {ename} {{\n")
        for vname, num in sorted(values.items(), key=lambda kv: kv[1]):
            out.append(f"{indent}        {vname} = {num};\n")
        out.append(f"{indent}    }}\n")
    for nname, nested in sorted(m.get("messages", {}).items()):
        if not nested.get("map_entry"):
            emit_message(out, f"{name}.{nname}", nested, notes, minor, indent + "    ")
    for fname, f in sorted(m["fields"].items(), key=lambda kv: kv[1]["number"]):
        note = notes["fields"].get(f"{name}.{fname}")
        if note:
            out.append(comment(note, indent + "    "))
        opts = []
        if f.get("deprecated"):
            opts.append("deprecated = true")
        if minor >= 34 and fname in REDACTED.get(name, ()):
            opts.append("debug_redact = true")
        opt = f" [{', '.join(opts)}]" if opts else ""
        type_name = f.get("type_name", "")
        entry = type_name.split(".")[-1]
        if f["label"] == "repeated" and entry in entries:
            kv = entries[entry]["fields"]
            typ = f"map<{field_type(m, kv['key'])}, {field_type(m, kv['value'])}>"
            out.append(f"{indent}    {typ} {fname} = {f['number']}{opt};\n")
            continue
        label = "repeated " if f["label"] == "repeated" else ""
        out.append(f"{indent}    {label}{field_type(m, f)} {fname} = {f['number']}{opt};\n")
    out.append(f"{indent}}}\n\n")


def main():
    facts_path, manifest_path = sys.argv[1:3]
    manifest = tomllib.loads(pathlib.Path(manifest_path).read_text())
    minor_text = manifest["minor"]
    minor = int(minor_text.split(".")[1])
    status = f"{manifest['status']}, cri-api {manifest['cri_api_tag']}"
    facts = json.load(open(facts_path))
    notes_path = pathlib.Path(__file__).with_name("comments.toml")
    notes = tomllib.loads(notes_path.read_text()) if notes_path.exists() else {}
    for k in ("header", "services", "rpcs", "messages", "fields", "enums"):
        notes.setdefault(k, {} if k != "header" else "")
    out = [f"// The Container Runtime Interface (CRI) as Kubernetes {minor_text} speaks it: {status}.\n"]
    out.append(comment(notes["header"], ""))
    out.append("// Written by proto/tools/gen-api-proto.py from the wire facts of this minor.\n\n")
    out.append('syntax = "proto3";\n\n')
    out.append(f"package {facts['package']};\n\n")
    for sname, rpcs in sorted(facts["services"].items()):
        if sname in notes["services"]:
            out.append(comment(notes["services"][sname], ""))
        out.append(f"service {sname} {{\n")
        for rname, r in sorted(rpcs.items()):
            if rname in notes["rpcs"]:
                out.append(comment(notes["rpcs"][rname], "    "))
            arg = ("stream " if r["client_streaming"] else "") + short(r["input"])
            ret = ("stream " if r["server_streaming"] else "") + short(r["output"])
            out.append(f"    rpc {rname}({arg}) returns ({ret}) {{}}\n")
        out.append("}\n\n")
    for ename, values in sorted(facts["enums"].items()):
        if ename in notes["enums"]:
            out.append(comment(notes["enums"][ename], ""))
        out.append(f"enum {ename} {{\n")
        for vname, num in sorted(values.items(), key=lambda kv: kv[1]):
            out.append(f"    {vname} = {num};\n")
        out.append("}\n\n")
    for mname, m in sorted(facts["messages"].items()):
        emit_message(out, mname, m, notes, minor)
    sys.stdout.write("".join(out).rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
