#!/usr/bin/env python3
"""The steps of bench/probe: hactl probe and the blackbox exporter, one after the other, at the
same probe rate against one local nginx, for each (probe type, target count). Prints markdown
tables; writes the raw figures as JSON. Stdlib only.

Exit codes: 0 all steps fine, 1 a step failed or a prober's success ratio fell below 99%
(its figures are then not comparable), 2 the setup failed (nothing comparable was measured).
"""

import argparse
import ctypes
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_MIB = 1024.0
MIN_SUCCESS = 0.99


class SetupError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die_with_parent():
    # The children (nginx, the probers, the drivers) get SIGTERM if this process dies.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port(addr, start):
    for port in range(start, start + 1000):
        s = socket.socket()
        try:
            s.bind((addr, port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise SetupError(f"no free port on {addr} from {start}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def http_get(url, timeout=10.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


class Proc:
    """A child process with its output in a log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name, argv, logdir, stdout=None):
        self.name = name
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.log = open(self.log_path, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                  stdout=stdout if stdout is not None else self.log,
                                  stderr=self.log, preexec_fn=die_with_parent)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()

    def tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-lines:]).decode(errors="replace")
        except OSError:
            return ""


RUNNING = []


def start(name, argv, logdir, stdout=None):
    p = Proc(name, argv, logdir, stdout)
    RUNNING.append(p)
    return p


def stop(p):
    p.stop()
    if p in RUNNING:
        RUNNING.remove(p)


# ---- the target: nginx on 0.0.0.0:PORT (answers only 127.0.0.0/8), 200 "ok" for /t/* --------

def start_nginx(work, port):
    prefix = os.path.join(work, "nginx")
    os.makedirs(os.path.join(prefix, "tmp"), exist_ok=True)
    nofile = min(16384, __import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1])
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""# bench/probe: the local probe target (loopback clients only)
daemon off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {nofile // 2}; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_timeout 10s;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    allow 127.0.0.0/8;
    deny all;
    server {{
        listen 0.0.0.0:{port} backlog=4096;
        location /t/ {{ return 200 "ok\\n"; }}
        location / {{ return 404; }}
    }}
}}
""")
    p = start("nginx", ["nginx", "-p", prefix + "/", "-e", os.path.join(prefix, "error.log"), "-c", conf], work)
    url = f"http://127.0.0.1:{port}/t/0"
    for _ in range(50):
        if not p.alive():
            raise SetupError(f"nginx exited ({p.p.returncode}):\n{p.tail()}")
        try:
            if http_get(url, 1)[0] == 200:
                return p
        except OSError:
            pass
        time.sleep(0.1)
    raise SetupError(f"nginx did not answer {url}:\n{p.tail()}")


def targets_for(ptype, n, port):
    if ptype == "http":
        return [f"http://127.0.0.1:{port}/t/{i}" for i in range(n)]
    # TCP: n distinct loopback addresses (127.0.0.0/8 all lives on lo), from 127.1.0.1 on.
    base = (127 << 24) | (1 << 16) | 1
    out = []
    for i in range(n):
        a = base + i
        out.append(f"{a >> 24 & 255}.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}:{port}")
    return out


def fmt_duration(seconds):
    ms = int(round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


# ---- hactl probe -------------------------------------------------------------------------

def hactl_config(path, ptype, targets, interval, timeout, concurrency):
    with open(path, "w") as f:
        if concurrency:
            f.write(f"concurrency: {concurrency}\n")
        f.write("probes:\n")
        f.write(f"  - name: bench_{ptype}\n    type: {ptype}\n")
        f.write(f"    interval: {fmt_duration(interval)}\n    timeout: {fmt_duration(timeout)}\n")
        f.write("    targets: [" + ", ".join(json.dumps(t) for t in targets) + "]\n")
        if ptype == "http":
            f.write("    http: {status: [200]}\n")


def hactl_counts(url, probe, total_metric, success_metric):
    """Sums of the total and success counters of one probe, over all its targets."""
    _, body = http_get(url, 30)
    total = success = 0.0
    series = 0
    want = f'probe="{probe}"'
    for line in body.decode(errors="replace").splitlines():
        if not line or line[0] == "#":
            continue
        name, brace, rest = line.partition("{")
        if not brace:
            continue
        if name not in (total_metric, success_metric):
            continue
        labels, _, value = rest.rpartition("}")
        if want not in labels:
            continue
        v = float(value.split()[0])
        if name == total_metric:
            total += v
            series += 1
        else:
            success += v
    return total, success, series, len(body)


def start_hactl(a, work, ptype, targets, interval, tag):
    port = free_port("127.0.0.1", a.base_port + 100)
    cfg = os.path.join(work, f"hactl-{tag}.yml")
    hactl_config(cfg, ptype, targets, interval, min(a.timeout, interval), a.hactl_concurrency)
    p = start(f"hactl-{tag}", [a.hactl, "probe", "--config", cfg, "--listen", f"127.0.0.1:{port}"], work)
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.time() + 30
    while time.time() < deadline:
        if not p.alive():
            stop(p)
            raise SetupError(f"`hactl probe` exited with code {p.p.returncode} "
                             f"before serving {url}:\n{p.tail()}")
        try:
            if http_get(url, 2)[0] == 200:
                return p, url
        except OSError:
            pass
        time.sleep(0.2)
    stop(p)
    raise SetupError(f"`hactl probe` did not serve {url} within 30 s:\n{p.tail()}")


def hactl_preflight(a, work, nginx_port):
    """A short run with one target of each type: fails clearly if `hactl probe` is not ready."""
    for ptype in a.types:
        targets = targets_for(ptype, 1, nginx_port)
        p, url = start_hactl(a, work, ptype, targets, 1.0, f"preflight-{ptype}")
        try:
            deadline = time.time() + 6
            total = success = series = 0
            while time.time() < deadline:
                total, success, series, _ = hactl_counts(url, f"bench_{ptype}", a.total_metric, a.success_metric)
                if total >= 1 and success >= 1:
                    break
                time.sleep(0.5)
            if total < 1:
                raise SetupError(
                    f"`hactl probe` serves {url} but no {a.total_metric}{{probe=\"bench_{ptype}\",...}} "
                    f"counter grew within 6 s (1 target, interval 1s; {series} series found).\n"
                    f"Its log:\n{p.tail()}")
            if success < 1:
                raise SetupError(f"`hactl probe` ran {total:g} {ptype} probes of {targets[0]} and none "
                                 f"succeeded ({a.success_metric} = {success:g}).\nIts log:\n{p.tail()}")
        finally:
            stop(p)


def step_hactl(a, work, ptype, targets, interval, tag):
    p, url = start_hactl(a, work, ptype, targets, interval, tag)
    probe = f"bench_{ptype}"
    try:
        ready = time.time()
        rss = sample_until(p, ready + a.warmup(interval))
        c0 = cpu_seconds(p.pid)
        s = time.time()
        tot0, suc0, series0, size = hactl_counts(url, probe, a.total_metric, a.success_metric)
        m0 = (s + time.time()) / 2
        scrape_cpu = cpu_seconds(p.pid) - c0
        rss = max(rss, sample_until(p, m0 + a.seconds))
        c1a = cpu_seconds(p.pid)
        s = time.time()
        tot1, suc1, series1, size = hactl_counts(url, probe, a.total_metric, a.success_metric)
        m1 = (s + time.time()) / 2
        c1 = cpu_seconds(p.pid)
        scrape_cpu += c1 - c1a
        hwm = status_kib(p.pid, "VmHWM")
        alive = p.alive()
    finally:
        stop(p)
    done = tot1 - tot0
    return {
        "window_s": m1 - m0, "done": done, "success": suc1 - suc0, "cpu_s": c1 - c0,
        "rss_max_kib": rss, "hwm_kib": hwm, "alive": alive, "series": series1,
        "metrics_bytes": size, "driver_cpu_s": None, "scrape_cpu_s": scrape_cpu,
        "note": f"/metrics {size / 1024:,.0f} KiB scraped twice, in its CPU: <= {scrape_cpu:.2f} s "
                f"(CPU while the scrapes ran)",
    }


# ---- the blackbox exporter ---------------------------------------------------------------

BLACKBOX_CONFIG = """modules:
  http_2xx:
    prober: http
    timeout: {timeout}
    http:
      valid_status_codes: [200]
      no_follow_redirects: true
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
  tcp_connect:
    prober: tcp
    timeout: {timeout}
    tcp:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
"""


def step_blackbox(a, work, ptype, targets, interval, tag):
    port = free_port("127.0.0.1", a.base_port + 200)
    cfg = os.path.join(work, "blackbox.yml")
    with open(cfg, "w") as f:
        f.write(BLACKBOX_CONFIG.format(timeout=fmt_duration(min(a.timeout, interval))))
    tfile = os.path.join(work, f"targets-{tag}.txt")
    with open(tfile, "w") as f:
        f.write("\n".join(targets) + "\n")
    p = start(f"blackbox-{tag}", [a.blackbox, f"--config.file={cfg}",
                                   f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"], work)
    drivers = []
    try:
        deadline = time.time() + 15
        while True:
            if not p.alive():
                raise SetupError(f"the blackbox exporter exited ({p.p.returncode}):\n{p.tail()}")
            try:
                if http_get(f"http://127.0.0.1:{port}/-/healthy", 1)[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SetupError(f"the blackbox exporter did not come up on port {port}:\n{p.tail()}")
            time.sleep(0.1)
        rate = len(targets) / interval
        ndrivers = a.drivers or max(1, math.ceil(rate / a.driver_rate))
        warmup = a.warmup(interval)
        t_start = time.time() + 0.5
        module = "http_2xx" if ptype == "http" else "tcp_connect"
        for k in range(ndrivers):
            out = open(os.path.join(work, f"driver-{tag}-{k}.json"), "wb")
            drivers.append((start(f"driver-{tag}-{k}", [
                sys.executable, os.path.join(HERE, "driver.py"), "--port", str(port),
                "--module", module, "--targets", tfile, "--interval", str(interval),
                "--start", repr(t_start), "--warmup", str(warmup), "--seconds", str(a.seconds),
                "--drivers", str(ndrivers), "--index", str(k),
                "--connections", str(a.connections)], work, stdout=out), out))
        t0 = t_start + warmup
        rss = sample_until(p, t0)
        c0 = cpu_seconds(p.pid)
        rss = max(rss, sample_until(p, t0 + a.seconds))
        c1 = cpu_seconds(p.pid)
        hwm = status_kib(p.pid, "VmHWM")
        alive = p.alive()
        results = []
        for d, out in drivers:
            try:
                d.p.wait(a.timeout + 15)
            except subprocess.TimeoutExpired:
                raise SetupError(f"driver {d.name} did not finish:\n{d.tail()}")
            out.close()
            if d.p.returncode != 0:
                raise SetupError(f"driver {d.name} failed ({d.p.returncode}):\n{d.tail()}")
            with open(out.name) as f:
                results.append(json.load(f))
    finally:
        for d, out in drivers:
            stop(d)
            out.close()
        stop(p)
    agg = {k: sum(r[k] for r in results) for k in ("done", "success", "errors", "skipped", "late", "cpu_s")}
    errs = [e for r in results for e in r["error_samples"]][:3]
    p99 = max((r["latency_p99_ms"] or 0) for r in results)
    note = f"{ndrivers} driver{'s' if ndrivers > 1 else ''} x {a.connections} conns; p99 {p99:.1f} ms"
    if agg["skipped"] or agg["late"]:
        note += f"; driver behind: {agg['skipped']} skipped, {agg['late']} late"
    if errs:
        note += f"; errors e.g. {errs[0]}"
    return {
        "window_s": a.seconds, "done": agg["done"], "success": agg["success"],
        "cpu_s": c1 - c0, "rss_max_kib": rss, "hwm_kib": hwm, "alive": alive,
        "driver_cpu_s": agg["cpu_s"], "drivers": results, "note": note,
    }


def sample_until(p, until):
    """Samples VmRSS (KiB) once a second until the given time; returns the largest sample."""
    best = 0
    while True:
        try:
            best = max(best, status_kib(p.pid, "VmRSS"))
        except OSError:
            return best
        left = until - time.time()
        if left <= 0:
            return best
        time.sleep(min(1.0, left))


# ---- the run -----------------------------------------------------------------------------

def parse_plan(s):
    plan = []
    for item in s.split(","):
        n, _, interval = item.partition("@")
        plan.append((int(n), float(interval.rstrip("s")) if interval else 1.0))
    return plan


def table(results, a):
    out = []
    out.append("| prober | probe | targets | interval | rate wanted /s | achieved probes/s | success % "
               "| CPU s | probes per CPU-s | max RSS MiB | VmHWM MiB | driver CPU s | hactl/blackbox | notes |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    index = {(r["prober"], r["type"], r["n"]): r for r in results}
    for r in results:
        if "error" in r:
            out.append(f"| {r['prober']} | {r['type']} | {r['n']:,} | {fmt_duration(r['interval'])} | "
                       f"{r['rate']:,.0f} | – | – | – | – | – | – | – | – | FAILED: {r['error'].splitlines()[0]} |")
            continue
        ratio = ""
        if r["prober"] == "hactl":
            b = index.get(("blackbox", r["type"], r["n"]))
            if b and "error" not in b:
                ratio = ratio_str(r, b)
        dcpu = "–" if r["driver_cpu_s"] is None else f"{r['driver_cpu_s']:.2f}"
        out.append(
            f"| {r['prober']} | {r['type']} | {r['n']:,} | {fmt_duration(r['interval'])} | {r['rate']:,.0f} | "
            f"{r['achieved']:,.0f} | {r['success_pct']:.2f} | {r['cpu_s']:.2f} | "
            f"{per_cpu(r)} | {r['rss_max_kib'] / PAGE_MIB:.1f} | {r['hwm_kib'] / PAGE_MIB:.1f} | "
            f"{dcpu} | {ratio} | {r['note']} |")
    return "\n".join(out)


def per_cpu(r):
    # Under one clock tick of CPU: a lower bound.
    return f"{r['per_cpu']:,.0f}" if r["cpu_s"] > 0 else f"> {r['done'] / (1 / CLK_TCK):,.0f}"


def ratio_str(h, b):
    """hactl's probes per CPU-second over the blackbox exporter's."""
    if b["cpu_s"] <= 0:
        return "n/a"
    if h["cpu_s"] <= 0:
        return f"> {h['done'] * CLK_TCK / b['per_cpu']:.2f}x"
    return f"{h['per_cpu'] / b['per_cpu']:.2f}x"


def summary(results):
    """hactl against the blackbox exporter, one line per (probe type, target count)."""
    index = {(r["prober"], r["type"], r["n"]): r for r in results if "error" not in r}
    out = ["| probe | targets | probes/s | hactl probes per CPU-s | blackbox probes per CPU-s "
           "| hactl/blackbox | goal >= 2x | hactl/blackbox peak memory |",
           "|---|---:|---:|---:|---:|---:|---|---:|"]
    seen = []
    for r in results:
        key = (r["type"], r["n"])
        if key in seen:
            continue
        seen.append(key)
        h, b = index.get(("hactl",) + key), index.get(("blackbox",) + key)
        if not (h and b):
            continue
        ratio = h["per_cpu"] / b["per_cpu"] if b["per_cpu"] else float("inf")
        if h["cpu_s"] <= 0:
            ratio = h["done"] * CLK_TCK / b["per_cpu"]
        mem = h["hwm_kib"] / b["hwm_kib"] if b["hwm_kib"] else float("inf")
        out.append(f"| {r['type']} | {r['n']:,} | {r['rate']:,.0f} | {per_cpu(h)} | {per_cpu(b)} "
                   f"| {ratio_str(h, b)} | {'met' if ratio >= 2 else 'NOT met'} | {mem:.2f}x |")
    return "\n".join(out) if len(out) > 2 else ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measured seconds per step")
    ap.add_argument("--plan", default="100@1,1000@1,10000@10",
                    help="target counts and intervals (seconds): N@INTERVAL,...")
    ap.add_argument("--types", default="http,tcp")
    ap.add_argument("--probers", default="hactl,blackbox")
    ap.add_argument("--hactl", default="target/release/hactl")
    ap.add_argument("--blackbox", default="prometheus-blackbox-exporter")
    ap.add_argument("--timeout", type=float, default=2.0,
                    help="probe timeout, seconds (the interval if that is shorter), the same for both")
    ap.add_argument("--warmup-min", type=float, default=5.0,
                    help="warm-up seconds (at least one interval + 2 s)")
    ap.add_argument("--drivers", type=int, default=0,
                    help="blackbox driver processes (0: one per --driver-rate probes/s)")
    ap.add_argument("--driver-rate", type=float, default=1000.0)
    ap.add_argument("--connections", type=int, default=32, help="keep-alive connections per driver")
    ap.add_argument("--hactl-concurrency", type=int, default=0,
                    help="write `concurrency: N` into hactl's config (0: leave it out)")
    ap.add_argument("--total-metric", default="total")
    ap.add_argument("--success-metric", default="success")
    ap.add_argument("--base-port", type=int, default=18080)
    ap.add_argument("--json", default="", help="also write the raw figures here")
    a = ap.parse_args()
    a.types = [t for t in a.types.split(",") if t]
    a.probers = [p for p in a.probers.split(",") if p]
    a.warmup = lambda interval: max(a.warmup_min, interval + 2.0)
    plan = parse_plan(a.plan)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = tempfile.mkdtemp(prefix="hactl-bench-probe-")
    results = []
    code = 0
    try:
        nginx_port = free_port("0.0.0.0", a.base_port)
        nginx = start_nginx(work, nginx_port)
        log(f"== target: nginx on 0.0.0.0:{nginx_port} (pid {nginx.pid}, loopback clients only); work dir {work}")
        if "hactl" in a.probers:
            log("== pre-flight: hactl probe with one target of each type")
            hactl_preflight(a, work, nginx_port)
        for n, interval in plan:
            for ptype in a.types:
                targets = targets_for(ptype, n, nginx_port)
                for prober in a.probers:
                    rate = n / interval
                    tag = f"{ptype}-{n}"
                    log(f"== {prober} {ptype}: {n:,} targets every {fmt_duration(interval)} = {rate:,.0f} probes/s, "
                        f"{a.warmup(interval):g} s warm-up + {a.seconds:g} s")
                    row = {"prober": prober, "type": ptype, "n": n, "interval": interval, "rate": rate}
                    try:
                        fn = step_hactl if prober == "hactl" else step_blackbox
                        row.update(fn(a, work, ptype, targets, interval, tag))
                    except SetupError as e:
                        row["error"] = str(e)
                        log(f"   FAILED: {e}")
                        results.append(row)
                        code = 1
                        continue
                    row["achieved"] = row["done"] / row["window_s"]
                    row["success_pct"] = 100.0 * row["success"] / row["done"] if row["done"] else 0.0
                    row["per_cpu"] = row["done"] / row["cpu_s"] if row["cpu_s"] > 0 else float("inf")
                    if not row["alive"]:
                        row["note"] = "DIED during the step; " + row["note"]
                        code = 1
                    if row["success_pct"] < 100 * MIN_SUCCESS:
                        row["note"] = f"SUCCESS BELOW {100 * MIN_SUCCESS:.0f}%: not comparable; " + row["note"]
                        code = 1
                    if row["achieved"] < 0.95 * rate:
                        row["note"] = f"rate below 95% of the wanted; " + row["note"]
                    log(f"   {row['achieved']:,.0f} probes/s, {row['success_pct']:.2f}% success, "
                        f"{row['cpu_s']:.2f} CPU s, {per_cpu(row)} probes/CPU-s, "
                        f"max RSS {row['rss_max_kib'] / PAGE_MIB:.1f} MiB")
                    results.append(row)
                    time.sleep(1)
    except SetupError as e:
        log(f"bench/probe: {e}")
        if "hactl" in a.probers:
            log("(to measure the blackbox exporter alone: PROBERS=blackbox bench/probe)")
        code = 2
    except KeyboardInterrupt:
        code = 130
    finally:
        for p in list(reversed(RUNNING)):
            stop(p)
        subprocess.run(["rm", "-rf", work])

    if results:
        print()
        print(table(results, a))
        print()
        s = summary(results)
        if s:
            print(s)
            print()
        print(f"CPU s: utime+stime of the prober process over the measured window ({a.seconds:g} s, after the "
              f"warm-up), from /proc/PID/stat. hactl's CPU includes the two /metrics scrapes that count its "
              f"probes; the blackbox exporter's includes serving each /probe request (its pull model). "
              f"driver CPU s: the Python driver(s) that play Prometheus for the blackbox exporter, not counted "
              f"in its CPU. max RSS: VmRSS sampled each second; VmHWM: the process's peak. Target: one nginx "
              f"worker on loopback; TCP targets are distinct 127.1.x.y addresses. Probe timeout "
              f"{fmt_duration(a.timeout)} (or the interval, if shorter: hactl wants timeout <= interval). Goal: hactl >= 2x the blackbox exporter's probes per CPU-second.")
        bad = [r for r in results if "error" in r or r.get("success_pct", 100) < 100 * MIN_SUCCESS or not r.get("alive", True)]
        if bad:
            print(f"\nNOT COMPARABLE: {len(bad)} step(s) failed or fell below {100 * MIN_SUCCESS:.0f}% success "
                  f"(see notes).")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(results, f, indent=1, default=str)
            print(f"\nraw figures: {a.json}")
    sys.exit(code)


if __name__ == "__main__":
    main()
