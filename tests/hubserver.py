"""A local stand-in for the Hugging Face Hub, so the real huggingface_hub client can be tested offline.

gpupool's model resolver (gpupool.modelhub) talks to the Hub only through huggingface_hub; testing
it against a mock of that library would test the mock. Instead this serves the subset of the Hub's
HTTP API the library's calls use, the way the Hub answers them, from the files under
tests/fixtures/hub/<org>/<name>/, and the client is pointed at it by its endpoint:

- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: the model info (id, sha,
  siblings, gated, private), as the Hub's `expand=` answers;
- `GET|HEAD /{repo}/resolve/{rev}/{file}`: a file, with `X-Repo-Commit`, `ETag` and (weights)
  `X-Linked-Size`, honouring `Range: bytes=a-b` with a 206. A safetensors fixture holds only its
  header; the rest of the file reads as zeros up to the real size, as the header's offsets give it;
- the Hub's refusals, with the headers huggingface_hub maps to its exceptions: `X-Error-Code`
  RepoNotFound (401 without a token, 404 with one), RevisionNotFound, EntryNotFound, GatedRepo
  (401 without a token, 403 with one not granted), and 401 "Invalid credentials in Authorization
  header" for a token the Hub does not know.

Which repos are gated, which files a repo lists without a fixture (a GGUF repo's weights, a
tokenizer), and so on, is in tests/fixtures/hub/repos.json. Every request is recorded (never
the token itself), so tests can count what the client asked; `fail_next` and `stall` inject
faults. Start it with `run_hub_server()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hub"

# Tokens the fake Hub knows. READ_TOKEN's account has accepted every gated license;
# UNGRANTED_TOKEN is a valid token whose account has not. Any other token is unknown (401).
READ_TOKEN = "hf_gpupoolFixtureReadTOKEN0123456789abcdef"
UNGRANTED_TOKEN = "hf_gpupoolFixtureUngrantedTOKEN0123456789"


@dataclass(frozen=True)
class Recorded:
    """One request the server answered (whether a token came with it, never the token)."""

    method: str
    path: str
    range: str | None
    authenticated: bool
    status: int


@dataclass
class _Repo:
    repo_id: str
    root: Path
    sha: str
    gated: str | bool
    listed: tuple[str, ...]

    def files(self) -> list[str]:
        stored = sorted(
            str(p.relative_to(self.root))
            for p in self.root.rglob("*")
            if p.is_file() and p.name != ".gitkeep"
        )
        return sorted({*stored, *self.listed})


@dataclass
class HubServer:
    """The running server: its base URL, what it was asked, and its fault switches."""

    url: str
    requests: list[Recorded] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _stall_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, path_part: str = "") -> int:
        """How many requests were answered whose path contains `path_part`."""
        with self._lock:
            return sum(1 for r in self.requests if path_part in r.path)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._stall_seconds = 0.0

    def fail_next(self, status: int, times: int = 1) -> None:
        """The next `times` requests get `status` (e.g. 503) with no body, as an overloaded Hub does."""
        with self._lock:
            self._failures.extend([status] * times)

    def stall(self, seconds: float) -> None:
        """Every request waits this long before it is answered (0 to stop)."""
        self._stall_seconds = seconds

    def _record(self, request: Request, status: int) -> None:
        with self._lock:
            self.requests.append(
                Recorded(
                    request.method,
                    request.url.path,
                    request.headers.get("range"),
                    "authorization" in request.headers,
                    status,
                )
            )

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None


def _load_repos(root: Path) -> dict[str, _Repo]:
    meta: dict[str, dict[str, Any]] = json.loads((root / "repos.json").read_text())
    repos = {}
    for repo_id, info in meta.items():
        if repo_id.startswith("_"):
            continue
        # A stable fake commit per repo: the real ones would change with every upload upstream.
        sha = hashlib.sha1(f"gpupool-fixture:{repo_id}".encode()).hexdigest()
        repos[repo_id] = _Repo(
            repo_id=repo_id,
            root=root / repo_id,
            sha=sha,
            gated=info.get("gated", False),
            listed=tuple(info.get("listed", ())),
        )
    return repos


def _error(status: int, code: str | None, message: str) -> Response:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _safetensors_size(content: bytes) -> int:
    """The real file's size: its header, then every tensor's bytes (the header's last offset)."""
    (length,) = struct.unpack("<Q", content[:8])
    try:
        header = json.loads(content[8 : 8 + length])
    except ValueError:  # a deliberately broken fixture: serve it as it is
        return len(content)
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return 8 + length + end


def _byte_range(spec: str | None, size: int) -> tuple[int, int] | None:
    if not spec or not spec.startswith("bytes="):
        return None
    first, _, last = spec[len("bytes=") :].partition("-")
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return start, end


def create_app(server: HubServer, root: Path = FIXTURES) -> Starlette:
    repos = _load_repos(root)

    def access(request: Request, repo: _Repo | None, *, files: bool) -> Response | None:
        """The Hub's refusal for this caller, or None when it may read."""
        auth = request.headers.get("authorization")
        token = auth.removeprefix("Bearer ").strip() if auth else None
        if token is not None and token not in (READ_TOKEN, UNGRANTED_TOKEN):
            return _error(401, None, "Invalid credentials in Authorization header")
        if repo is None:
            return _error(404 if token else 401, "RepoNotFound", "Repository not found")
        if files and repo.gated and token != READ_TOKEN:
            if token is None:
                return _error(
                    401,
                    "GatedRepo",
                    f"Access to model {repo.repo_id} is restricted. You must have access to it and "
                    "be authenticated to access it. Please log in.",
                )
            return _error(
                403,
                "GatedRepo",
                f"Access to model {repo.repo_id} is restricted and you are not in the authorized list. "
                f"Visit https://huggingface.co/{repo.repo_id} to ask for access.",
            )
        return None

    async def answer(request: Request) -> Response:
        if server._stall_seconds:
            await asyncio.sleep(server._stall_seconds)
        failure = server._take_failure()
        if failure is not None:
            response: Response = Response(status_code=failure)
        elif request.url.path.startswith("/api/models/"):
            response = model_info(request)
        else:
            response = resolve(request)
        server._record(request, response.status_code)
        return response

    def model_info(request: Request) -> Response:
        p = request.path_params
        repo = repos.get(f"{p['org']}/{p['name']}")
        refusal = access(request, repo, files=False)
        if refusal is not None or repo is None:
            return refusal or _error(404, "RepoNotFound", "Repository not found")
        revision = p.get("revision", "main")
        if revision not in ("main", repo.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return JSONResponse(
            {
                "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "sha": repo.sha,
                "private": False,
                "gated": repo.gated,
                "siblings": [{"rfilename": name} for name in repo.files()],
            }
        )

    def resolve(request: Request) -> Response:
        p = request.path_params
        repo = repos.get(f"{p['org']}/{p['name']}")
        refusal = access(request, repo, files=True)
        if refusal is not None or repo is None:
            return refusal or _error(404, "RepoNotFound", "Repository not found")
        if p["revision"] not in ("main", repo.sha):
            return _error(404, "RevisionNotFound", f"Invalid rev id: {p['revision']}")
        path = repo.root / p["filename"]
        if not path.is_file() or p["filename"] == "repos.json":
            return _error(404, "EntryNotFound", f'{p["filename"]} does not exist on "{p["revision"]}"')
        content = path.read_bytes()
        weights = path.suffix == ".safetensors" and len(content) >= 8
        size = _safetensors_size(content) if weights else len(content)
        if weights:
            etag = hashlib.sha256(content).hexdigest()
        else:  # a git blob's id, as the Hub gives for files kept in git rather than LFS
            etag = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
        if weights:
            headers["X-Linked-Size"] = str(size)
            headers["X-Linked-ETag"] = f'"{etag}"'
        wanted = _byte_range(request.headers.get("range"), size)
        start, end = wanted or (0, size - 1)
        if start >= size:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        headers["Content-Length"] = str(end - start + 1)
        if wanted:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        status = 206 if wanted else 200
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        body = content[start : end + 1]
        body += b"\0" * (end - start + 1 - len(body))  # the weights the fixture leaves out
        return Response(body, status_code=status, headers=headers)

    routes = [
        Route("/api/models/{org}/{name}/revision/{revision}", answer, methods=["GET"]),
        Route("/api/models/{org}/{name}", answer, methods=["GET"]),
        Route("/{org}/{name}/resolve/{revision}/{filename:path}", answer, methods=["GET", "HEAD"]),
    ]
    return Starlette(routes=routes)


@contextlib.contextmanager
def run_hub_server(root: Path = FIXTURES) -> Iterator[HubServer]:
    """Serve the fixtures on 127.0.0.1 at a free port in a thread; yields the server (its `url`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    hub = HubServer(url=f"http://127.0.0.1:{port}")
    config = uvicorn.Config(
        create_app(hub, root), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the fake Hub did not start")
        time.sleep(0.01)
    try:
        yield hub
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
