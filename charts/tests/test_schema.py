"""values.schema.json refuses values of the wrong type or shape: `helm template`
fails on each file of values/bad/, naming the offending key (the `# expect:` line
of the file), and the good values files pass it."""

from __future__ import annotations

import helm_python as helm
import pytest
import yaml

from conftest import CHART, VALUES, VALUE_SETS, load_values, render

BAD = sorted((VALUES / "bad").glob("*.yaml"))


def expected_path(path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("# expect:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{path.name} has no '# expect:' line")


def test_there_are_bad_values_files():
    assert len(BAD) >= 10


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_helm_template_refuses_bad_values(path):
    values = yaml.safe_load(path.read_text())
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values)
    message = str(refused.value)
    assert "schema" in message
    assert f"at '{expected_path(path)}" in message, message


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_good_values_pass_the_schema(name):
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(chart.merge_values(load_values(name)))
