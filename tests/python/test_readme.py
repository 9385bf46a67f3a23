"""The README's Python example runs as written (issue 16): its code block, unchanged, in a folder
laid out like the repository after the quick start (configs/, docs/images/, and the quick start's
checkpoint path, here holding the config's initial weights instead of trained ones). CI runs it
against the package `pip install .` installed (scripts/test.sh), ctest against the build tree."""
import os
import re
import subprocess
import sys

import hrnet

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def readme_python_block():
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("\n## Python"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README.md: no python block under '## Python'"
    return m.group(1)


def test_readme_example_runs(tmp_path):
    code = readme_python_block()
    weights = re.search(r'weights="([^"]+)"', code).group(1)
    config = re.search(r'hrnet\.Model\("([^"]+)"', code).group(1)
    image = re.search(r'keypoints\("([^"]+)"', code).group(1)
    for rel in (config, image):
        os.makedirs(tmp_path / os.path.dirname(rel), exist_ok=True)
        os.symlink(os.path.join(ROOT, rel), tmp_path / rel)
    os.makedirs(tmp_path / os.path.dirname(weights))
    hrnet.Model(os.path.join(ROOT, config)).save(str(tmp_path / weights))
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.strip()]
    # the first person's 17 joints, three numbers each (numpy prints one joint a row)
    numbers = re.findall(r"-?\d+\.\d*(?:e[-+]\d+)?", r.stdout)
    assert len(numbers) == 17 * 3 and len(rows) == 17, r.stdout
