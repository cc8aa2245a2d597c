#!/usr/bin/env python3
"""Drive a pull-based prober (Prometheus' blackbox exporter) like a scheduler would.

Every target is probed once per INTERVAL, spread evenly over the interval (target i of N at
offset i/N * INTERVAL), through `GET /probe?module=MODULE&target=TARGET` on keep-alive HTTP/1.1
connections (asyncio streams, stdlib only). Several drivers can share one target set: driver K of
D takes targets i with i % D == K.

Counted are the probes that complete in the measured window [start+warmup, start+warmup+seconds):
done (answers and errors), success (HTTP 200 with `probe_success 1`), errors (connection or
protocol errors, non-200 answers), skipped (probes not sent because the queue held a whole round
already: the driver or the exporter could not keep up), and the driver's own CPU seconds over the
window. One JSON object on stdout at the end.
"""

import argparse
import asyncio
import json
import resource
import sys
import time
import urllib.parse


def cpu_self():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def read_response(reader):
    """One HTTP/1.1 response: (status, body, server wants to close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    chunked = False
    close = False
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value)
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif key == b"connection" and b"close" in value.lower():
            close = True
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body = await reader.read()
        close = True
    return status, body, close


async def run(a):
    targets = [line.strip() for line in open(a.targets) if line.strip()]
    n = len(targets)
    mine = [i for i in range(n) if i % a.drivers == a.index]
    hostport = f"{a.host}:{a.port}".encode()
    requests = {}
    for i in mine:
        query = urllib.parse.urlencode({"module": a.module, "target": targets[i]})
        requests[i] = (
            b"GET /probe?" + query.encode() + b" HTTP/1.1\r\nHost: " + hostport +
            b"\r\nUser-Agent: hactl-bench-driver\r\n\r\n"
        )
    offsets = [i * a.interval / n for i in mine]

    t0 = a.start + a.warmup
    t1 = t0 + a.seconds
    st = {"done": 0, "success": 0, "errors": 0, "skipped": 0, "late": 0, "sent": 0,
          "max_lag_ms": 0.0, "reconnects": 0}
    latencies = []
    cpu = {}
    error_samples = []

    loop = asyncio.get_running_loop()
    loop.call_later(max(0.0, t0 - time.time()), lambda: cpu.__setitem__("t0", cpu_self()))
    loop.call_later(max(0.0, t1 - time.time()), lambda: cpu.__setitem__("t1", cpu_self()))

    queue = asyncio.Queue()

    def record(sent_at, ok, err=None):
        now = time.time()
        if t0 <= now < t1:
            st["done"] += 1
            if ok:
                st["success"] += 1
                latencies.append(now - sent_at)
            if err is not None:
                st["errors"] += 1
                if len(error_samples) < 5:
                    error_samples.append(err)

    async def worker():
        reader = writer = None
        while True:
            item = await queue.get()
            if item is None:
                break
            i, due = item
            now = time.time()
            lag = now - due
            if t0 <= now < t1:
                st["max_lag_ms"] = max(st["max_lag_ms"], lag * 1000)
                if lag > a.interval:
                    st["late"] += 1
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(a.host, a.port)
                    st["reconnects"] += 1
                writer.write(requests[i])
                status, body, close = await read_response(reader)
                if status == 200:
                    record(now, b"\nprobe_success 1\n" in body)
                else:
                    record(now, False, f"HTTP {status}: {body[:200]!r}")
                if close:
                    writer.close()
                    writer = None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
                record(now, False, f"{type(e).__name__}: {e}")
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            writer.close()

    workers = [asyncio.create_task(worker()) for _ in range(a.connections)]

    # The schedule: round r, target j is due at start + r*interval + offsets[j].
    r = j = 0
    while mine:
        due = a.start + r * a.interval + offsets[j]
        if due >= t1:
            break
        now = time.time()
        if due > now + 0.0005:
            await asyncio.sleep(due - now)
        if queue.qsize() >= len(mine):
            if t0 <= due < t1:
                st["skipped"] += 1
        else:
            queue.put_nowait((mine[j], due))
            st["sent"] += 1
        j += 1
        if j == len(mine):
            j = 0
            r += 1
    for _ in workers:
        queue.put_nowait(None)
    done, pending = await asyncio.wait(workers, timeout=a.drain)
    for t in pending:
        t.cancel()

    latencies.sort()

    def pct(p):
        return round(latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000, 2) if latencies else None

    st["window_s"] = a.seconds
    st["cpu_s"] = round(cpu.get("t1", cpu_self()) - cpu.get("t0", 0.0), 3)
    st["latency_p50_ms"] = pct(0.50)
    st["latency_p99_ms"] = pct(0.99)
    st["max_lag_ms"] = round(st["max_lag_ms"], 1)
    st["targets"] = len(mine)
    st["error_samples"] = error_samples
    json.dump(st, sys.stdout)
    sys.stdout.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="the exporter's port")
    p.add_argument("--module", required=True, help="the exporter's module, e.g. http_2xx")
    p.add_argument("--targets", required=True, help="a file: one target a line")
    p.add_argument("--interval", type=float, required=True, help="seconds between probes of one target")
    p.add_argument("--start", type=float, required=True, help="the schedule's start, Unix time")
    p.add_argument("--warmup", type=float, required=True, help="seconds before the window opens")
    p.add_argument("--seconds", type=float, required=True, help="the measured window, seconds")
    p.add_argument("--drivers", type=int, default=1, help="how many drivers share the targets")
    p.add_argument("--index", type=int, default=0, help="which of them this one is")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    p.add_argument("--drain", type=float, default=5.0, help="seconds to wait for the last answers")
    a = p.parse_args()
    asyncio.run(run(a))


if __name__ == "__main__":
    main()
