#!/usr/bin/env python3
"""Add package-lock entries for @swc/core's platform binaries that the registry here cannot serve.

npm records an optional platform package only when it can fetch its metadata; the registry this
project installs from answers 404 for some of @swc/core's (darwin, windows, rare linux arches), and
`npm ci` then refuses the lock as out of sync. An entry with the package's os/cpu lets npm ci skip
it on this platform, as it would with a complete lock. Run after `npm install` changes the lock.
"""
import json
import pathlib
import re

lock_path = pathlib.Path(__file__).resolve().parent.parent / "package-lock.json"
lock = json.loads(lock_path.read_text())
packages = lock["packages"]
core = packages["node_modules/@swc/core"]
added = []
for name, version in core.get("optionalDependencies", {}).items():
    key = f"node_modules/{name}"
    if key in packages:
        continue
    m = re.match(r"@swc/core-(darwin|linux|win32)-([a-z0-9]+)", name)
    os_name, cpu = m.group(1), m.group(2)
    cpu = {"ia32": "ia32", "arm": "arm"}.get(cpu, cpu)
    packages[key] = {
        "version": version,
        "resolved": f"https://registry.npmjs.org/{name}/-/{name.split('/')[1]}-{version}.tgz",
        "cpu": [cpu],
        "license": "Apache-2.0 AND MIT",
        "optional": True,
        "os": [os_name],
        "engines": {"node": ">=10"},
    }
    added.append(name)
lock["packages"] = dict(sorted(packages.items(), key=lambda kv: (kv[0] != "", kv[0])))
lock_path.write_text(json.dumps(lock, indent=2) + "\n")
print("added lock entries:", ", ".join(added) or "none")
