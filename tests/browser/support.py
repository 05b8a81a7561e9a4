"""What the dashboard's browser tests run against: a real deputy daemon (a child
process), a scripted model behind a local OpenAI-compatible streaming server, and a TCP
proxy between the browser and the daemon that can cut every open connection, the way a
network drop would."""

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEADLINE = 30.0


class MockModel(ThreadingHTTPServer):
    """Chat Completions with SSE streaming. Each conversation's first request is refused
    with a 503 (so the trace shows a retried attempt), the next one answers with text and
    usage, as OpenAI's stream does."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _ModelHandler)
        self.requests = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _ModelHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            n = len(self.server.requests)
        if n % 2 == 1:
            payload = json.dumps({"error": {"message": "overloaded, try again", "type": "server_error"}}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        frames = [
            {"choices": [{"index": 0, "delta": {"content": "The logs show "}}]},
            {"choices": [{"index": 0, "delta": {"content": "three timeouts."}}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 120, "completion_tokens": 9}},
        ]
        data = "".join(f"data: {json.dumps(f)}\n\n" for f in frames) + "data: [DONE]\n\n"
        payload = data.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Proxy:
    """Forwards 127.0.0.1:<port> to the daemon; `drop_all` closes every connection open
    through it (both directions), as a network drop would. New connections still work."""

    def __init__(self, target_port):
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open = set()
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open.update({client, upstream})
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self.lock:
                self.open.discard(src)
                self.open.discard(dst)

    def drop_all(self):
        with self.lock:
            victims = list(self.open)
        for s in victims:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(victims)


class Daemon:
    """`deputy serve` on a free port with an API token and the mock model as its default
    provider. `api()` calls its HTTP API with the token, as a script would."""

    def __init__(self, binary, token, model_url, workdir):
        self.token = token
        self.dir = workdir
        config = os.path.join(workdir, "config.toml")
        with open(config, "w") as f:
            f.write(
                f'api_token = "{token}"\n'
                'default_provider = "mock"\n'
                "[providers.mock]\n"
                'kind = "openai"\n'
                f'base_url = "{model_url}"\n'
                'default_model = "mock-model"\n'
                '[prices."mock-model"]\n'
                "input = 3.0\n"
                "output = 15.0\n"
            )
        data = os.path.join(workdir, "data")
        env = dict(os.environ, DEPUTY_CONFIG=config, DEPUTY_LOG="warn",
                   DEPUTY_MIN_FREE_MEMORY="off", DEPUTY_MAX_CPU_PERCENT="off", DEPUTY_KILL_GRACE="1s")
        self.log = open(os.path.join(workdir, "daemon.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data, "--parallel", "4"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)
        info = os.path.join(data, "daemon.json")
        deadline = time.monotonic() + DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {self.proc.returncode}; see {self.log.name}")
            try:
                with open(info) as f:
                    self.url = json.load(f)["url"]
                if self._healthy():
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.05)
        self.port = int(self.url.rsplit(":", 1)[1])

    def _healthy(self):
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def api(self, method, path, body=None):
        req = urllib.request.Request(f"{self.url}{path}", method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=DEADLINE) as r:
            text = r.read()
            return json.loads(text) if text else None

    def wait_finished(self, task_id):
        """Follows the task's event stream (it ends with the task) and returns the task."""
        req = urllib.request.Request(f"{self.url}/v1/tasks/{task_id}/events",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, timeout=DEADLINE) as stream:
            for line in stream:
                if line.startswith(b"event: task.finished"):
                    break
        return self.api("GET", f"/v1/tasks/{task_id}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def tempdir():
    return tempfile.mkdtemp(prefix="deputy-dashboard-")
