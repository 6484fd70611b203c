#!/usr/bin/env python3
"""The Python side of the fedmsg.meta rendering bench: real fedmsg.meta
(fedmsg 1.1.7 + fedmsg_meta_fedora_infrastructure 0.31.0, set up exactly as
``meta/tests/upstream/extract.py`` does, from its cache) renders the same
messages as ``cargo bench -p fedmsg-meta --bench render`` (the examples of
``shared/vectors/upstream/meta-examples.json``), every field the Rust bench
renders, and prints messages per second.

Run with the pyfedmsg venv's python:
    $VENV/bin/python meta/benches/python_meta.py [SECONDS] [--json]

SECONDS is CPU time of the rendering thread (as `fedmsg-bench suite`
measures ours); --json prints {"messages", "cpu_s", "wall_s"}.
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "upstream"))
import extract  # noqa: E402  (the shared set-up of the upstream packages)

FIELDS = ["title", "subtitle", "link", "icon", "secondary_icon",
          "usernames", "packages", "objects", "emails", "avatars"]


def main():
    args = [a for a in sys.argv[1:] if a != "--json"]
    as_json = "--json" in sys.argv[1:]
    seconds = float(args[0]) if args else 3.0
    src, deps = extract.ensure_upstream(extract.cache_dir())
    guard = extract.NetGuard()
    guard.install()
    pkg_resources = extract.make_importable(src, deps)
    import fedmsg.meta
    config = {"topic_prefix": "org.fedoraproject",
              "topic_prefix_re": r"^org\.fedoraproject\.(dev|stg|prod)"}
    report = {"processor_failures": []}
    extract.make_processors(fedmsg.meta, pkg_resources, config, report)
    shared = os.path.join(HERE, "..", "..", "..", "shared")
    with open(os.path.join(shared, "vectors", "upstream", "meta-examples.json")) as f:
        messages = [e["msg"] for e in json.load(f)["examples"]]
    funcs = [getattr(fedmsg.meta, "msg2" + field) for field in FIELDS]

    def render_all():
        for msg in messages:
            for func in funcs:
                func(msg, **config)

    render_all()  # warm up (imports, caches)
    done = 0
    started = time.perf_counter()
    cpu0 = time.thread_time()
    while time.thread_time() - cpu0 < seconds:
        render_all()
        done += len(messages)
    cpu = time.thread_time() - cpu0
    elapsed = time.perf_counter() - started
    if as_json:
        print(json.dumps({"messages": done, "cpu_s": cpu, "wall_s": elapsed}))
    else:
        print("python fedmsg.meta: %d messages (all %d fields) in %.2f CPU s: %.0f msg/s"
              % (done, len(FIELDS), cpu, done / cpu))


if __name__ == "__main__":
    main()
