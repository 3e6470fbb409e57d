"""The hub under dashboard load while a job runs (issue: hub, "Performance").

A real orbit-server on 127.0.0.1 copies a local tree again and again (a sync job to a fresh
destination each time) for the measuring window, first alone, then while a second process
runs N concurrent clients: most poll /api/health and /api/list_jobs (one request per client
per --interval seconds, like a dashboard tab), the rest hold SSE streams. Reported: request
latency percentiles, errors, events received, and the job's throughput alone vs under load.

    .venv/bin/python bench/bench_hub_load.py --clients 200 --seconds 60

Results go to bench/results/hub-load-<date>.json; docs/performance.md has the table.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from product import commit  # noqa: E402

ADMIN = {"username": "admin", "password": "bench-password-123", "role": "admin"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_hub(root: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    env = {**os.environ, "ORBIT_PORT": str(port), "DATABASE_URL": f"sqlite:///{root}/data/jobs.db",
           "ORBIT_AUTH_SECRET": base64.b64encode(os.urandom(32)).decode(), "ORBIT_MAX_JOBS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "orbit_fast", "serve"], env=env,
                            stdout=open(root / "hub.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/api/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    httpx.post(url + "/api/auth/register", json=ADMIN)
    token = httpx.post(url + "/api/auth/login", json={k: ADMIN[k] for k in ("username",
                                                                            "password")}).json()["token"]
    return proc, url, token


def make_source(root: Path, mib: int) -> Path:
    src = root / "src"
    src.mkdir()
    block = os.urandom(1 << 20)
    for i in range(mib // 64):
        with open(src / f"f{i}", "wb") as f:
            for k in range(64):
                f.write(block[k + i:] + block[:k + i])
    return src


def copy_rate(url: str, token: str, src: Path, root: Path, seconds: float) -> dict[str, Any]:
    """Run sync jobs back to back for `seconds`; bytes copied per second of job time."""
    h = {"Authorization": f"Bearer {token}"}
    total_bytes, total_time, runs = 0, 0.0, 0
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, headers=h, timeout=60) as c:
        while time.monotonic() < end:
            dst = root / "dst"
            shutil.rmtree(dst, ignore_errors=True)
            job = c.post("/api/jobs", json={"name": f"copy-{time.time_ns()}", "source": str(src),
                                            "destination": str(dst),
                                            "config": {"concurrency": 2}}).json()
            c.post(f"/api/jobs/{job['id']}/run")
            while c.get(f"/api/jobs/{job['id']}").json()["state"] not in ("completed", "failed"):
                time.sleep(0.05)
            run = c.get(f"/api/jobs/{job['id']}/runs").json()["runs"][0]
            total_bytes += run["stats"]["bytes_copied"]
            total_time += run["finished_at"] - run["started_at"]
            runs += 1
            c.delete(f"/api/jobs/{job['id']}")
    return {"runs": runs, "bytes": total_bytes, "job_seconds": round(total_time, 2),
            "mb_per_s": round(total_bytes / total_time / 1e6, 1)}


async def _load(url: str, token: str, clients: int, sse_clients: int, seconds: float,
                interval: float) -> dict[str, Any]:
    """Each client holds one keep-alive connection, as a browser tab would. A minimal HTTP/1.1
    client on asyncio streams: a general-purpose client library costs several times the CPU,
    which on a 2-core machine is taken from the hub and the job being measured."""
    host, port = url.removeprefix("http://").split(":")
    lat: list[float] = []
    errors: list[str] = []
    events = 0
    end = time.monotonic() + seconds

    async def poller(i: int) -> None:
        path = "/api/health" if i % 2 else "/api/list_jobs"
        req = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
               "\r\n").encode()
        await asyncio.sleep(interval * i / clients)  # spread the start
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
        except OSError as exc:
            errors.append(f"connect: {exc}")
            return
        while time.monotonic() < end:
            t0 = time.perf_counter()
            try:
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if head[9:12] != b"200":
                    errors.append(f"{path}: {head[9:12].decode()}")
            except (OSError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{path}: {type(exc).__name__}")
                return
            lat.append(time.perf_counter() - t0)
            await asyncio.sleep(max(0.0, interval - (time.perf_counter() - t0)))
        writer.close()

    async def listener() -> None:
        nonlocal events
        try:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write((f"GET /api/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: "
                          f"Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if head[9:12] != b"200":
                errors.append(f"sse: {head[9:12].decode()}")
            while time.monotonic() < end:
                try:
                    data = await asyncio.wait_for(reader.read(65536), end - time.monotonic())
                except TimeoutError:
                    break
                if not data:
                    errors.append("sse: closed")
                    break
                events += data.count(b"\nevent: ") + data.startswith(b"event: ")
            writer.close()
        except OSError as exc:
            errors.append(f"sse: {type(exc).__name__}")

    await asyncio.gather(*[poller(i) for i in range(clients - sse_clients)],
                         *[listener() for _ in range(sse_clients)])
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) > 100 else [0.0] * 99
    return {"requests": len(lat), "errors": len(errors), "error_samples": errors[:5],
            "p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1) if lat else 0, "sse_events": events}


def load_process(url: str, token: str, args: argparse.Namespace, out: Any) -> None:
    t0, r0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_load(url, token, args.clients, args.sse, args.seconds, args.interval))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result["generator_cpu_pct_of_one_core"] = round(100 * cpu / (time.monotonic() - t0), 1)
    out.put(result)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--sse", type=int, default=50, help="of the clients, how many hold SSE")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between a client's polls")
    ap.add_argument("--mib", type=int, default=1024, help="size of the copied tree")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orbit-hub-load-"))
    proc, url, token = start_hub(root)
    try:
        src = make_source(root, args.mib)
        alone = copy_rate(url, token, src, root, args.seconds)
        q: Any = mp.Queue()
        gen = mp.Process(target=load_process, args=(url, token, args, q))
        gen.start()
        loaded = copy_rate(url, token, src, root, args.seconds)
        load = q.get(timeout=args.seconds + 120)
        gen.join()
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(root, ignore_errors=True)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "commit": commit(),
              "args": vars(args), "job_alone": alone, "job_under_load": loaded, "load": load,
              "throughput_drop_pct": round(100 * (1 - loaded["mb_per_s"] / alone["mb_per_s"]), 1)}
    print(json.dumps(result, indent=1))
    out = Path(__file__).parent / "results" / f"hub-load-{time.strftime('%Y%m%d-%H%M')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
