"""Benchmark sinks for the Python fedmsg-hub (used by fedmsg-bench).

``Sink1`` .. ``Sink4`` are fedmsg consumers on ``*`` that count what the hub
hands them and, when ``BENCH_SINK_LATENCY=1``, record when each message
arrived.  They are enabled by the key ``counter.consumer.enabled`` that
``shared/pyfedmsg/fedmsg.d/counter.py`` already sets, and are loaded with
``fedmsg-hub --with-consumers fedmsg_bench_sink:Sink1,...`` (this directory
on ``PYTHONPATH``).

Files, in ``$BENCH_SINK_DIR``:

* ``sink-<n>.json``: the counter JSON of shared/pyfedmsg's counter consumer
  (``count``, ``first_ts``, ``last_ts``, ...), rewritten atomically every
  0.25 s while it changes, at start and at stop;
* ``recv-<n>.txt``: one ``<msg_id> <unix ns>`` line per message, appended at
  every flush, so nothing is lost if the hub has to be killed.

``consume`` runs on moksha's worker thread after fedmsg's validation, so
only messages that passed validation are counted.
"""
import json
import os
import threading
import time

import fedmsg.consumers

FLUSH_S = 0.25


class _Sink(fedmsg.consumers.FedmsgConsumer):
    topic = "*"
    config_key = "counter.consumer.enabled"
    index = 0

    def __init__(self, hub):
        self._lock = threading.Lock()
        # The flusher thread and stop() both flush; one at a time.
        self._flush_lock = threading.Lock()
        self._count = 0
        self._first_ns = None
        self._last_ns = None
        self._pending = []
        self._dirty = True
        self._stopped = False
        directory = os.environ["BENCH_SINK_DIR"]
        self._output = os.path.join(directory, "sink-%d.json" % self.index)
        self._received = None
        if os.environ.get("BENCH_SINK_LATENCY") == "1":
            self._received = os.path.join(directory, "recv-%d.txt" % self.index)
        super(_Sink, self).__init__(hub)
        if not getattr(self, "_initialized", False):
            return  # disabled by config
        self._flush()
        thread = threading.Thread(target=self._flusher, name="bench-sink-flush", daemon=True)
        thread.start()

    def consume(self, message):
        now = time.time_ns()
        with self._lock:
            if self._first_ns is None:
                self._first_ns = now
            self._last_ns = now
            self._count += 1
            self._dirty = True
            if self._received is not None:
                self._pending.append((message["body"].get("msg_id"), now))

    def _flush(self):
        with self._flush_lock:
            self._flush_locked()

    def _flush_locked(self):
        with self._lock:
            count, first, last = self._count, self._first_ns, self._last_ns
            pending, self._pending = self._pending, []
            self._dirty = False
        if pending:
            with open(self._received, "a") as f:
                f.write("".join("%s %d\n" % item for item in pending))
        first_ts = first / 1e9 if first is not None else None
        last_ts = last / 1e9 if last is not None else None
        elapsed = (last_ts - first_ts) if first_ts is not None else 0.0
        data = {
            "count": count,
            "first_ts": first_ts,
            "last_ts": last_ts,
            "elapsed": elapsed,
            "rate": ((count - 1) / elapsed) if elapsed > 0 else None,
            "invalid_seen": 0,
            "pid": os.getpid(),
            "written_at": time.time(),
        }
        tmp = "%s.tmp.%d" % (self._output, os.getpid())
        with open(tmp, "w") as f:
            json.dump(data, f)
            f.write("\n")
        os.replace(tmp, self._output)

    def _flusher(self):
        while not self._stopped:
            time.sleep(FLUSH_S)
            if self._dirty:
                self._flush()

    def stop(self):
        self._stopped = True
        try:
            self._flush()
        finally:
            super(_Sink, self).stop()


class Sink1(_Sink):
    index = 1


class Sink2(_Sink):
    index = 2


class Sink3(_Sink):
    index = 3


class Sink4(_Sink):
    index = 4
