"""Operator benchmark: the real `lmo operator` process against a real API server (default) or KMock.

    .venv/bin/python bench/operator.py [--against real|kmock] [--samples 50] [--burst 200]

`--against real` (default): kube-apiserver + kube-controller-manager v1.36 (tests/fixtures/
control_plane.py), the chart installed with helm, the operator logged in with its
ServiceAccount's token, the kubelet stand-in running pods and the real converter on a tiny
checkpoint (a content-addressed result is answered again without a new process). The
control plane runs with the flags of a cluster tuned for thousands of objects
(`tests.fixtures.control_plane.SCALE_ARGS`). Measured: `--burst` LanguageModels created at
once in a fresh namespace -> all reconciled (status written, both conversion Jobs created);
then, while they roll out, traffic patch 90/10 -> 50/50 on `--samples` LanguageModels made
Ready before the burst -> HTTPRoute patched, timed from the client's patch to the operator's
route patch in the API server's audit log (p50/p95/p99); how many of the burst are Ready
after `--ready-timeout`; the operator's peak RSS; and where the time went: CPU seconds of
each process, the API server's requests by verb and resource (its /metrics), 429 answers,
the operator's writes per LanguageModel and its Lease renewal gaps (the audit log), the
kubelet stand-in's requests. `--py-spy S` samples the operator's CPU for S seconds from the
start of the burst (py-spy from PyPI, when installed).

`--against kmock`: the earlier measurement against the emulator, below.

The operator runs as its own process (`python -m lmo.cli operator`, the chart's command)
with a kubeconfig pointing at a KMock emulator served by this process (the emulator of
tests/fixtures/kmock_fixture.py), so its peak RSS is the operator's alone. This process
plays the cluster: it finishes conversion Jobs and reports Deployments ready.

Measured:
1. `--burst` LanguageModels created at once on a fresh cluster -> all reconciled (status
   written, Jobs applied): seconds, and the operator's CPU time meanwhile (the emulator,
   single-threaded Python in this process, turned out to be the bottleneck);
2. create -> children applied, with those resources present: a LanguageModel with two
   versions is created; time until its conversion Jobs and HTTPRoute are applied and its
   status is written (p50/p95 over `--samples` sequential creates);
3. traffic patch -> route updated: on a Ready LanguageModel, a JSON patch moves the weights
   90/10 -> 50/50; time until the operator has re-applied the HTTPRoute (p50/p95);
4. the operator's peak RSS (VmHWM from /proc).

Aims (issue 2): 0.5 s p50 traffic shift, 60 s for 200 resources, 200 MB RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import kmock  # noqa: E402

from tests.fixtures.kmock_fixture import (  # noqa: E402
    Cluster,
    LmoEmulator,
    declare_kinds,
    job_for,
    manifest_for,
)

NS = "default"
AIMS = {"traffic_p50_s": 0.5, "traffic_p95_s": 1.0, "burst_s": 60.0, "rss_mb": 200.0}
# the real API server at scale (1,000 LanguageModels): reconciled in 60 s, a traffic patch on
# the route in 100 ms at p99 while they exist, the operator under 300 MB
REAL_AIMS = {"traffic_p99_s": 0.1, "burst_s": 60.0, "rss_mb": 300.0}


def spec() -> dict:
    return {
        "task": "feature-extraction",
        "versions": [
            {"name": "v1", "checkpoint": {"uri": "s3://models/minilm/v1/"}, "traffic": 90},
            {"name": "v2", "checkpoint": {"uri": "s3://models/minilm/v2/"}, "traffic": 10},
        ],
        "autoscaling": {"minReplicas": 1, "maxReplicas": 4},
    }


def kubeconfig(url: str, path: Path) -> None:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
        f"clusters: [{{name: kmock, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: kmock, user: {token: bench}}]\n"
        "contexts: [{name: kmock, context: {cluster: kmock, user: kmock, namespace: default}}]\n"
    )


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def wait(pred, timeout: float, what: str, step: float = 0.002) -> float:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(step)
    return time.monotonic()


def has_status(cluster: Cluster, name: str) -> bool:
    obj = cluster.peek("lmo.dev/v1alpha1/languagemodels", NS, name) or {}
    return bool((obj.get("status") or {}).get("conditions"))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def create_latency(cluster: Cluster, emu: LmoEmulator, name: str, body: dict) -> float:
    jobs = [job_for(body, name, v) for v in ("v1", "v2")]
    t0 = time.monotonic()
    await cluster.apply_lm(name, body, NS)

    def done() -> bool:
        keys = [("jobs", NS, j) for j in jobs] + [("httproutes", NS, name)]
        return all(k in emu.written for k in keys) and has_status(cluster, name)

    await wait(done, 30, f"children of {name}")
    last = max(emu.written[("jobs", NS, j)] for j in jobs)
    return max(last, emu.written[("httproutes", NS, name)], emu.written[("languagemodels", NS, name)]) - t0


async def make_ready(cluster: Cluster, name: str, body: dict) -> None:
    for v in ("v1", "v2"):
        await cluster.finish_job(NS, job_for(body, name, v), manifest_for(body, v))
    deps = {f"{name}-v1", f"{name}-v2"}
    await wait(lambda: deps <= cluster.names("apps/v1/deployments", NS), 30, f"{name} Deployments", 0.01)
    for d in sorted(deps):
        await cluster.ready_deployment(NS, d)
    await wait(
        lambda: (cluster.condition(name, "Ready") or {}).get("status") == "True", 30, f"{name} Ready", 0.01
    )


async def traffic_latency(cluster: Cluster, emu: LmoEmulator, name: str) -> float:
    await asyncio.sleep(0.05)  # let the last reconcile of `name` settle
    key = ("httproutes", NS, name)
    before = emu.written.get(key)
    t0 = time.monotonic()
    await cluster.patch_lm(name, [
        {"op": "replace", "path": "/spec/versions/0/traffic", "value": 50},
        {"op": "replace", "path": "/spec/versions/1/traffic", "value": 50},
    ], NS)

    def moved() -> bool:
        route = cluster.get("gateway.networking.k8s.io/v1/httproutes", NS, name) or {}
        refs = ((route.get("spec") or {}).get("rules") or [{}])[-1].get("backendRefs") or []
        return emu.written.get(key) != before and [r.get("weight") for r in refs] == [50, 50]

    await wait(moved, 30, f"route of {name}")
    return emu.written[key] - t0


async def main(samples: int, burst: int) -> dict:
    async with LmoEmulator() as emu, kmock.Server(emu):
        declare_kinds(emu)
        cluster = Cluster(emu)
        with tempfile.TemporaryDirectory(prefix="lmo-bench-") as tmp:
            cfg = Path(tmp) / "kubeconfig"
            kubeconfig(str(emu.url).rstrip("/"), cfg)
            env = dict(os.environ, KUBECONFIG=str(cfg), LMO_LOG_FORMAT="text",
                       OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=str(ROOT))
            log = open(Path(tmp) / "operator.log", "w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "lmo.cli", "operator", "--all-namespaces", "--metrics-port", "0"],
                env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )
            try:
                body = spec()
                await create_latency(cluster, emu, "warmup", body)  # the operator is up

                names = [f"b{i}" for i in range(burst)]
                cpu0 = cpu_seconds(proc.pid)
                own0 = time.process_time()
                t0 = time.monotonic()
                await asyncio.gather(*(cluster.apply_lm(n, body, NS) for n in names))
                jobs = {n: [job_for(body, n, v) for v in ("v1", "v2")] for n in names}
                await wait(
                    lambda: all(
                        has_status(cluster, n) and all(("jobs", NS, j) in emu.written for j in jobs[n])
                        for n in names
                    ),
                    300, "the burst", 0.05,
                )
                burst_s = time.monotonic() - t0
                burst_cpu = cpu_seconds(proc.pid) - cpu0
                emulator_cpu = time.process_time() - own0

                creates = [await create_latency(cluster, emu, f"c{i}", body) for i in range(samples)]
                for i in range(samples):
                    await make_ready(cluster, f"c{i}", body)
                shifts = [await traffic_latency(cluster, emu, f"c{i}") for i in range(samples)]
                rss_kb = 0
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        rss_kb = int(line.split()[1])
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()
    return {
        "create_p50_s": statistics.median(creates),
        "create_p95_s": pct(creates, 0.95),
        "traffic_p50_s": statistics.median(shifts),
        "traffic_p95_s": pct(shifts, 0.95),
        "traffic_p99_s": pct(shifts, 0.99),
        "rss_at_mb": {k: v / 1024 for k, v in rss_at.items()},
        "loads": loads,
        "burst_s": burst_s,
        "burst_cpu_s": burst_cpu,
        "emulator_cpu_s": emulator_cpu,
        "rss_mb": rss_kb / 1024,
        "samples": samples,
        "burst": burst,
    }


def report(r: dict) -> str:
    rows = [
        ("create -> Jobs + route + status applied, p50", f"{r['create_p50_s'] * 1000:.0f} ms", "", ""),
        ("create -> Jobs + route + status applied, p95", f"{r['create_p95_s'] * 1000:.0f} ms", "", ""),
        ("traffic patch -> HTTPRoute updated, p50", f"{r['traffic_p50_s'] * 1000:.0f} ms", "0.5 s",
         f"{r['traffic_p50_s'] / AIMS['traffic_p50_s']:.2f}"),
        ("traffic patch -> HTTPRoute updated, p95", f"{r['traffic_p95_s'] * 1000:.0f} ms", "", ""),
        (f"{r['burst']} created at once (fresh cluster) -> all reconciled", f"{r['burst_s']:.1f} s", "60 s",
         f"{r['burst_s'] / AIMS['burst_s']:.2f}"),
        (f"operator CPU time during the {r['burst']}-burst", f"{r['burst_cpu_s']:.1f} s", "", ""),
        ("emulator (this process) CPU time during the burst", f"{r['emulator_cpu_s']:.1f} s", "", ""),
        ("operator peak RSS (VmHWM)", f"{r['rss_mb']:.0f} MB", "200 MB", f"{r['rss_mb'] / AIMS['rss_mb']:.2f}"),
    ]
    return table(rows, f"the operator as its own process against KMock over HTTP on localhost; "
                       f"{r['samples']} samples each")


def table(rows: list[tuple[str, str, str, str]], setup: str) -> str:
    """The machine, the setup and a markdown table of (measure, value, aim, value / aim)."""
    head = (
        f"{date.today().isoformat()}, {platform.node() or 'vm'} ({os.cpu_count()} shared cores, "
        f"load average {os.getloadavg()[0]:.1f} at the end), Python {platform.python_version()}; "
        f"{setup}.\n"
    )
    lines = ["| measure | value | aim | value / aim |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return head + "\n" + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- real API server


class Meters:
    """What the cluster's processes spent, read before and after a stage: CPU seconds of
    each process (the bench process plays the kubelet and the clients), the API server's
    request counters (`apiserver_request_total` by verb and code, APF rejections by
    priority level) from its /metrics."""

    def __init__(self, rc):
        self.rc = rc
        self.pids = {"operator": rc.operator.pid,
                     **{name: proc.pid for name, proc in rc.cp.procs.items()}}

    def cpu(self) -> dict[str, float]:
        out = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        out["bench (kubelet stand-in, clients)"] = time.process_time()
        return out

    def requests(self) -> Counter:
        from prometheus_client.parser import text_string_to_metric_families

        text = self.rc.session.get(self.rc.cp.url + "/metrics", timeout=60).text
        out: Counter = Counter()
        for fam in text_string_to_metric_families(text):
            for sample in fam.samples:
                if sample.name == "apiserver_request_total":
                    lab = sample.labels
                    out[("requests", lab.get("verb", ""))] += sample.value
                    out[("code", lab.get("code", ""))] += sample.value
                    sub = f"/{lab['subresource']}" if lab.get("subresource") else ""
                    out[("by", f"{lab.get('verb', '')} {lab.get('resource', '')}{sub}")] += sample.value
                elif sample.name == "apiserver_flowcontrol_rejected_requests_total":
                    out[("rejected", sample.labels.get("priority_level", ""))] += sample.value
        return out

    def snap(self) -> tuple[dict[str, float], Counter]:
        return self.cpu(), self.requests()

    @staticmethod
    def delta(a: tuple[dict, Counter], b: tuple[dict, Counter], seconds: float) -> dict:
        cpu = {k: b[0][k] - a[0][k] for k in a[0]}
        req = Counter({k: v - a[1].get(k, 0) for k, v in b[1].items() if v - a[1].get(k, 0) > 0})
        return {"seconds": seconds, "cpu": cpu,
                "requests": {k[1]: v for k, v in req.items() if k[0] == "requests"},
                "codes": {k[1]: v for k, v in req.items() if k[0] == "code"},
                "rejected": {k[1]: v for k, v in req.items() if k[0] == "rejected"},
                "top": {k[1]: v for k, v in req.most_common() if k[0] == "by"}}


class AuditIndex:
    """The operator's requests from the API server's audit log, read as it grows (each poll
    reads only what was appended)."""

    def __init__(self, rc, since: float):
        self.rc = rc
        self.since = since
        self.seen = 0
        self.first: dict[tuple[str, str], float] = {}  # (owner, job name or "status") -> time
        self.writes: Counter = Counter()  # (namespace, "verb resource[/sub]")
        self.lease: list[tuple[float, float, str]] = []  # (received, done, verb) of Lease requests
        self.throttled = 0  # answered 429

    def update(self, ns: str) -> None:
        from tests.fixtures.real_cluster import epoch_seconds

        events = self.rc.audit(self.since)
        for ev in events[self.seen:]:
            ref = ev.get("objectRef") or {}
            verb = ev.get("verb")
            if (ev.get("responseStatus") or {}).get("code") == 429:
                self.throttled += 1
            if ref.get("resource") == "leases":
                self.lease.append((epoch_seconds(ev.get("requestReceivedTimestamp") or ""),
                                   epoch_seconds(ev["stageTimestamp"]), verb))
                continue
            if verb not in ("create", "update", "patch", "delete"):
                continue
            sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
            self.writes[(ref.get("namespace"), f"{verb} {ref.get('resource')}{sub}")] += 1
            if verb != "patch" or ref.get("namespace") != ns:
                continue
            if ref.get("resource") == "jobs":
                key = (ref["name"].rsplit("-convert-", 1)[0].rsplit("-", 1)[0], ref["name"])
            elif ref.get("resource") == "languagemodels" and ref.get("subresource") == "status":
                key = (ref["name"], "status")
            else:
                continue
            self.first.setdefault(key, epoch_seconds(ev["stageTimestamp"]))
        self.seen = len(events)

    def reconciled(self, names: list[str]) -> float | None:
        """When every LanguageModel of `names` first had its status written and both its
        conversion Jobs applied, else None. The log, not a list of Jobs: a Job whose
        conversion the store answers at once is done and pruned before a poll may see it."""
        per_lm: Counter = Counter()
        last: dict[str, float] = {}
        for (owner, _), t in self.first.items():
            per_lm[owner] += 1
            last[owner] = max(last.get(owner, 0.0), t)
        if all(per_lm[n] >= 3 for n in names):  # status + 2 Jobs
            return max(last[n] for n in names)
        return None

    def per_resource(self, ns: str, count: int) -> dict[str, float]:
        return {what: n / count for (space, what), n in sorted(self.writes.items()) if space == ns}

    def lease_report(self) -> dict:
        """The operator's Lease requests: the longest gap between two renewals (PUTs, every
        2 s when on time) and the longest time the API server took to answer one."""
        puts = sorted(done for _, done, verb in self.lease if verb == "update")
        gaps = [b - a for a, b in zip(puts, puts[1:])]
        return {"renewals": len(puts), "max_gap_s": max(gaps, default=0.0),
                "max_answer_s": max((d - r for r, d, _ in self.lease), default=0.0)}


def py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen | None:
    """Sample the operator with py-spy (when installed) for `seconds`, collapsed stacks."""
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        print("py-spy is not installed: no CPU profile (pip install py-spy)", flush=True)
        return None
    return subprocess.Popen([str(exe), "record", "--pid", str(pid), "--duration", str(seconds),
                             "--rate", "50", "--format", "raw", "--nonblocking",
                             "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def profile_summary(path: Path, top: int = 25) -> str:
    """Inclusive share of samples per function (file:function), and per leaf (self time),
    from py-spy's collapsed stacks."""
    inclusive: Counter = Counter()
    leaf: Counter = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        count = int(n)
        total += count
        frames = [f.split(" (")[0] + " " + f.split(" (")[-1].rstrip(")").split("site-packages/")[-1]
                  .rsplit(":", 1)[0] for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += count
        leaf[frames[-1]] += count
    if not total:
        return "py-spy: no samples"
    out = [f"py-spy: {total} samples", "", "| function (inclusive) | share |", "|---|---|"]
    out += [f"| {f} | {n / total:.1%} |" for f, n in inclusive.most_common(top)]
    out += ["", "| function (self) | share |", "|---|---|"]
    out += [f"| {f} | {n / total:.1%} |" for f, n in leaf.most_common(top)]
    return "\n".join(out)


def real_main(samples: int, burst: int, spy: int = 0, ready_timeout: float = 600) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from tests.fixtures.control_plane import SCALE_ARGS
    from tests.fixtures.real_cluster import RealCluster, epoch_seconds, tiny_checkpoints, two_versions

    body = two_versions()
    rc = RealCluster(scale=True)
    t_start = time.monotonic()
    rc.start(tiny_checkpoints)
    print(f"control plane, chart and operator up in {time.monotonic() - t_start:.1f} s", flush=True)
    print("control plane tuned for scale:", SCALE_ARGS, flush=True)
    try:
        warm = rc.namespace("warm")
        rc.create_lm(warm, "warmup", body)
        rc.wait_ready(warm, "warmup", 300)  # the real conversions ran once: the store has both
        # the LanguageModels whose traffic is moved, Ready before the burst, patched after it
        # while the burst's are there (still being rolled out: the operator at its busiest)
        lat = rc.namespace("lat")
        for i in range(samples):
            rc.create_lm(lat, f"c{i}", body)
        for i in range(samples):
            rc.wait_ready(lat, f"c{i}", 600)

        ns = rc.namespace("burst")
        names = [f"b{i}" for i in range(burst)]
        rss_at = {"warm (1 LanguageModel)": vm_kb(rc.operator.pid, "VmRSS")}
        loads = [os.getloadavg()[0]]
        meters = Meters(rc)
        cpu0 = cpu_seconds(rc.operator.pid)
        t0, wall0 = time.monotonic(), time.time()
        audit = AuditIndex(rc, wall0)
        before = meters.snap()
        spying = py_spy(rc.operator.pid, spy, rc.workdir / "burst.pyspy") if spy else None
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: rc.create_lm(ns, n, body), names))
        created_s = time.monotonic() - t0

        next_print = time.monotonic() + 15
        while True:
            audit.update(ns)
            finished = audit.reconciled(names)
            if finished is not None:
                break
            if time.monotonic() > next_print:
                done = sum(1 for (o, k) in audit.first if k == "status")
                print(f"  {time.monotonic() - t0:.0f} s: {done} of {burst} have a status, "
                      f"load {os.getloadavg()[0]:.1f}, operator RSS "
                      f"{vm_kb(rc.operator.pid, 'VmRSS') / 1024:.0f} MB", flush=True)
                next_print += 15
            if time.monotonic() - t0 > 600:
                raise TimeoutError("the burst was not reconciled in 600 s")
            time.sleep(0.5)
        burst_s = finished - wall0
        burst_cpu = cpu_seconds(rc.operator.pid) - cpu0
        spent = Meters.delta(before, meters.snap(), time.monotonic() - t0)
        writes_reconciled = audit.per_resource(ns, burst)
        print(f"{burst} at once: {burst_s:.1f} s (creates took {created_s:.1f} s)", flush=True)
        print(f"spent during the burst: {spent}", flush=True)
        print(f"operator writes per LanguageModel until reconciled: {writes_reconciled}", flush=True)
        if spying is not None:
            spying.wait()
            print(profile_summary(rc.workdir / "burst.pyspy"), flush=True)
        loads.append(os.getloadavg()[0])
        rss_at[f"{burst} reconciled"] = vm_kb(rc.operator.pid, "VmRSS")
        shifts = []
        for i in range(samples):
            name = f"c{i}"
            time.sleep(0.2)
            t_patch = time.time()
            rc.patch_lm(lat, name, [
                {"op": "replace", "path": "/spec/versions/0/traffic", "value": 50},
                {"op": "replace", "path": "/spec/versions/1/traffic", "value": 50},
            ])

            def route_patched() -> float | None:
                for ev in rc.audit(t_patch - 1):
                    ref = ev.get("objectRef") or {}
                    if (ev.get("verb") == "patch" and ref.get("resource") == "httproutes"
                            and ref.get("namespace") == lat and ref.get("name") == name):
                        done = epoch_seconds(ev["stageTimestamp"])
                        if done >= t_patch:
                            return done
                return None

            try:
                shifts.append(rc.wait(route_patched, 60, f"route of {name}") - t_patch)
            except AssertionError:  # counted as 60 s, and the run goes on
                shifts.append(60.0)
            print(f"  traffic sample {i}: {shifts[-1] * 1000:.0f} ms", flush=True)
        print(f"traffic patch -> route: p50 {statistics.median(shifts) * 1000:.0f} ms, "
              f"p99 {pct(shifts, 0.99) * 1000:.0f} ms, max {max(shifts) * 1000:.0f} ms", flush=True)
        loads.append(os.getloadavg()[0])

        t1 = time.monotonic()
        before_ready = meters.snap()

        def ready_count() -> int:
            items = rc.request("GET", f"/apis/lmo.dev/v1alpha1/namespaces/{ns}/languagemodels")["items"]
            return sum((i.get("status") or {}).get("readyVersions") == "2/2" for i in items)

        ready_s = None
        while time.monotonic() - t0 < ready_timeout:
            if (ready := ready_count()) == burst:
                ready_s = time.monotonic() - t0
                break
            time.sleep(2)
        ready = ready_count()
        spent_ready = Meters.delta(before_ready, meters.snap(), time.monotonic() - t1)
        audit.update(ns)
        writes_ready = audit.per_resource(ns, burst)
        rss_at[f"{burst} created, {ready} Ready"] = vm_kb(rc.operator.pid, "VmRSS")
        print(f"{ready} of {burst} Ready {time.monotonic() - t0:.1f} s after the creates; RSS: {rss_at}",
              flush=True)
        print(f"spent after the burst was reconciled: {spent_ready}", flush=True)
        print(f"operator writes per LanguageModel by then: {writes_ready}", flush=True)

        loads.append(os.getloadavg()[0])
        audit.update(ns)
        rss_at["at the end"] = vm_kb(rc.operator.pid, "VmRSS")
        rss_kb = vm_kb(rc.operator.pid, "VmHWM")
        log = rc.operator_log()
        failed = log.count("reconcile failed")
        lease = audit.lease_report()
        lease["late"] = log.count("not renewed for")
        lease["refused_not_leader"] = log.count("not the leader")
        kubelet = {"writes": rc.kubelet.writes, "lists": rc.kubelet.node.lists + rc.kubelet.scheduler.lists,
                   "watches": rc.kubelet.node.watches + rc.kubelet.scheduler.watches,
                   "errors": len(rc.kubelet.errors)}
    finally:
        rc.stop()
    return {
        "traffic_p50_s": statistics.median(shifts),
        "traffic_p95_s": pct(shifts, 0.95),
        "traffic_p99_s": pct(shifts, 0.99),
        "traffic_max_s": max(shifts),
        "rss_at_mb": {k: v / 1024 for k, v in rss_at.items()},
        "loads": loads,
        "burst_s": burst_s,
        "ready_s": ready_s,
        "ready": ready,
        "burst_cpu_s": burst_cpu,
        "spent": spent,
        "spent_ready": spent_ready,
        "writes_reconciled": writes_reconciled,
        "writes_ready": writes_ready,
        "throttled": audit.throttled,
        "lease": lease,
        "kubelet": kubelet,
        "rss_mb": rss_kb / 1024,
        "samples": samples,
        "burst": burst,
        "ready_timeout": ready_timeout,
        "failed_reconciles": failed,
    }


def real_report(r: dict) -> str:
    sp, n = r["spent"], r["burst"]
    cpu = ", ".join(f"{k} {v:.1f} s" for k, v in sp["cpu"].items())
    writes = sum(sp["requests"].get(v, 0) for v in ("POST", "PUT", "PATCH", "DELETE", "APPLY"))
    rows = [
        ("traffic patch 90/10 -> 50/50 -> HTTPRoute patched, p50", f"{r['traffic_p50_s'] * 1000:.0f} ms", "", ""),
        ("traffic patch -> HTTPRoute patched, p95", f"{r['traffic_p95_s'] * 1000:.0f} ms", "", ""),
        (f"traffic patch -> HTTPRoute patched, p99 ({r['samples']} samples, right after the {n} "
         "were reconciled, while they roll out)",
         f"{r['traffic_p99_s'] * 1000:.0f} ms", "100 ms",
         f"{r['traffic_p99_s'] / REAL_AIMS['traffic_p99_s']:.2f}"),
        ("traffic patch -> HTTPRoute patched, slowest", f"{r['traffic_max_s'] * 1000:.0f} ms", "", ""),
        (f"{n} created at once -> all reconciled (status + 2 Jobs each)", f"{r['burst_s']:.1f} s",
         "60 s", f"{r['burst_s'] / REAL_AIMS['burst_s']:.2f}"),
        (f"{n} created at once -> all Ready (both versions served)",
         f"{r['ready_s']:.1f} s" if r["ready_s"] else f"{r['ready']} Ready after {r['ready_timeout']:.0f} s",
         "", ""),
        (f"operator CPU time during the {n}-burst", f"{r['burst_cpu_s']:.1f} s", "", ""),
        (f"CPU seconds of each process until reconciled ({sp['seconds']:.0f} s wall)", cpu, "", ""),
        ("API server requests until reconciled (all clients): total, writes, per s",
         f"{sum(sp['requests'].values()):.0f}, {writes:.0f}, {sum(sp['requests'].values()) / sp['seconds']:.0f}/s",
         "", ""),
        ("API server answers 429 until reconciled (all clients) / APF rejections by priority level",
         f"{sp['codes'].get('429', 0):.0f} / {sp['rejected'] or 0}", "", ""),
        ("operator requests answered 429 (audit log, whole run)", str(r["throttled"]), "0", ""),
        ("operator writes per LanguageModel until reconciled",
         ", ".join(f"{k} {v:.2f}" for k, v in r["writes_reconciled"].items()), "", ""),
        ("operator writes per LanguageModel until Ready",
         ", ".join(f"{k} {v:.2f}" for k, v in r["writes_ready"].items()), "", ""),
        ("Lease: renewals, longest gap between two, slowest answer; late-renewal warnings, writes refused",
         f"{r['lease']['renewals']}, {r['lease']['max_gap_s']:.1f} s, {r['lease']['max_answer_s']:.2f} s; "
         f"{r['lease']['late']}, {r['lease']['refused_not_leader']}", "", ""),
        ("kubelet stand-in: writes, pod lists, watch requests, errors",
         ", ".join(str(r["kubelet"][k]) for k in ("writes", "lists", "watches", "errors")), "", ""),
        ("operator peak RSS (VmHWM)", f"{r['rss_mb']:.0f} MB", "300 MB",
         f"{r['rss_mb'] / REAL_AIMS['rss_mb']:.2f}"),
        *[(f"operator RSS, {k}", f"{v:.0f} MB", "", "") for k, v in r["rss_at_mb"].items()],
        ("'reconcile failed' lines in the operator log", str(r["failed_reconciles"]), "0", ""),
        ("load average (1 min) before the burst / after it / at the end",
         " / ".join(f"{x:.1f}" for x in r["loads"]), "", ""),
    ]
    top = ", ".join(f"{k} {v:.0f}" for k, v in list(sp["top"].items())[:15])
    return table(rows, f"the operator as its own process under the chart's RBAC against "
                       f"kube-apiserver + kube-controller-manager v1.36 on this machine; "
                       f"{r['samples']} traffic samples") + f"\nAPI server requests until reconciled, most first: {top}\n"


def vm_kb(pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def profile_main(burst: int) -> str:
    """Where the operator's memory per LanguageModel goes: tracemalloc snapshots of the
    operator process (bench/tracemalloc_hook) before and after `burst` LanguageModels became
    Ready, compared by source line and by file, divided by `burst`; with the RSS growth."""
    import signal
    import tracemalloc

    from tests.fixtures.real_cluster import RealCluster, tiny_checkpoints, two_versions

    body = two_versions()
    rc = RealCluster()
    rc.start(tiny_checkpoints)
    snap = rc.workdir / "snapshot"
    try:
        rc.stop_operator()
        rc.start_operator(extra_env={
            "PYTHONPATH": os.pathsep.join([str(ROOT / "bench" / "tracemalloc_hook"),
                                           os.environ.get("PYTHONPATH", "")]),
            "LMO_BENCH_SNAPSHOT": str(snap)})
        pid = rc.operator.pid
        warm = rc.namespace("warm")
        rc.create_lm(warm, "warmup", body)
        rc.wait_ready(warm, "warmup", 300)
        time.sleep(5)

        def snapshot(n: int) -> tracemalloc.Snapshot:
            os.kill(pid, signal.SIGUSR1)
            path = Path(f"{snap}.{n}")
            rc.wait(lambda: path.exists() and path.stat().st_size > 0, 120, f"snapshot {n}")
            time.sleep(2)  # written in one go; give it time to finish
            return tracemalloc.Snapshot.load(str(path))

        before, rss0 = snapshot(1), vm_kb(pid, "VmRSS")
        ns = rc.namespace("burst")
        names = [f"p{i}" for i in range(burst)]
        for n in names:
            rc.create_lm(ns, n, body)
        for n in names:
            rc.wait_ready(ns, n, 900)
        time.sleep(10)  # let the wakes settle into resyncs
        after, rss1 = snapshot(2), vm_kb(pid, "VmRSS")
    finally:
        rc.stop()
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(filters), after.filter_traces(filters)
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    out = [f"{burst} LanguageModels Ready: RSS +{(rss1 - rss0) / burst:.1f} kB each "
           f"({rss0 / 1024:.0f} -> {rss1 / 1024:.0f} MB); Python allocations "
           f"+{total / burst / 1024:.1f} kB each", "", "| file | kB per LanguageModel |", "|---|---|"]
    for stat in after.compare_to(before, "filename")[:12]:
        name = stat.traceback[0].filename.split("site-packages/")[-1].split("/operator/")[-1]
        out.append(f"| {name} | {stat.size_diff / burst / 1024:.2f} |")
    out += ["", "| line | kB per LanguageModel |", "|---|---|"]
    for stat in after.compare_to(before, "lineno")[:15]:
        frame = stat.traceback[0]
        name = frame.filename.split("site-packages/")[-1].split("/operator/")[-1]
        out.append(f"| {name}:{frame.lineno} | {stat.size_diff / burst / 1024:.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", choices=("real", "kmock"), default="real")
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--profile", action="store_true",
                    help="real API server: where the memory per LanguageModel goes (tracemalloc)")
    ap.add_argument("--ready-timeout", type=float, default=600, metavar="S",
                    help="real API server: how long after the burst's creation to wait for all "
                    "of it Ready (the count is reported either way)")
    ap.add_argument("--py-spy", type=int, default=0, metavar="S",
                    help="real API server: sample the operator's CPU with py-spy for S seconds "
                    "from the start of the burst")
    args = ap.parse_args()
    if args.profile:
        print(profile_main(args.burst))
    elif args.against == "real":
        print(real_report(real_main(args.samples, args.burst, args.py_spy, args.ready_timeout)))
    else:
        print(report(asyncio.run(main(args.samples, args.burst))))
