"""The services behind every tunnel: iperf3 for bulk, nginx serving a 100-byte file.

Configured like the anchor script's (one nginx worker, keep-alive for a million
requests), but on free ports and with a web root nginx's worker user can read, so
every request really gets the 100-byte file and not a 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

from bench.procs import Procs, free_port, is_listening, wait_for

NGINX_CONF = """daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 4096; }}
http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {work}/www;
  keepalive_requests 1000000; }} }}
"""


@dataclass(frozen=True)
class Upstreams:
    iperf3_port: int
    http_port: int


def start_upstreams(procs: Procs, work: Path) -> Upstreams:
    iperf3_port, http_port = free_port(), free_port()
    procs.start("iperf3-server", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(iperf3_port)])
    work.chmod(0o711)  # nginx workers run as nobody and must reach the web root
    www = work / "www"
    www.mkdir(mode=0o755)
    www.chmod(0o755)  # mkdir's mode is masked by the umask
    (www / "small").write_bytes(b"a" * 100)
    (www / "small").chmod(0o644)
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(work=work, port=http_port))
    procs.start("nginx", ["nginx", "-c", str(conf)])
    for port in (iperf3_port, http_port):
        wait_for(f"an upstream listening on port {port}", partial(is_listening, port))
    return Upstreams(iperf3_port, http_port)
