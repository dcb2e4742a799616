"""Stand-ins for the Kaggle client: FakeKaggle (downloads and submissions) and FakeKernels (kernels that run)."""

import json
import re
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from helpers.pipeline import venv_env
from helpers.processes import kill_session
from helpers.settings import SLUG


class FakeKaggle:
    """Stands in for kaggle.KaggleApi. Downloads write `payload` as <slug>.zip, or raise `error`. Submissions are
    recorded; the listing is `submissions` when given, else the last one sent, scored after `pending_polls`
    listings."""

    def __init__(self, payload=None, error=None, submissions=None, pending_polls=1, public="0.98123", private=""):
        self.payload, self.error, self.downloads = payload, error, 0
        self.items, self.sent, self.listings = submissions, [], 0
        self.pending_polls, self.public, self.private = pending_polls, public, private

    def competition_download_files(self, competition, path=None, force=False, quiet=True):
        self.downloads += 1
        if self.error is not None:
            raise self.error
        Path(path, f"{competition}.zip").write_bytes(self.payload)

    def competition_submit(self, file_name, message, competition, quiet=False):
        self.sent.append((Path(file_name).read_text(), message, competition))
        return SimpleNamespace(ref=4242, message="Successfully submitted to Paddy Doctor")

    def competition_submissions(self, competition):
        assert competition == SLUG
        self.listings += 1
        if self.items is not None:
            return self.items
        done = self.listings > self.pending_polls
        return [
            SimpleNamespace(
                ref=4242,
                date="2024-01-01",
                description=self.sent[-1][1] if self.sent else "",
                status="COMPLETE" if done else "PENDING",
                public_score=self.public if done else "",
                private_score=self.private if done else "",
            )
        ]


class FakeKernels(FakeKaggle):
    """FakeKaggle with the kernel calls: a pushed bundle *runs*, at once, in a folder laid out as Kaggle lays a
    session out (`root`/<slug>/v<N>/input with the competition and attached kernel outputs, working: the output, tmp),
    with PADDY_RUNNER_INSTALL=0 (this interpreter has the packages; nothing is downloaded).

    `kill_when`: a glob under the output; the session is killed (SIGKILL to every process of it, as a session that
    reaches Kaggle's limit) once a file matches. Status is complete when the runner exited 0, else error."""

    def __init__(self, competition_dir, root, user="tester", kill_when=None, quota=(3.5, 30.0), **kwargs):
        super().__init__(**kwargs)
        self.competition_dir, self.root, self.user = Path(competition_dir), Path(root), user
        self.kill_when, self.quota, self.runs, self.pushed = kill_when, quota, {}, []

    def get_config_value(self, name):
        return self.user if name == "username" else None

    def quota_view(self):
        used, total = self.quota
        return SimpleNamespace(gpu_quota=SimpleNamespace(time_used=timedelta(hours=used),
                                                         total_time_allowed=timedelta(hours=total)))  # fmt: skip

    def _run(self, kernel):
        owner, slug, *version = kernel.split("/")
        runs = self.runs.get(f"{owner}/{slug}")
        if not runs:
            raise http_error(404)
        return runs[int(version[0]) - 1] if version else runs[-1]

    def kernels_push(self, folder, timeout=None, acc=None, no_run=False):
        meta = json.loads(Path(folder, "kernel-metadata.json").read_text())
        self.pushed.append((meta, acc, {p.name: p.read_text() for p in Path(folder).iterdir()}))
        runs = self.runs.setdefault(meta["id"], [])
        session = self.root / meta["id"].split("/")[1] / f"v{len(runs) + 1}"
        for part in ("input", "working", "tmp"):
            (session / part).mkdir(parents=True)
        for competition in meta["competition_sources"]:
            (session / "input" / competition).symlink_to(self.competition_dir)
        for source in meta["kernel_sources"]:
            shutil.copytree(self._run(source)["working"], session / "input" / source.split("/")[1])
        run = {"working": session / "working", "log": session / "log.txt"}
        runs.append(run)
        env = venv_env(PADDY_KAGGLE_ROOT=str(session), PADDY_RUNNER_INSTALL="0", TMPDIR=str(session / "tmp"))
        with open(run["log"], "w") as log:
            proc = subprocess.Popen([sys.executable, str(Path(folder, meta["code_file"]))], cwd=session / "working",
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            while proc.poll() is None:
                if self.kill_when and any(run["working"].glob(self.kill_when)):
                    kill_session(proc.pid)
                # A tiny epoch can take under 0.2 s on a fast CPU: polled that slowly, the first checkpoint could be
                # replaced by the last and removed with it before the kill, and the resumed run start afresh.
                time.sleep(0.01 if self.kill_when else 0.2)
        run["status"] = "COMPLETE" if proc.returncode == 0 else "ERROR"
        return SimpleNamespace(ref=f"/code/{meta['id']}", url=f"https://www.kaggle.com/code/{meta['id']}",
                               version_number=len(runs), error="")  # fmt: skip

    def kernels_status(self, kernel):
        run = self._run(kernel)
        failure = "" if run["status"] == "COMPLETE" else "Your notebook hit an error"
        return SimpleNamespace(status=SimpleNamespace(name=run["status"]), failure_message=failure)

    def kernels_output(self, kernel, path, file_pattern=None, force=False, quiet=True, page_token=None):
        run, files = self._run(kernel), []
        for src in sorted(p for p in run["working"].rglob("*") if p.is_file()):
            name = src.relative_to(run["working"]).as_posix()
            if file_pattern is None or re.search(file_pattern, name):
                dest = Path(path, name)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
                files.append(str(dest))
        lines = run["log"].read_text().splitlines(keepends=True)
        log = [{"stream_name": "stdout", "time": 0.1 * i, "data": line} for i, line in enumerate(lines)]
        Path(path, f"{kernel.split('/')[1]}.log").write_text(json.dumps(log))
        return files, None


def http_error(status):
    """The requests.HTTPError a Kaggle call raises for HTTP `status`."""
    import requests

    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error", response=response)
