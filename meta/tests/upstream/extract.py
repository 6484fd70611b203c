#!/usr/bin/env python3
"""Turn upstream's fedmsg.meta test suite into one JSON file of test cases.

Why
---
Our Rust renderer of fedmsg.meta (titles, subtitles, links, icons, usernames,
packages, objects, ...) should agree with every expectation that the upstream
Python projects test.  Those expectations live in the test classes of the PyPI
package ``fedmsg_meta_fedora_infrastructure`` 0.31.0 (some 560 classes in
``fedmsg_meta_fedora_infrastructure/tests/*.py``) and in fedmsg 1.1.7's own
``fedmsg/tests/test_meta.py``.  Upstream code must never be committed to this
repository, so this script fetches the sdist from PyPI at test time into a
cache directory, imports the upstream test modules from there and writes what
they expect as plain data that a Rust test can read.

What it does
------------
1. Ensures the sdist is in the cache (``pip download``; its sha256 is pinned)
   and unpacked there.  The unpacked tree is put on ``sys.path``; its
   ``*.egg-info`` carries the ``fedmsg.meta`` entry points, so
   ``fedmsg.meta.make_processors`` finds the processors without installing
   anything into the venv.
2. Installs the few runtime modules the package imports that the fedmsg venv
   lacks (``python-fedora`` and its import-time needs ``munch``, ``lockfile``)
   with ``pip install --no-deps --target`` into a directory of the cache that is
   appended to ``sys.path``.  The shared venv made by
   ``shared/pyfedmsg/setup.sh`` is left exactly as it is.
3. Imports every module under ``fedmsg_meta_fedora_infrastructure.tests`` and
   ``fedmsg.tests.test_meta`` and takes every class that has a ``msg`` and at
   least one ``expected_*`` attribute that ``fedmsg.tests.test_meta.Base``
   checks.  As in ``Base``, an attribute left at the ``Unspecified`` sentinel is
   not checked; ``None`` *is* an expectation (e.g. ``expected_icon = None``).
   Sets become sorted lists.
4. For each case it also records what the real Python ``fedmsg.meta`` returns
   (``msg2title`` & co., with the config the class's own ``setUp`` builds, so
   per-class mocks such as the FAS cache of ``tests/base.py`` apply), and
   whether that equals the expectation (Python ``==``, as ``assertEqual``).
   Fields whose computation would touch the network (scm/github/meetbot
   long_form, buildsys long_form, taskotron packages of bodhi updates) are not
   computed and are listed in ``python_skipped``.  Any other connection attempt
   is blocked by a socket guard and the field is then skipped as well.  An
   exception in one field or case is recorded and extraction goes on.

Output
------
``argv[1]`` gets a JSON list of cases::

    {"source": "scm.TestSCM", "module": "...tests.scm", "processor_hint": "scm",
     "upstream_runs": true, "msg": {...},
     "expected": {"title": ..., "subtitle": ..., "usernames": [...], ...},
     "python_processor": "git",
     "python": {...}, "python_agrees": {"title": true, ...},
     "python_skipped": ["long_form"], "python_skip_reasons": {...},
     "python_errors": {...}, "python_log": [...]}

(``python_*`` keys other than ``python``/``python_agrees`` appear only when
non-empty.)  ``upstream_runs`` is false for classes upstream's nose run never
collected: modules that ``tests/__init__.py`` does not star-import, and classes
shadowed there by a later class of the same name.

Next to it, ``<out>.report.json`` holds versions, the processor order,
per-module and per-field counts, and every import or extraction failure; a
summary is printed on stderr.

Usage::

    $VENV/bin/python meta/tests/upstream/extract.py OUT.json [--all-fields]

``--all-fields`` computes the Python value of every field (not only of those a
class sets expectations for).  The cache is
``$FEDMSG_META_UPSTREAM_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/fedmsg-meta-upstream``.
"""

import argparse
import collections
import copy
import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import pkgutil
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import warnings

PACKAGE = "fedmsg_meta_fedora_infrastructure"
VERSION = "0.31.0"
SDIST = "%s-%s.tar.gz" % (PACKAGE, VERSION)
SDIST_SHA256 = "b7f8fad4317d4e78c10a4efc5783efa64cd6c358933d569a16135ebe92e86e35"
# Imported by the package at import time but not part of the fedmsg venv.
# ``python-fedora`` needs munch and lockfile to import; its other requirements
# (requests, kitchen, six, urllib3) are in the venv, and beautifulsoup4 /
# openidc-client are only used by code paths the tests never reach.
RUNTIME_DEPS = ["python-fedora==1.1.1", "munch==4.0.0", "lockfile==0.12.2"]

# Base attribute -> field name in the output, in the order Base declares them.
FIELDS = collections.OrderedDict([
    ("expected_title", "title"),
    ("expected_subti", "subtitle"),
    ("expected_subjective", "subjective"),
    ("expected_link", "link"),
    ("expected_icon", "icon"),
    ("expected_secondary_icon", "secondary_icon"),
    ("expected_usernames", "usernames"),
    ("expected_agent", "agent"),
    ("expected_packages", "packages"),
    ("expected_objects", "objects"),
    ("expected_emails", "emails"),
    ("expected_avatars", "avatars"),
    ("expected_long_form", "long_form"),
])

# Log records that only say the (empty, unmocked) FAS cache was consulted.
LOG_NOISE = (
    "No previous fas cache found",
    "No fas_credentials found",
    "No python-fedora installed",
)


def log(msg):
    print("extract.py: %s" % msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# 1 + 2: cache, download, unpack, runtime deps
# --------------------------------------------------------------------------

def cache_dir():
    explicit = os.environ.get("FEDMSG_META_UPSTREAM_CACHE")
    if explicit:
        return os.path.abspath(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fedmsg-meta-upstream")


def pip(*args):
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    cmd += list(args)
    log("running: %s" % " ".join(cmd))
    subprocess.run(cmd, check=True, stdout=sys.stderr)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_upstream(cache):
    """Return (source tree, deps dir), fetching whatever is missing."""
    os.makedirs(cache, exist_ok=True)
    # Several test processes may run this at once: one fetches, the rest wait.
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)

        tarball = os.path.join(cache, SDIST)
        if not os.path.exists(tarball):
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                pip("download", "--no-deps", "--no-binary", ":all:",
                    "--dest", tmp, "%s==%s" % (PACKAGE, VERSION))
                got = os.path.join(tmp, SDIST)
                if not os.path.exists(got):
                    raise SystemExit("pip download produced %s, not %s"
                                     % (os.listdir(tmp), SDIST))
                os.replace(got, tarball)
        digest = sha256_of(tarball)
        if digest != SDIST_SHA256:
            raise SystemExit("%s has sha256 %s, expected %s; delete it to "
                             "download it again" % (tarball, digest, SDIST_SHA256))

        src = os.path.join(cache, "src", "%s-%s" % (PACKAGE, VERSION))
        if not os.path.isdir(src):
            os.makedirs(os.path.dirname(src), exist_ok=True)
            with tempfile.TemporaryDirectory(dir=os.path.dirname(src)) as tmp:
                with tarfile.open(tarball) as tar:
                    tar.extractall(tmp, filter="data")
                os.replace(os.path.join(tmp, os.path.basename(src)), src)

        pyver = "py%d.%d" % sys.version_info[:2]
        deps = os.path.join(cache, "deps-" + pyver)
        stamp = os.path.join(deps, ".installed")
        wanted = "\n".join(RUNTIME_DEPS) + "\n"
        have = open(stamp).read() if os.path.exists(stamp) else None
        if have != wanted:
            shutil.rmtree(deps, ignore_errors=True)
            with tempfile.TemporaryDirectory(dir=cache) as tmp:
                target = os.path.join(tmp, "deps")
                # --no-build-isolation: build python-fedora's sdist with the
                # venv's setuptools instead of fetching another one.
                pip("install", "--no-deps", "--no-build-isolation",
                    "--target", target, *RUNTIME_DEPS)
                with open(os.path.join(target, ".installed"), "w") as f:
                    f.write(wanted)
                os.replace(target, deps)
    return src, deps


def make_importable(src, deps):
    """Put the sdist tree first and the deps dir last on sys.path."""
    sys.path.insert(0, src)
    sys.path.append(deps)
    import pkg_resources  # noqa: E402  (after sys.path is final)
    for entry in (src, deps):
        pkg_resources.working_set.add_entry(entry)
    dist = pkg_resources.get_distribution(PACKAGE)
    if os.path.realpath(dist.location) != os.path.realpath(src):
        raise SystemExit("another %s is installed at %s; uninstall it from the "
                         "venv so the cached %s is used" % (PACKAGE, dist.location, VERSION))
    pkg = importlib.import_module(PACKAGE)
    if not os.path.realpath(pkg.__file__).startswith(os.path.realpath(src)):
        raise SystemExit("%s imported from %s, not from %s" % (PACKAGE, pkg.__file__, src))
    return pkg_resources


# --------------------------------------------------------------------------
# Network guard
# --------------------------------------------------------------------------

class NetworkBlocked(OSError):
    """Raised instead of any connection to a non-local host."""


class NetGuard(object):
    """Blocks connections/lookups of foreign hosts and remembers the attempts."""

    LOCAL = {None, "", "localhost", "127.0.0.1", "::1", socket.gethostname()}

    def __init__(self):
        self.attempts = []

    def install(self):
        guard = self
        real_getaddrinfo = socket.getaddrinfo
        real_connect = socket.socket.connect
        real_connect_ex = socket.socket.connect_ex

        def blocked(what):
            guard.attempts.append(what)
            raise NetworkBlocked("network disabled during extraction: %s" % what)

        def is_local(addr):
            return not isinstance(addr, tuple) or addr[0] in guard.LOCAL

        def getaddrinfo(host, port, *a, **k):
            if host not in guard.LOCAL:
                blocked("getaddrinfo(%r, %r)" % (host, port))
            return real_getaddrinfo(host, port, *a, **k)

        def connect(self, addr):
            if not is_local(addr):
                blocked("connect(%r)" % (addr,))
            return real_connect(self, addr)

        def connect_ex(self, addr):
            if not is_local(addr):
                blocked("connect_ex(%r)" % (addr,))
            return real_connect_ex(self, addr)

        def by_name(host, *a):
            if host not in guard.LOCAL:
                blocked("gethostbyname(%r)" % (host,))
            return "127.0.0.1"

        socket.getaddrinfo = getaddrinfo
        socket.socket.connect = connect
        socket.socket.connect_ex = connect_ex
        socket.gethostbyname = by_name

    def take(self):
        out, self.attempts = self.attempts, []
        return out


def network_skip_reason(proc_module, field, msg, koji_present):
    """Why computing `field` would do network I/O, or None.

    Read off the processors of 0.31.0; NetGuard catches anything missed here.
    """
    topic = msg.get("topic", "")
    body = msg.get("msg") if isinstance(msg.get("msg"), dict) else {}
    if field == "long_form":
        if proc_module == "scm" and ".git.receive" in topic:
            commit = body.get("commit") or {}
            if not commit.get("seen", False):
                return "scm long_form fetches the commit's .patch over HTTP"
        if proc_module == "github" and "github.push" in topic:
            return "github long_form fetches the push's compare .patch over HTTP"
        if proc_module == "supybot" and ".meeting.complete" in topic:
            return "meetbot long_form fetches the meeting log over HTTP"
        if proc_module == "buildsys" and ("buildsys.build.state.change" in topic
                                          or "buildsys.task.state.change" in topic):
            return ("buildsys long_form queries koji over XML-RPC (koji module %s; "
                    "without it Python falls back to the subtitle)"
                    % ("present" if koji_present else "absent"))
    if proc_module == "taskotron" and field in ("packages", "objects", "secondary_icon"):
        task = body.get("task") or {}
        if task.get("type") == "bodhi_update":
            return ("taskotron %s of a bodhi_update needs its packages, which "
                    "it queries from bodhi over HTTP" % field)
    return None


# --------------------------------------------------------------------------
# JSON conversion and logging capture
# --------------------------------------------------------------------------

class Unjsonable(object):
    count = 0


def jsonable(value):
    """Plain-JSON copy of `value`: sets become sorted lists."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            Unjsonable.count += 1
            return {"$float": repr(value)}
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): jsonable(v)
                for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=lambda v: (isinstance(v, str),
                                            json.dumps(v, sort_keys=True)
                                            if not isinstance(v, str) else v))
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    Unjsonable.count += 1
    return {"$repr": repr(value), "$type": type(value).__name__}


ADDR_RE = re.compile(r" at 0x[0-9a-fA-F]+")


class Capture(logging.Handler):
    def __init__(self):
        super(Capture, self).__init__(logging.WARNING)
        self.records = []
        self.noise = 0

    def emit(self, record):
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken log call must not stop us
            text = str(record.msg)
        if text.startswith(LOG_NOISE):
            self.noise += 1
            return
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += " [%s: %s]" % (type(exc).__name__, exc)
        text = ADDR_RE.sub("", text)
        if len(text) > 400:
            text = text[:400] + "..."
        self.records.append("%s %s: %s" % (record.levelname, record.name, text))

    def take(self):
        out, self.records = self.records, []
        return out


def describe(exc):
    return "%s: %s" % (type(exc).__name__, ADDR_RE.sub("", str(exc))[:500])


def make_processors(meta, pkg_resources, config, report):
    """fedmsg.meta.make_processors, minus its packaging check.

    make_processors loads each ``fedmsg.meta`` entry point with
    ``EntryPoint.load()``, which first insists that every install requirement
    of the distribution is installed (fasjson-client, gssapi, ...: none of
    them is used by the code under test, and installing them would mean
    rebuilding the shared venv).  This does the same loop with
    ``EntryPoint.resolve()`` (no requirement check), in the same order, and
    appends DefaultProcessor last, as make_processors does.  Base.setUp's own
    make_processors call is then a no-op because the list is already set.
    """
    processors = []
    for ep in pkg_resources.iter_entry_points("fedmsg.meta"):
        try:
            processors.append(ep.resolve()(meta._, **config))
        except Exception as e:  # noqa: BLE001
            report["processor_failures"].append({"entry_point": ep.name, "error": describe(e)})
    processors.append(meta.DefaultProcessor(meta._, **config))
    meta.processors = processors


# --------------------------------------------------------------------------
# 3: find the test classes
# --------------------------------------------------------------------------

def import_test_modules(report):
    """Import every upstream test module; return them in a stable order."""
    import fedmsg.tests.test_meta as fedmsg_test_meta

    modules = [fedmsg_test_meta]
    failures = report["import_failures"]

    # Import the tests package the way upstream's nose run does (its
    # __init__ star-imports every module, and jenkins.py even relies on that
    # order: it takes ``Base`` from the half-imported package).  The package
    # is registered by hand so that, should __init__ fail, every module can
    # still be imported on its own afterwards.
    pkg_dir = os.path.join(os.path.dirname(
        importlib.import_module(PACKAGE).__file__), "tests")
    name = PACKAGE + ".tests"
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(pkg_dir, "__init__.py"),
        submodule_search_locations=[pkg_dir])
    tests_pkg = importlib.util.module_from_spec(spec)
    sys.modules[name] = tests_pkg
    setattr(sys.modules[PACKAGE], "tests", tests_pkg)
    try:
        spec.loader.exec_module(tests_pkg)
        report["tests_init_ok"] = True
    except Exception as e:  # noqa: BLE001
        report["tests_init_ok"] = False
        failures.append({"module": name, "error": describe(e),
                         "traceback": traceback.format_exc(limit=3)})

    def walk_error(modname):
        failures.append({"module": modname, "error": describe(sys.exc_info()[1])})

    sub = [info.name for info in pkgutil.walk_packages(
        [pkg_dir], prefix=name + ".", onerror=walk_error)]
    for modname in sorted(sub):
        try:
            modules.append(importlib.import_module(modname))
        except Exception as e:  # noqa: BLE001
            failures.append({"module": modname, "error": describe(e),
                             "traceback": traceback.format_exc(limit=3)})
    modules.insert(1, tests_pkg)
    return modules, tests_pkg, fedmsg_test_meta


def short_module(modname):
    """'...tests.scm' -> 'scm'; the tests package itself -> '__init__'."""
    prefix = PACKAGE + ".tests"
    if modname == prefix:
        return "__init__"
    if modname.startswith(prefix + "."):
        return modname[len(prefix) + 1:]
    if modname == "fedmsg.tests.test_meta":
        return "fedmsg.test_meta"
    return modname


def find_classes(modules, tests_pkg, fedmsg_test_meta, report):
    """Yield (module, class, upstream_runs, why_not) for every case class."""
    Base = fedmsg_test_meta.Base
    Unspecified = fedmsg_test_meta.Unspecified
    ConglomerateBase = getattr(fedmsg_test_meta, "ConglomerateBase", None)
    found = []
    for mod in modules:
        for attr, obj in list(vars(mod).items()):
            if not isinstance(obj, type) or obj.__module__ != mod.__name__:
                continue
            if ConglomerateBase and issubclass(obj, ConglomerateBase):
                report["conglomerate_classes"] += 1
                continue
            has_msg = getattr(obj, "msg", Unspecified) is not Unspecified
            checked = [a for a in FIELDS
                       if getattr(obj, a, Unspecified) is not Unspecified]
            src = "%s.%s" % (short_module(mod.__name__), obj.__name__)
            if has_msg:
                for a in sorted(dir(obj)):
                    if a.startswith("expected_") and a not in FIELDS:
                        report["unchecked_expected_attrs"].setdefault(a, []).append(src)
            is_base = issubclass(obj, Base)
            if not has_msg or not checked:
                if is_base or has_msg or checked:
                    report["skipped_classes"].append({
                        "source": src,
                        "why": ("no msg (abstract base)" if not has_msg
                                else "msg but no checked expected_* attribute")})
                continue
            if not is_base:
                report["non_base_classes"].append(src)
            found.append((mod, obj))

    for mod, cls in found:
        runs, why = True, None
        if mod is tests_pkg or mod.__name__.rsplit(".", 1)[0] == tests_pkg.__name__:
            # Upstream runs nose on the tests package; nose does not look into
            # modules like scm.py (their names don't match testMatch), so it
            # only sees what tests/__init__.py star-imports or defines.
            seen = getattr(tests_pkg, cls.__name__, None)
            if seen is not cls:
                runs = False
                if seen is None:
                    why = "module not imported by tests/__init__.py"
                else:
                    why = "shadowed in tests/__init__.py by %s.%s" % (
                        short_module(seen.__module__), seen.__name__)
        yield mod, cls, runs, why


# --------------------------------------------------------------------------
# 4: expectations and Python's own values
# --------------------------------------------------------------------------

def python_value(meta, field, msg, config, subjects):
    m = copy.deepcopy(msg)  # a processor must not change the next call's input
    if field == "subjective":
        return {s: meta.msg2subjective(copy.deepcopy(msg), subject=s, **config)
                for s in subjects}
    fn = {
        "title": meta.msg2title, "subtitle": meta.msg2subtitle,
        "link": meta.msg2link, "icon": meta.msg2icon,
        "secondary_icon": meta.msg2secondary_icon,
        "usernames": meta.msg2usernames, "agent": meta.msg2agent,
        "packages": meta.msg2packages, "objects": meta.msg2objects,
        "emails": meta.msg2emails, "avatars": meta.msg2avatars,
        "long_form": meta.msg2long_form,
    }[field]
    return fn(m, **config)


def extract_case(mod, cls, runs, why, ctx):
    meta, Unspecified = ctx["meta"], ctx["Unspecified"]
    case = collections.OrderedDict()
    case["source"] = "%s.%s" % (short_module(mod.__name__), cls.__name__)
    case["module"] = mod.__name__
    case["processor_hint"] = short_module(mod.__name__)
    case["upstream_runs"] = runs
    if why:
        case["upstream_runs_why_not"] = why
    msg = copy.deepcopy(cls.msg)
    case["msg"] = jsonable(msg)

    expected_raw = collections.OrderedDict()
    for attr, field in FIELDS.items():
        value = getattr(cls, attr, Unspecified)
        if value is not Unspecified:
            expected_raw[field] = value
    case["expected"] = {f: jsonable(v) for f, v in expected_raw.items()}

    # The config and mocks exactly as the class's own setUp makes them.
    inst = None
    try:
        if issubclass(cls, ctx["Base"]):
            inst = cls("test_title")
            inst.setUp()
            config = inst.config
        else:
            config = ctx["default_config"]
    except Exception as e:  # noqa: BLE001
        case["error"] = "setUp failed: " + describe(e)
        return case
    # The e-mail/IRC nick -> FAS username table the class's setUp put in
    # place of the FAS lookups (tests/base.py mocks it); our renderer takes
    # the same table from its configuration (meta_fas_users).
    try:
        import fedmsg_meta_fedora_infrastructure.fasshim as fasshim
        cache = getattr(fasshim, "_fas_cache", None)
        if isinstance(cache, dict) and cache:
            case["fas_users"] = {str(k): str(v) for k, v in cache.items()}
    except Exception:  # noqa: BLE001
        pass

    python, agrees, skipped, reasons, errors, logs = {}, {}, [], {}, {}, []
    try:
        try:
            proc = meta.msg2processor(copy.deepcopy(msg), **config)
            case["python_processor"] = proc.__name__
            proc_module = type(proc).__module__.rsplit(".", 1)[-1]
        except Exception as e:  # noqa: BLE001
            case["python_processor"] = None
            errors["processor"] = describe(e)
            proc_module = None
        ctx["capture"].take()
        ctx["guard"].take()

        fields = list(FIELDS.values()) if ctx["all_fields"] else list(expected_raw)
        subjects = sorted(expected_raw.get("subjective") or {})
        for field in fields:
            if field == "subjective" and "subjective" not in expected_raw:
                continue
            reason = network_skip_reason(proc_module, field, msg, ctx["koji"])
            if reason:
                skipped.append(field)
                reasons[field] = reason
                continue
            try:
                value = python_value(meta, field, msg, config, subjects)
            except Exception as e:  # noqa: BLE001
                value, err = None, describe(e)
            else:
                err = None
            attempts = ctx["guard"].take()
            logs.extend("%s: %s" % (field, r) for r in ctx["capture"].take())
            if attempts:
                skipped.append(field)
                reasons[field] = "attempted network I/O (blocked): " + "; ".join(attempts[:3])
                continue
            if err is not None:
                errors[field] = err
                continue
            python[field] = jsonable(value)
            if field in expected_raw:
                try:
                    agrees[field] = bool(value == expected_raw[field])
                except Exception as e:  # noqa: BLE001
                    errors[field + ".compare"] = describe(e)
    finally:
        if inst is not None:
            try:
                inst.tearDown()
            except Exception as e:  # noqa: BLE001
                errors["tearDown"] = describe(e)

    case["python"] = python
    case["python_agrees"] = agrees
    if skipped:
        case["python_skipped"] = skipped
        case["python_skip_reasons"] = reasons
    if errors:
        case["python_errors"] = errors
    if logs:
        case["python_log"] = logs
    return case


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def summarize(cases, report):
    per_module = collections.Counter(c["processor_hint"] for c in cases)
    per_processor = collections.Counter(str(c.get("python_processor")) for c in cases)
    fields = collections.OrderedDict(
        (f, collections.Counter()) for f in FIELDS.values())
    examples = collections.defaultdict(list)
    for c in cases:
        for f, v in c["expected"].items():
            fields[f]["expected"] += 1
            if v is None:
                fields[f]["expected_null"] += 1
        for f in c.get("python", {}):
            fields[f]["python_computed"] += 1
        for f, ok in c.get("python_agrees", {}).items():
            fields[f]["agree" if ok else "disagree"] += 1
            if not ok and len(examples[f]) < 5:
                examples[f].append({"source": c["source"],
                                    "expected": c["expected"][f],
                                    "python": c["python"].get(f)})
        for f in c.get("python_skipped", []):
            fields[f]["python_skipped"] += 1
        for f in c.get("python_errors", {}):
            if f.split(".")[0] in fields:
                fields[f.split(".")[0]]["python_error"] += 1
    report["cases"] = len(cases)
    report["cases_not_run_upstream"] = [c["source"] for c in cases if not c["upstream_runs"]]
    report["cases_with_error"] = [{"source": c["source"], "error": c["error"]}
                                  for c in cases if "error" in c]
    report["cases_with_python_errors"] = [
        {"source": c["source"], "errors": c["python_errors"]}
        for c in cases if c.get("python_errors")]
    report["per_module"] = dict(sorted(per_module.items()))
    report["per_python_processor"] = dict(sorted(per_processor.items()))
    report["fields"] = {f: dict(v) for f, v in fields.items()}
    report["disagreement_examples"] = dict(examples)
    return report


def print_summary(report, out):
    p = lambda s="": print(s, file=sys.stderr)  # noqa: E731
    p()
    p("== upstream fedmsg.meta cases -> %s" % out)
    p("classes found: %d (cases written: %d; not run by upstream's own suite: %d)"
      % (report["classes_found"], report["cases"], len(report["cases_not_run_upstream"])))
    p("skipped classes (abstract / no checked expectation): %d; conglomerate "
      "classes (out of scope): %d" % (len(report["skipped_classes"]),
                                       report["conglomerate_classes"]))
    p("import failures: %d; cases with setUp error: %d; cases with python errors: %d"
      % (len(report["import_failures"]), len(report["cases_with_error"]),
         len(report["cases_with_python_errors"])))
    for f in report["import_failures"]:
        p("  import failed: %s: %s" % (f["module"], f["error"]))
    p("per module: " + ", ".join("%s=%d" % kv for kv in report["per_module"].items()))
    p("field           expected (null)  computed  agree  disagree  skipped  error")
    for f, c in report["fields"].items():
        p("%-15s %8d %6d %9d %6d %9d %8d %6d" % (
            f, c.get("expected", 0), c.get("expected_null", 0),
            c.get("python_computed", 0), c.get("agree", 0),
            c.get("disagree", 0), c.get("python_skipped", 0), c.get("python_error", 0)))
    if report["unchecked_expected_attrs"]:
        p("expected_* attributes Base never checks: " + ", ".join(
            "%s (%d classes)" % (a, len(v)) for a, v in report["unchecked_expected_attrs"].items()))
    p("network attempts blocked: %d; runtime %.1fs" % (report["network_attempts"],
                                                      report["runtime_seconds"]))


# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="JSON file to write (a list of cases)")
    ap.add_argument("--all-fields", action="store_true",
                    help="compute Python's value of every field, not only the expected ones")
    args = ap.parse_args(argv)
    started = time.monotonic()

    src, deps = ensure_upstream(cache_dir())
    # Upstream sets some network-only expectations unless these are set; we
    # want the full set (Python's value is then skipped, see python_skipped).
    for var in ("FEDMSG_META_NO_NETWORK", "TRAVIS_CI"):
        os.environ.pop(var, None)
    warnings.simplefilter("ignore")
    capture = Capture()
    root = logging.getLogger()
    root.handlers[:] = [capture]
    root.setLevel(logging.WARNING)
    guard = NetGuard()
    guard.install()

    pkg_resources = make_importable(src, deps)
    import fedmsg
    import fedmsg.config
    import fedmsg.meta

    report = collections.OrderedDict(
        fedmsg=pkg_resources.get_distribution("fedmsg").version,
        fedmsg_meta_fedora_infrastructure=VERSION,
        python=sys.version.split()[0],
        sdist_sha256=SDIST_SHA256, cache=cache_dir(), source_tree=src,
        runtime_deps=RUNTIME_DEPS, all_fields=args.all_fields,
        import_failures=[], processor_failures=[], skipped_classes=[], non_base_classes=[],
        unchecked_expected_attrs={}, conglomerate_classes=0)
    try:
        import koji  # noqa: F401
        koji_present = True
    except ImportError:
        koji_present = False
    try:
        import libravatar  # noqa: F401
        report["libravatar_present"] = True
    except ImportError:
        report["libravatar_present"] = False
    report["koji_present"] = koji_present

    modules, tests_pkg, fedmsg_test_meta = import_test_modules(report)

    # Base.setUp's config, for make_processors and for non-Base classes.
    test_cfg = os.path.join(os.path.dirname(fedmsg_test_meta.__file__),
                            "fedmsg-test-config.py")
    default_config = fedmsg.config.load_config(filenames=[test_cfg], invalidate_cache=True)
    default_config["topic_prefix"] = "org.fedoraproject"
    default_config["topic_prefix_re"] = r"^org\.fedoraproject\.(dev|stg|prod)"
    make_processors(fedmsg.meta, pkg_resources, default_config, report)
    report["processors"] = ["%s (%s.%s)" % (p.__name__, type(p).__module__, type(p).__name__)
                            for p in fedmsg.meta.processors]
    load_log = capture.take()
    if load_log:
        report["processor_load_log"] = load_log

    ctx = dict(meta=fedmsg.meta, Base=fedmsg_test_meta.Base,
               Unspecified=fedmsg_test_meta.Unspecified, default_config=default_config,
               capture=capture, guard=guard, koji=koji_present,
               all_fields=args.all_fields)
    cases = []
    found = list(find_classes(modules, tests_pkg, fedmsg_test_meta, report))
    report["classes_found"] = len(found)
    network_attempts = 0
    for mod, cls, runs, why in found:
        try:
            case = extract_case(mod, cls, runs, why, ctx)
        except Exception as e:  # noqa: BLE001 - keep going, say what broke
            case = {"source": "%s.%s" % (short_module(mod.__name__), cls.__name__),
                    "module": mod.__name__, "processor_hint": short_module(mod.__name__),
                    "upstream_runs": runs, "msg": None, "expected": {},
                    "error": "extraction failed: " + describe(e)}
        network_attempts += sum(1 for r in case.get("python_skip_reasons", {}).values()
                                if r.startswith("attempted network"))
        cases.append(case)

    report["network_attempts"] = network_attempts
    report["unjsonable_values"] = Unjsonable.count
    report["log_noise_suppressed"] = capture.noise
    report["runtime_seconds"] = round(time.monotonic() - started, 2)
    summarize(cases, report)

    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    report_path = (out[:-len(".json")] if out.endswith(".json") else out) + ".report.json"
    for path, data in ((out, cases), (report_path, report)):
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1, allow_nan=False)
            f.write("\n")
        os.replace(tmp, path)
    print_summary(report, out)
    return 0 if cases else 2


if __name__ == "__main__":
    sys.exit(main())
